// The one place the CLI links the engine: the service started inside the CLI when no daemon
// answers (or --no-daemon), reached through an in-process gRPC channel. An optional dependency:
// //client:threadscope passes it to CliMain; //client:cli (commands, report, export, check and
// their tests) builds without it, so without libbpf and prometheus-cpp.
#pragma once

#include <memory>

#include "client/connection.h"

namespace threadscope::client {

// Starts the engine in this process (needs what a daemon needs: root, or the capabilities).
StatusOr<std::unique_ptr<LocalEngine>> StartInProcessEngine();

}  // namespace threadscope::client
