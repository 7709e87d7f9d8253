// What both C ABI shims (cuda_graph_shim.cpp, aoti_shim.cpp) do at every
// entry point: run the body, turn any C++ exception into a nonzero status,
// and keep its message per thread for the shim's *_last_error() function
// (each translation unit has its own copy).
#pragma once

#include <exception>
#include <string>

namespace {

thread_local std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}

}  // namespace
