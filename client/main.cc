// threadscope: the CLI. All logic is in //client:cli; the in-process engine (//client:inprocess)
// is linked here only.
#include "client/cli_main.h"
#include "client/in_process.h"

int main(int argc, char** argv) {
  return threadscope::client::CliMain(argc, argv, threadscope::client::InProcessEngineAdapter());
}
