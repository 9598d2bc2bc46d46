#pragma once

#include "client/connection.h"
#include "client/launcher.h"

namespace threadscope::client {

// What the CLI takes from the engine's side, when the binary links it (client/in_process.h,
// the one client code that includes engine headers). Both optional: //client:cli and its tests
// build without them.
struct EngineAdapter {
  // Starts the in-process engine when no daemon answers (empty: a daemon is needed).
  LocalEngineFactory local_engine;
  // `run`: tells the exec'd image that is CPython (empty: the first image exec'd).
  ImageCheck executes_cpython;
};

// Parses the command line and runs one command; returns the exit code.
int CliMain(int argc, char** argv, EngineAdapter adapter = {});

}  // namespace threadscope::client
