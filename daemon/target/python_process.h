// Finds the CPython interpreter inside a process and describes it: which binary holds the
// interpreter (libpython*.so or a statically linked executable), its version and symbol level,
// the libc it uses, and how to reach both from this mount namespace.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>

#include "daemon/common/status.h"
#include "daemon/target/cpython.h"
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"
#include "daemon/target/procfs.h"

namespace threadscope::target {

struct BinaryRef {
  std::string path;       // as the target sees it (reports)
  std::string host_path;  // what this process opens and attaches uprobes to
  uint64_t load_bias = 0; // runtime address minus ELF vaddr
};

struct PythonProcess {
  pid_t pid = 0;
  pid_t ns_pid = 0;  // the pid inside the target's own pid namespace
  std::string executable;
  std::string command_line;
  BinaryRef interpreter;
  bool interpreter_is_library = false;
  std::optional<BinaryRef> libc;
  PythonVersion version;
  bool full_symbols = false;  // .symtab present
  bool free_threaded = false;
  bool other_mount_namespace = false;
  ProcessStatus status;
};

// A process plus the opened binaries probe planning needs.
struct InspectedProcess {
  PythonProcess info;
  std::unique_ptr<ElfFile> interpreter_elf;
  std::unique_ptr<ElfFile> libc_elf;  // null when no libc is mapped (static musl builds)
};

// Errors: InvalidArgument (pid <= 0), NotFound (no such process, or it is a zombie),
// PermissionDenied (cannot read its /proc entries), FailedPrecondition (not CPython, or a
// version threadscope cannot trace).
StatusOr<InspectedProcess> InspectPythonProcess(const ProcFs& proc, const Disassembler& dis,
                                                pid_t pid);

// The same description for a binary on disk (no process): `threadscope probes --binary`.
StatusOr<InspectedProcess> InspectPythonBinary(const Disassembler& dis, const std::string& path);

}  // namespace threadscope::target
