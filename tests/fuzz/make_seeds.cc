// Writes every fuzz target's seeds to OUT_DIR/<target>/seed-<n>: the starting corpus of a
// libFuzzer run (tools/test.sh, bench/fuzz.sh).
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "tests/fuzz/seeds.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  std::string out = argv[1];
  mkdir(out.c_str(), 0755);
  for (const std::string& target : threadscope::fuzz::Targets()) {
    std::string dir = out + "/" + target;
    mkdir(dir.c_str(), 0755);
    int n = 0;
    for (const std::string& seed : threadscope::fuzz::Seeds(target)) {
      std::ofstream f(dir + "/seed-" + std::to_string(n++), std::ios::binary);
      f.write(seed.data(), static_cast<std::streamsize>(seed.size()));
    }
  }
  return 0;
}
