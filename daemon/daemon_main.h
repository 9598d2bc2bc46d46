#pragma once

namespace threadscope {

// Parses flags, starts DaemonServer, stops cleanly on SIGINT/SIGTERM. Exit codes: 0 clean
// stop, 2 usage, 3 cannot start (socket in use, no permission).
int DaemonMain(int argc, char** argv);

}  // namespace threadscope
