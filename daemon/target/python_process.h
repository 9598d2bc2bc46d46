// Finds the CPython interpreter inside a process and describes it: which binary holds the
// interpreter (libpython*.so or a statically linked executable), its version and symbol level,
// the libc it uses, and how to reach both from this mount namespace.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>

#include "daemon/common/status.h"
#include "daemon/target/budget.h"
#include "daemon/target/cpython.h"
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"
#include "daemon/target/procfs.h"
#include "daemon/target/target_file.h"

namespace threadscope::target {

struct BinaryRef {
  std::string path;       // as the target sees it, as valid UTF-8 (reports)
  // What uprobes attach to: "/proc/self/fd/N" of `file` for binaries of a process, valid as
  // long as `file` is open (keep the InspectedProcess alive until the probes are attached; the
  // kernel then holds the inode itself). The path given, for binaries inspected from disk.
  std::string host_path;
  uint64_t load_bias = 0; // runtime address minus ELF vaddr
  FileRef file;           // the verified file everything was read from
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
  std::string libc_unavailable;       // why libc_elf is null when a libc is mapped
};

struct InspectOptions {
  // Charged while reading the binaries and, through ElfFile::budget(), by planning; the
  // caller checks budget->status() once planning is done.
  std::shared_ptr<Budget> budget;
  MappedFileOptions files;
  ElfLimits elf;
};

// Every file is opened as target_file.h describes: the executable through /proc/PID/exe, a
// mapped libpython or libc through /proc/PID/map_files or its verified path; the fds stay open
// in the BinaryRefs (host_path).
//
// Errors: InvalidArgument (pid <= 0), NotFound (no such process, or it is a zombie),
// PermissionDenied (cannot read its /proc entries), FailedPrecondition (not CPython, or a
// version threadscope cannot trace; a binary that is not a regular file, lives on FUSE, or was
// replaced since it was mapped), ResourceExhausted (a binary larger than the limits: file size,
// bytes to read, symbols, relocations), DataLoss (a corrupt ELF file), DeadlineExceeded (the
// budget ran out).
StatusOr<InspectedProcess> InspectPythonProcess(const ProcFs& proc, const Disassembler& dis,
                                                pid_t pid, const InspectOptions& options = {});

// The same description for a binary on disk (no process): what tools/probe_table and the
// planner's unit tests plan against.
StatusOr<InspectedProcess> InspectPythonBinary(const Disassembler& dis, const std::string& path,
                                               const InspectOptions& options = {});

}  // namespace threadscope::target
