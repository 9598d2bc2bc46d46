#pragma once

#include "client/connection.h"

namespace threadscope::client {

// Parses the command line and runs one command; returns the exit code. `local_engine` starts
// the in-process engine when no daemon answers (empty: a daemon is needed).
int CliMain(int argc, char** argv, LocalEngineFactory local_engine = {});

}  // namespace threadscope::client
