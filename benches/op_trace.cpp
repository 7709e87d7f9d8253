// Records every ATen call of a process as "depth<TAB>name" lines, written
// to $OP_TRACE_OUT when the process exits. Preloaded by benches/op_count.py
// (LD_PRELOAD) into both mlff-md and the plain-PyTorch reference, so that
// their MD steps can be compared call by call on a CPU: a GPU runs one or
// more kernels for each call that does work, and a captured step replays
// them all, so the count is what a small system's graphed step costs.
//
// Built by op_count.py against the torch wheel of the virtual environment:
//   g++ -std=c++17 -O2 -fPIC -shared op_trace.cpp -I<torch>/include
//       -L<torch>/lib -ltorch_cpu -lc10 -o op_trace.so
#include <ATen/record_function.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

// Leaked on purpose: written from an atexit handler, after which static
// destructors may already have run.
auto* calls = new std::vector<std::pair<int, std::string>>();
thread_local int depth = 0;

void write_trace() {
  const char* path = std::getenv("OP_TRACE_OUT");
  if (path == nullptr) return;
  FILE* f = std::fopen(path, "w");
  if (f == nullptr) return;
  for (const auto& [d, name] : *calls) std::fprintf(f, "%d\t%s\n", d, name.c_str());
  std::fclose(f);
}

std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
  if (fn.scope() == at::RecordScope::FUNCTION ||
      fn.scope() == at::RecordScope::BACKWARD_FUNCTION) {
    calls->emplace_back(depth, fn.name());
  }
  ++depth;
  return nullptr;
}

void leave(const at::RecordFunction&, at::ObserverContext*) { --depth; }

struct Install {
  Install() {
    at::addGlobalCallback(at::RecordFunctionCallback(enter, leave).needsInputs(false));
    std::atexit(write_trace);
  }
} install;

}  // namespace
