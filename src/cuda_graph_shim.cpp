// A C ABI over libtorch's CUDA graphs (at::cuda::CUDAGraph), which tch does
// not wrap. Rust drives capture: between mlff_graph_capture_begin and
// mlff_graph_capture_end it issues ordinary tch operations, which libtorch
// records into the graph instead of running, allocating from the graph's
// private memory pool. Every entry point catches C++ exceptions and returns a
// nonzero status; the message is kept per thread for mlff_last_error().
//
// Built by build.rs only when the libtorch wheel has its CUDA headers (plus
// the crt/ headers from the nvidia-cuda-crt wheel).

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <dlfcn.h>

#include <exception>
#include <stdexcept>
#include <string>

#include "shim_guard.h"

namespace {

// A pool stream made current for this thread: capture must not run on the
// default (legacy) stream, and the eager warm-up steps run on the same stream
// so lazily created per-stream resources (cuBLAS workspaces) exist before it.
// (Set and restored by hand: c10's stream guards are header-inline code that
// would call the CUDA runtime directly, which this object does not link.)
struct SideStream {
  c10::cuda::CUDAStream previous;
  c10::cuda::CUDAStream stream;
  explicit SideStream(c10::DeviceIndex device)
      : previous(c10::cuda::getCurrentCUDAStream(device)),
        stream(c10::cuda::getStreamFromPool(false, device)) {
    c10::cuda::setCurrentCUDAStream(stream);
  }
  ~SideStream() { c10::cuda::setCurrentCUDAStream(previous); }
};

}  // namespace

extern "C" {

const char* mlff_last_error() { return last_error.c_str(); }

// Waits for all work on the device, then makes a pool stream current.
void* mlff_stream_enter(int device) {
  SideStream* s = nullptr;
  int rc = guarded([&] {
    c10::cuda::device_synchronize();
    s = new SideStream(static_cast<c10::DeviceIndex>(device));
  });
  return rc == 0 ? s : nullptr;
}

// Waits for the side stream's work and restores the previous current stream.
int mlff_stream_exit(void* handle) {
  auto* s = static_cast<SideStream*>(handle);
  int rc = guarded([&] { s->stream.synchronize(); });
  delete s;
  return rc;
}

void* mlff_graph_new() {
  at::cuda::CUDAGraph* g = nullptr;
  int rc = guarded([&] { g = new at::cuda::CUDAGraph(); });
  return rc == 0 ? g : nullptr;
}

void mlff_graph_free(void* graph) {
  try {
    delete static_cast<at::cuda::CUDAGraph*>(graph);
  } catch (...) {
  }
}

int mlff_graph_capture_begin(void* graph) {
  return guarded([&] {
    c10::cuda::device_synchronize();
    static_cast<at::cuda::CUDAGraph*>(graph)->capture_begin();
  });
}

int mlff_graph_capture_end(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->capture_end(); });
}

int mlff_graph_replay(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->replay(); });
}

// After a failed capture: end it (ignoring the error that says it was
// invalidated) and clear CUDA's last-error flag, which libtorch would
// otherwise report at the next kernel launch. cudaGetLastError is looked up
// at run time because libcudart is loaded by libtorch_cuda, not linked here.
void mlff_graph_abort(void* graph) {
  try {
    static_cast<at::cuda::CUDAGraph*>(graph)->capture_end();
  } catch (...) {
  }
  using GetLastError = int (*)();
  if (auto f = reinterpret_cast<GetLastError>(dlsym(RTLD_DEFAULT, "cudaGetLastError"))) {
    f();
  }
}

// Gives the caching allocator's unused blocks back to the driver (after a
// capture, the eager steps' cache is no longer needed: the graph has its
// own pool).
int mlff_cuda_empty_cache() {
  return guarded([&] { c10::cuda::CUDACachingAllocator::emptyCache(); });
}

// Bytes held by tensors at their peak since the last reset, and bytes the
// allocator has reserved from the driver now (graph pools included).
int mlff_cuda_memory(int device, long long* peak_allocated, long long* reserved) {
  return guarded([&] {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        static_cast<c10::DeviceIndex>(device));
    auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *peak_allocated = stats.allocated_bytes[all].peak;
    *reserved = stats.reserved_bytes[all].current;
  });
}

// Bytes the driver has free on `device`, and its total (cudaMemGetInfo,
// looked up at run time like cudaGetLastError above).
int mlff_cuda_mem_info(int device, long long* free_bytes, long long* total_bytes) {
  return guarded([&] {
    using MemGetInfo = int (*)(size_t*, size_t*);
    auto f = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
    if (!f) {
      throw std::runtime_error("cudaMemGetInfo is not loaded");
    }
    auto previous = c10::cuda::current_device();
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    size_t free_now = 0, total = 0;
    int rc = f(&free_now, &total);
    c10::cuda::set_device(previous);
    if (rc != 0) {
      throw std::runtime_error("cudaMemGetInfo failed");
    }
    *free_bytes = static_cast<long long>(free_now);
    *total_bytes = static_cast<long long>(total);
  });
}

int mlff_cuda_reset_peak(int device) {
  return guarded([&] {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
  });
}

}  // extern "C"
