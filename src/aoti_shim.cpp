// A C ABI over libtorch's AOTInductor package loader
// (torch::inductor::AOTIModelPackageLoader), which tch does not wrap (tch
// issue 979): it loads a .pt2 package compiled by
// torch._inductor.aoti_compile_and_package and runs it on at::Tensor inputs.
// Tensors cross the boundary as tch's handles (at::Tensor*): inputs are
// borrowed, outputs are new heap tensors that tch's Tensor::from_ptr owns.
// Every entry point catches C++ exceptions and returns a nonzero status (or
// null); the message is kept per thread for mlff_aoti_last_error().
//
// Built by build.rs with the CUDA-graph shim (same headers); the package's
// own wrapper.so needs libtorch.so, which build.rs links in.

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "shim_guard.h"

namespace {

using Loader = torch::inductor::AOTIModelPackageLoader;

}  // namespace

extern "C" {

const char* mlff_aoti_last_error() { return last_error.c_str(); }

// Load the package's model "model"; device_index -1 for a CPU package.
// Single-threaded: the engine calls a package from one thread, and the
// thread-safe runner queries CUDA events between runs, which a stream being
// captured in a CUDA graph refuses ("operation not permitted when stream is
// capturing", seen on an H200).
void* mlff_aoti_load(const char* path, int device_index) {
  Loader* loader = nullptr;
  if (guarded([&] {
        loader = new Loader(path, "model", /*run_single_threaded=*/true,
                            /*num_runners=*/1,
                            static_cast<c10::DeviceIndex>(device_index));
      }) != 0) {
    return nullptr;
  }
  return loader;
}

void mlff_aoti_free(void* loader) { delete static_cast<Loader*>(loader); }

// Run on `n_in` borrowed input tensors; writes up to `max_out` new output
// tensors to `out` and their count to `n_out`. A CUDA package runs on the
// current stream of `device_index` (so a CUDA graph can capture it).
int mlff_aoti_run(void* loader, void** inputs, int n_in, void** out, int max_out, int* n_out,
                  int device_index) {
  return guarded([&] {
    std::vector<at::Tensor> in;
    in.reserve(n_in);
    for (int i = 0; i < n_in; ++i) in.push_back(*static_cast<at::Tensor*>(inputs[i]));
    void* stream = nullptr;
    if (device_index >= 0) {
      stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_index)).stream();
    }
    std::vector<at::Tensor> res = static_cast<Loader*>(loader)->run(in, stream);
    if (static_cast<int>(res.size()) > max_out) {
      throw std::runtime_error("the package returned " + std::to_string(res.size()) +
                               " outputs, more than the " + std::to_string(max_out) + " expected");
    }
    for (size_t i = 0; i < res.size(); ++i) out[i] = new at::Tensor(std::move(res[i]));
    *n_out = static_cast<int>(res.size());
  });
}

// The package's metadata as "key=value" lines, in a buffer the caller frees
// with mlff_aoti_free_string (null on error).
char* mlff_aoti_metadata(void* loader) {
  std::string text;
  if (guarded([&] {
        for (const auto& [k, v] : static_cast<Loader*>(loader)->get_metadata()) {
          text += k + "=" + v + "\n";
        }
      }) != 0) {
    return nullptr;
  }
  char* buf = new char[text.size() + 1];
  std::memcpy(buf, text.c_str(), text.size() + 1);
  return buf;
}

void mlff_aoti_free_string(char* s) { delete[] s; }

}  // extern "C"
