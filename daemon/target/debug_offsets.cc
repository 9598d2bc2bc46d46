#include "daemon/target/debug_offsets.h"

#include <cstring>
#include <string_view>

namespace threadscope::target {

namespace {

uint64_t U64(std::string_view bytes, size_t off) {
  uint64_t v = 0;
  std::memcpy(&v, bytes.data() + off, 8);
  return v;
}

// Where the interpreter_state GIL fields sit inside _Py_DebugOffsets: after the cookie,
// version, free_threaded, runtime_state {size, finalizing, interpreters_head} and
// interpreter_state {size, id, next, threads_head, ...}. 3.14 inserted `threads_main` before
// them (Include/internal/pycore_debug_offsets.h); 3.15 keeps 3.14's order. Read on Debian's
// 3.13.18, 3.14.10, 3.15.2 and pyenv's 3.13.0.
struct Layout {
  int minor;
  size_t ceval_gil, gil_runtime_state, locked, holder;
};
constexpr Layout kLayouts[] = {
    {13, 112, 120, 136, 144},
    {14, 120, 128, 144, 152},
    {15, 120, 128, 144, 152},
};

}  // namespace

StatusOr<GilDebugOffsets> ReadGilDebugOffsets(const ElfFile& elf) {
  auto runtime = elf.FindSymbol("_PyRuntime");
  if (!runtime) return NotFoundError("_PyRuntime is not in " + elf.path());
  std::string_view d = elf.BytesAt(runtime->value, 160);
  if (d.size() < 160 || d.substr(0, 8) != "xdebugpy") {
    return NotFoundError(elf.path() + " publishes no _PyRuntime.debug_offsets (CPython 3.13+)");
  }
  GilDebugOffsets out;
  out.version_hex = U64(d, 8);
  out.free_threaded = U64(d, 16) != 0;
  int major = static_cast<int>(out.version_hex >> 24), minor = (out.version_hex >> 16) & 0xff;
  for (const Layout& l : kLayouts) {
    if (major != 3 || l.minor != minor) continue;
    out.ceval_gil = U64(d, l.ceval_gil);
    out.gil_runtime_state = U64(d, l.gil_runtime_state);
    out.gil_locked = U64(d, l.locked);
    out.gil_holder = U64(d, l.holder);
    if (out.gil_locked < out.gil_runtime_state || out.gil_holder < out.gil_runtime_state) {
      return FailedPreconditionError("_PyRuntime.debug_offsets of " + elf.path() +
                                     " does not place the GIL's fields inside the GIL");
    }
    return out;
  }
  return UnimplementedError("no debug_offsets layout for CPython " + std::to_string(major) + "." +
                            std::to_string(minor));
}

}  // namespace threadscope::target
