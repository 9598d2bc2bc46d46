// Runs a fuzz target without libFuzzer, as a test: over its generated seeds, deterministic
// mutations of them (truncations, byte flips, inserted runs), and every file under the paths
// given (committed regression inputs; a corpus from bench/fuzz.sh). Under --config=asan this is
// the fuzz targets' corpus replay of the test command.
//   replay_main TARGET [FILE_OR_DIR...]
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/seeds.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

size_t inputs = 0;

void Run(const std::string& input) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  ++inputs;
}

void RunPath(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return;  // no regressions for this target (yet)
  if (S_ISDIR(st.st_mode)) {
    DIR* d = opendir(path.c_str());
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    }
    closedir(d);
    for (const auto& n : names) RunPath(path + "/" + n);
    return;
  }
  std::ifstream in(path, std::ios::binary);
  Run(std::string(std::istreambuf_iterator<char>(in), {}));
}

// xorshift64: the same mutations on every run.
uint64_t Next(uint64_t* s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TARGET [FILE_OR_DIR...]\n", argv[0]);
    return 2;
  }
  std::string target = argv[1];
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (const std::string& seed : threadscope::fuzz::Seeds(target)) {
    Run(seed);
    for (int m = 0; m < 200 && !seed.empty(); ++m) {
      std::string x = seed;
      size_t at = Next(&state) % x.size();
      switch (Next(&state) % 4) {
        case 0: x.resize(at); break;                                        // truncate
        case 1: x[at] = static_cast<char>(x[at] ^ (1u << (Next(&state) % 8))); break;  // flip
        case 2: x[at] = static_cast<char>(Next(&state)); break;             // random byte
        default: {                                                           // 0xff run
          size_t n = std::min<size_t>(1 + Next(&state) % 8, x.size() - at);
          for (size_t k = 0; k < n; ++k) x[at + k] = '\xff';
        }
      }
      Run(x);
    }
  }
  for (int i = 2; i < argc; ++i) RunPath(argv[i]);
  std::printf("%s: %zu inputs replayed, no findings\n", target.c_str(), inputs);
  return 0;
}
