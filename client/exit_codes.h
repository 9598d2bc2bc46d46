// threadscope's exit codes. `run` exits with the command's own status once it has started it.
#pragma once

#include <grpcpp/support/status.h>

namespace threadscope::client {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,          // a bug or an unexpected failure
  kExitUsage = 2,             // bad flags or arguments
  kExitNoSuchProcess = 3,     // NOT_FOUND
  kExitNotPython = 4,         // FAILED_PRECONDITION / DATA_LOSS: not CPython, unsupported, its
                              // binary unreadable or corrupt, no probes
  kExitPermission = 5,        // PERMISSION_DENIED / UNAUTHENTICATED: not allowed, bad token
  kExitNoDaemon = 6,          // UNAVAILABLE: --server given and nothing answers
  kExitTargetExited = 7,      // ABORTED: the target exited while attaching (or dumping)
  kExitBadRecording = 8,      // a recording that cannot be read (report, export: their own mapping)
  kExitLimit = 9,             // RESOURCE_EXHAUSTED: a limit of the daemon (docs/DESIGN.md §7.4)
                              // or a binary larger than threadscope reads
  kExitDeadline = 10,         // DEADLINE_EXCEEDED: the target took too long to inspect or answer
  // dump --core (the cause comes from the status's DumpError details):
  kExitBadCore = 11,             // no such core file, not a core file, or a truncated one
  kExitExecutableMissing = 12,   // the core's executable (or libpython) is not on this machine
  kExitExecutableMismatch = 13,  // --exe is not the executable the core was dumped from
  kExitCommandNotFound = 127, // run: the command could not be executed
};

inline int ExitCodeFor(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::OK: return kExitOk;
    case grpc::StatusCode::NOT_FOUND: return kExitNoSuchProcess;
    case grpc::StatusCode::FAILED_PRECONDITION: return kExitNotPython;
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED: return kExitPermission;
    case grpc::StatusCode::UNAVAILABLE: return kExitNoDaemon;
    case grpc::StatusCode::ABORTED: return kExitTargetExited;
    case grpc::StatusCode::INVALID_ARGUMENT: return kExitUsage;
    case grpc::StatusCode::DATA_LOSS: return kExitNotPython;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return kExitLimit;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return kExitDeadline;
    default: return kExitInternal;
  }
}

}  // namespace threadscope::client
