// When a process that matched a rule counts as CPython, and so can be attached.
//
// sched_process_exec fires when the kernel has loaded the new executable and, for a dynamic
// one, the dynamic loader (ld.so): the libraries are not mapped yet. threadscope's probes need
// the interpreter's binary (the executable itself or libpython) and libc, so a matched process
// is attached once:
//   - its executable defines the runtime (a static interpreter, Debian's python3.x) and, if it
//     is dynamically linked, libc is mapped; or
//   - it needs libpython (DT_NEEDED) and libpython and libc are mapped; or
//   - neither, but a libpython is mapped already (an embedding program that loaded it with
//     dlopen, seen when the daemon starts).
// Until then it is looked at again (every few milliseconds, then less often) for a bounded
// time; an executable that is none of these is not CPython at once.
#pragma once

#include <string>
#include <vector>

#include "daemon/target/elf_file.h"
#include "daemon/target/procfs.h"

namespace threadscope::autoattach {

struct ExeKind {
  bool defines_runtime = false;  // a static interpreter
  bool needs_libpython = false;  // DT_NEEDED names libpython*
};

ExeKind ClassifyExecutable(const target::ElfFile& elf);

enum class Readiness { kReady, kWait, kNotCPython };
const char* ReadinessName(Readiness r);

Readiness CheckCPython(const ExeKind& kind, const std::vector<target::Mapping>& maps);

}  // namespace threadscope::autoattach
