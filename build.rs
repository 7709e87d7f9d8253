//! Link-time fix-ups for libtorch from a pip wheel, and the CUDA-graph shim.
//!
//! torch-sys links libtorch but the linker's default `--as-needed` drops
//! `libtorch_cuda.so` (nothing references its symbols directly; it registers
//! the CUDA backend from static initialisers). Without it CUDA is silently
//! unavailable, so we force it in when present, and add an rpath so the
//! binary finds the wheel's libraries without LD_LIBRARY_PATH.
//!
//! tch does not wrap CUDA graphs, so src/cuda_graph_shim.cpp exposes
//! `at::cuda::CUDAGraph` through a C ABI. It is compiled when the wheel has
//! CUDA (libtorch_cuda.so) and the headers it needs: torch's own, the CUDA
//! runtime's (`nvidia/cu13/include`, from the nvidia-cuda-runtime wheel torch
//! depends on) and their `crt/` part (the nvidia-cuda-crt wheel, installed by
//! `make setup`). Otherwise the crate is built without the `mlff_cuda_graphs`
//! cfg and CUDA graphs report themselves unavailable at run time.
//!
//! src/aoti_shim.cpp does the same for AOTInductor packages (.pt2) through
//! libtorch's AOTIModelPackageLoader (cfg `mlff_aoti`), built with the
//! CUDA-graph shim. A package's wrapper.so names libtorch.so, which the
//! binary must then load itself (dlopen does not search the binary's
//! rpath for a library's dependencies), so it is linked in as well.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/cuda_graph_shim.cpp");
    println!("cargo:rerun-if-changed=src/aoti_shim.cpp");
    println!("cargo:rerun-if-changed=src/shim_guard.h");
    println!("cargo::rustc-check-cfg=cfg(mlff_cuda_graphs)");
    println!("cargo::rustc-check-cfg=cfg(mlff_aoti)");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let lib = PathBuf::from(&dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    if !lib.join("libtorch_cuda.so").exists() {
        println!("cargo:warning=libtorch without CUDA: CUDA graphs disabled");
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch_cuda");
    match shim_includes(&lib) {
        Ok(includes) => {
            let mut build = cc::Build::new();
            build
                .cpp(true)
                .std("c++17")
                .file("src/cuda_graph_shim.cpp")
                .warnings(false);
            let aoti = includes[0]
                .join("torch/csrc/inductor/aoti_package/model_package_loader.h")
                .exists();
            if aoti {
                build.file("src/aoti_shim.cpp");
            } else {
                println!("cargo:warning=.pt2 packages disabled: AOTIModelPackageLoader's header not found");
            }
            for inc in includes {
                build.include(inc);
            }
            build.compile("mlff_cuda_graph_shim");
            println!("cargo:rustc-link-arg=-lc10_cuda");
            println!("cargo:rustc-cfg=mlff_cuda_graphs");
            if aoti {
                println!("cargo:rustc-link-arg=-ltorch");
                println!("cargo:rustc-cfg=mlff_aoti");
            }
        }
        Err(missing) => println!("cargo:warning=CUDA graphs disabled: {missing} not found"),
    }
}

/// Include directories for the shim, or the first missing header.
fn shim_includes(lib: &Path) -> Result<Vec<PathBuf>, String> {
    let torch = lib.parent().unwrap_or(lib);
    let site = torch.parent().unwrap_or(torch);
    let torch_inc = torch.join("include");
    let cuda_inc = site.join("nvidia").join("cu13").join("include");
    let needed = [
        torch_inc.join("ATen/cuda/CUDAGraph.h"),
        cuda_inc.join("cuda_runtime_api.h"),
        cuda_inc.join("crt/host_config.h"),
    ];
    if let Some(m) = needed.iter().find(|p| !p.exists()) {
        return Err(m.display().to_string());
    }
    Ok(vec![
        torch_inc.clone(),
        torch_inc.join("torch/csrc/api/include"),
        cuda_inc,
    ])
}
