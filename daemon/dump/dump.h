// `threadscope dump`: a hung CPython process explained, from a live process (stopped for a few
// milliseconds, or not at all with --nonblocking) or from a core file. No BPF: ptrace rights
// (CAP_SYS_PTRACE or the same user) for a live process, read access for a core.
//
// Errors carry one line and a code per cause (the service turns them into threadscope.v1
// DumpError details, the CLI into exit codes):
//   NotFound            no such process
//   FailedPrecondition  not CPython, or a version dump cannot read
//   PermissionDenied    ptrace refused (rights, Yama, another tracer), unreadable core
//   Aborted             the process exited while being dumped
//   DataLoss            not a core file, or a truncated one (or no such core file)
//   Unavailable         the core's executable (or libpython) is not on this machine
//   OutOfRange          the executable given does not match the core (build-id)
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

#include "daemon/common/status.h"
#include "daemon/dump/facts.h"

namespace threadscope::dump {

struct DumpOptions {
  bool native = false;       // C frames: the pc and the frame-pointer chain, symbolized
  bool locals = false;       // the innermost frame's locals, read without running code
  bool nonblocking = false;  // do not stop the process; read until two passes agree
  int max_passes = 6;        // --nonblocking
  // Lock object -> owner tid, from threadscoped's own trace of this process (--locks all).
  std::map<uint64_t, pid_t> trace_owners;
};

StatusOr<DumpReport> DumpProcess(pid_t pid, const DumpOptions& options);

// `executable` may be empty: the path the core names is used when it exists here.
StatusOr<DumpReport> DumpCoreFile(const std::string& core, const std::string& executable,
                                  const DumpOptions& options);

}  // namespace threadscope::dump
