// The one place the CLI links the engine (and the one client file that includes its headers):
// the service started inside the CLI when no daemon answers (or --no-daemon), reached through an
// in-process gRPC channel, and the engine's ELF reader for `run` (is the exec'd image CPython?).
// An optional dependency: //client:threadscope passes it to CliMain; //client:cli (commands,
// report, export, check and their tests) builds without it, so without libbpf, capstone and
// prometheus-cpp.
#pragma once

#include <memory>

#include "client/cli_main.h"
#include "client/connection.h"

namespace threadscope::client {

// Starts the engine in this process (needs what a daemon needs: root, or the capabilities).
StatusOr<std::unique_ptr<LocalEngine>> StartInProcessEngine();

// Everything above, for CliMain.
EngineAdapter InProcessEngineAdapter();

}  // namespace threadscope::client
