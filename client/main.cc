// threadscope: the CLI. All logic is in //client:cli.
#include "client/cli_main.h"

int main(int argc, char** argv) { return threadscope::client::CliMain(argc, argv); }
