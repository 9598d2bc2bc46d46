#pragma once

namespace threadscope::client {

// Parses the command line and runs one command; returns the exit code.
int CliMain(int argc, char** argv);

}  // namespace threadscope::client
