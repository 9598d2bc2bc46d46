// threadscope's exit codes. `run` exits with the command's own status once it has started it.
#pragma once

#include <grpcpp/support/status.h>

namespace threadscope::client {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,          // a bug or an unexpected failure
  kExitUsage = 2,             // bad flags or arguments
  kExitNoSuchProcess = 3,     // NOT_FOUND
  kExitNotPython = 4,         // FAILED_PRECONDITION: not CPython, unsupported, no probes
  kExitPermission = 5,        // PERMISSION_DENIED / UNAUTHENTICATED: not allowed, bad token
  kExitNoDaemon = 6,          // UNAVAILABLE: --server given and nothing answers
  kExitTargetExited = 7,      // ABORTED: the target exited while attaching
  // A recording that cannot be read or loaded: any failure to read the file, and INVALID_ARGUMENT,
  // DATA_LOSS or FAILED_PRECONDITION from LoadRecording (commands.cc LoadRecording decides;
  // ExitCodeFor alone maps only DATA_LOSS here, INVALID_ARGUMENT being a usage error elsewhere).
  kExitBadRecording = 8,
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
    case grpc::StatusCode::DATA_LOSS: return kExitBadRecording;
    default: return kExitInternal;
  }
}

}  // namespace threadscope::client
