//! Safe wrapper over libtorch's CUDA graphs (src/cuda_graph_shim.cpp).
//!
//! A CUDA graph records a sequence of kernel launches once and replays them
//! with one launch: for a model whose step is thousands of small kernels the
//! host-side launch cost, not the GPU, sets the step time, and replay removes
//! it. Capture records the tch operations issued between
//! [`CudaGraph::capture_begin`] and [`CudaGraph::capture_end`] on the current
//! (non-default) stream; the graph then reads and writes the same device
//! addresses on every replay, so its inputs must be updated in place.
//!
//! Without the shim (libtorch without CUDA, or missing headers at build
//! time) every constructor returns an error saying so.

use std::fmt;

/// Why a CUDA-graph operation failed.
#[derive(Debug, Clone)]
pub struct GraphError(pub String);

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(mlff_cuda_graphs)]
mod imp {
    use std::ffi::{c_char, c_int, c_void, CStr};

    use super::GraphError;

    extern "C" {
        fn mlff_last_error() -> *const c_char;
        fn mlff_stream_enter(device: c_int) -> *mut c_void;
        fn mlff_stream_exit(handle: *mut c_void) -> c_int;
        fn mlff_graph_new() -> *mut c_void;
        fn mlff_graph_free(graph: *mut c_void);
        fn mlff_graph_capture_begin(graph: *mut c_void) -> c_int;
        fn mlff_graph_capture_end(graph: *mut c_void) -> c_int;
        fn mlff_graph_replay(graph: *mut c_void) -> c_int;
        fn mlff_graph_abort(graph: *mut c_void);
        fn mlff_cuda_empty_cache() -> c_int;
        fn mlff_cuda_memory(device: c_int, peak: *mut i64, reserved: *mut i64) -> c_int;
        fn mlff_cuda_reset_peak(device: c_int) -> c_int;
        fn mlff_cuda_mem_info(device: c_int, free: *mut i64, total: *mut i64) -> c_int;
    }

    pub fn empty_cache() {
        // SAFETY: plain C call.
        let _ = unsafe { mlff_cuda_empty_cache() };
    }

    pub fn memory(device: usize) -> Option<(u64, u64)> {
        let (mut peak, mut reserved) = (0i64, 0i64);
        // SAFETY: the shim writes two integers through valid pointers.
        let rc = unsafe { mlff_cuda_memory(device as c_int, &mut peak, &mut reserved) };
        (rc == 0).then_some((peak as u64, reserved as u64))
    }

    pub fn reset_peak(device: usize) {
        // SAFETY: plain C call.
        let _ = unsafe { mlff_cuda_reset_peak(device as c_int) };
    }

    pub fn mem_info(device: usize) -> Option<(u64, u64)> {
        let (mut free, mut total) = (0i64, 0i64);
        // SAFETY: the shim writes two integers through valid pointers.
        let rc = unsafe { mlff_cuda_mem_info(device as c_int, &mut free, &mut total) };
        (rc == 0).then_some((free as u64, total as u64))
    }

    fn last_error(what: &str) -> GraphError {
        // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(mlff_last_error()) }.to_string_lossy();
        let first = msg.lines().next().unwrap_or("").trim().to_string();
        GraphError(format!("{what}: {first}"))
    }

    fn check(rc: c_int, what: &str) -> Result<(), GraphError> {
        if rc == 0 {
            Ok(())
        } else {
            Err(last_error(what))
        }
    }

    pub struct SideStream(*mut c_void);

    impl SideStream {
        pub fn enter(device: usize) -> Result<Self, GraphError> {
            // SAFETY: plain C call; a null handle means failure.
            let h = unsafe { mlff_stream_enter(device as c_int) };
            if h.is_null() {
                Err(last_error("making a side stream current"))
            } else {
                Ok(SideStream(h))
            }
        }
    }

    impl Drop for SideStream {
        fn drop(&mut self) {
            // SAFETY: the handle came from mlff_stream_enter and is freed once.
            let rc = unsafe { mlff_stream_exit(self.0) };
            if rc != 0 {
                eprintln!("warning: {}", last_error("leaving the side stream"));
            }
        }
    }

    pub struct Graph {
        raw: *mut c_void,
        capturing: bool,
    }

    impl Graph {
        pub fn new() -> Result<Self, GraphError> {
            // SAFETY: plain C call; a null handle means failure.
            let raw = unsafe { mlff_graph_new() };
            if raw.is_null() {
                return Err(last_error("creating a CUDA graph"));
            }
            Ok(Graph {
                raw,
                capturing: false,
            })
        }

        pub fn capture_begin(&mut self) -> Result<(), GraphError> {
            // SAFETY: raw is a live graph.
            check(
                unsafe { mlff_graph_capture_begin(self.raw) },
                "beginning capture",
            )?;
            self.capturing = true;
            Ok(())
        }

        pub fn capture_end(&mut self) -> Result<(), GraphError> {
            self.capturing = false;
            // SAFETY: raw is a live graph.
            check(
                unsafe { mlff_graph_capture_end(self.raw) },
                "ending capture",
            )
        }

        pub fn abort(&mut self) {
            if self.capturing {
                self.capturing = false;
                // SAFETY: raw is a live graph in capture.
                unsafe { mlff_graph_abort(self.raw) };
            }
        }

        pub fn replay(&self) -> Result<(), GraphError> {
            // SAFETY: raw is a live, captured graph.
            check(
                unsafe { mlff_graph_replay(self.raw) },
                "replaying the graph",
            )
        }
    }

    impl Drop for Graph {
        fn drop(&mut self) {
            self.abort();
            // SAFETY: raw came from mlff_graph_new and is freed once.
            unsafe { mlff_graph_free(self.raw) };
        }
    }
}

#[cfg(not(mlff_cuda_graphs))]
mod imp {
    use super::GraphError;

    fn unavailable() -> GraphError {
        GraphError(
            "this build of mlff-md has no CUDA-graph support (libtorch without CUDA, or its CUDA headers were missing at build time)".into(),
        )
    }

    pub struct SideStream;

    impl SideStream {
        pub fn enter(_device: usize) -> Result<Self, GraphError> {
            Err(unavailable())
        }
    }

    pub fn empty_cache() {}

    pub fn memory(_device: usize) -> Option<(u64, u64)> {
        None
    }

    pub fn reset_peak(_device: usize) {}
    pub fn mem_info(_device: usize) -> Option<(u64, u64)> {
        None
    }

    pub struct Graph;

    impl Graph {
        pub fn new() -> Result<Self, GraphError> {
            Err(unavailable())
        }
        pub fn capture_begin(&mut self) -> Result<(), GraphError> {
            Err(unavailable())
        }
        pub fn capture_end(&mut self) -> Result<(), GraphError> {
            Err(unavailable())
        }
        pub fn abort(&mut self) {}
        pub fn replay(&self) -> Result<(), GraphError> {
            Err(unavailable())
        }
    }
}

/// Whether this build can capture CUDA graphs at all.
pub const AVAILABLE: bool = cfg!(mlff_cuda_graphs);

/// Give the CUDA caching allocator's unused blocks back to the driver.
pub fn release_cached_memory() {
    imp::empty_cache()
}

/// (bytes held by tensors at their peak since [`reset_peak_memory`], bytes
/// reserved from the driver now) on CUDA device `device`; None without CUDA.
pub fn memory_stats(device: usize) -> Option<(u64, u64)> {
    imp::memory(device)
}

pub fn reset_peak_memory(device: usize) {
    imp::reset_peak(device)
}

/// (bytes free, bytes in all) on CUDA device `device` as the driver sees
/// it; None without CUDA.
pub fn device_memory(device: usize) -> Option<(u64, u64)> {
    imp::mem_info(device)
}

/// A pool stream made current on this thread until dropped (capture cannot
/// use the default stream). Entering and leaving synchronise the device.
pub struct SideStream(#[allow(dead_code)] imp::SideStream);

impl SideStream {
    pub fn enter(device: usize) -> Result<Self, GraphError> {
        imp::SideStream::enter(device).map(SideStream)
    }
}

/// One captured CUDA graph with its private memory pool.
pub struct CudaGraph(imp::Graph);

impl CudaGraph {
    pub fn new() -> Result<Self, GraphError> {
        imp::Graph::new().map(CudaGraph)
    }

    /// Start recording the operations issued on the current stream.
    pub fn capture_begin(&mut self) -> Result<(), GraphError> {
        self.0.capture_begin()
    }

    /// Stop recording and instantiate the graph.
    pub fn capture_end(&mut self) -> Result<(), GraphError> {
        self.0.capture_end()
    }

    /// End a capture that failed midway and clear CUDA's error flag.
    pub fn abort(&mut self) {
        self.0.abort()
    }

    /// Run the recorded work once (asynchronously, on the current stream).
    pub fn replay(&self) -> Result<(), GraphError> {
        self.0.replay()
    }
}
