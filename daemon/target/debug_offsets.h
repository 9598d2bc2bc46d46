// The GIL part of `_PyRuntime.debug_offsets`: CPython 3.13+ publishes, at the start of
// `_PyRuntime` (statically initialized, so the binary on disk holds it), where its runtime
// keeps the GIL. threadscope finds the GIL's code from the calls it makes; these offsets
// cross-check that the code found writes the fields where the interpreter says they are.
#pragma once

#include <cstdint>

#include "daemon/common/status.h"
#include "daemon/target/elf_file.h"

namespace threadscope::target {

struct GilDebugOffsets {
  uint64_t version_hex = 0;  // PY_VERSION_HEX of the build
  bool free_threaded = false;
  // Offsets inside PyInterpreterState: the `ceval.gil` pointer, the embedded `_gil`
  // (struct _gil_runtime_state), and its `locked` and `last_holder` fields.
  uint64_t ceval_gil = 0;
  uint64_t gil_runtime_state = 0;
  uint64_t gil_locked = 0;
  uint64_t gil_holder = 0;

  // `locked` and `last_holder` inside struct _gil_runtime_state (16 and 8 in 3.13-3.15).
  uint64_t LockedInGil() const { return gil_locked - gil_runtime_state; }
  uint64_t HolderInGil() const { return gil_holder - gil_runtime_state; }
};

// NotFound: no `_PyRuntime`, or it does not start with the "xdebugpy" cookie (before 3.13).
// Unimplemented: a version whose debug_offsets layout threadscope does not know.
StatusOr<GilDebugOffsets> ReadGilDebugOffsets(const ElfFile& elf);

}  // namespace threadscope::target
