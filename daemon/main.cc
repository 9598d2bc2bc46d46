// threadscoped: serves threadscope.v1 on a Unix socket. All logic is in //daemon/service.
#include "daemon/daemon_main.h"

int main(int argc, char** argv) { return threadscope::DaemonMain(argc, argv); }
