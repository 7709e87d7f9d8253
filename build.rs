//! Link-time fix-ups for libtorch from a pip wheel.
//!
//! torch-sys links libtorch but the linker's default `--as-needed` drops
//! `libtorch_cuda.so` (nothing references its symbols directly; it registers
//! the CUDA backend from static initialisers). Without it CUDA is silently
//! unavailable, so we force it in when present, and add an rpath so the
//! binary finds the wheel's libraries without LD_LIBRARY_PATH.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
        }
    }
}
