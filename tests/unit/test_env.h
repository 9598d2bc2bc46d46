// Where unit tests write files: $TEST_TMPDIR, never fixed /tmp paths.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace threadscope::testing {

// A directory of this test's own, under $TEST_TMPDIR (which Bazel gives each test and removes);
// never a fixed /tmp path. Outside Bazel, under /tmp with the pid in its name.
inline std::string TestDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(base && *base ? base : "/tmp") + "/" + name + "." +
                    std::to_string(getpid());
  for (size_t pos = 1; (pos = dir.find('/', pos)) != std::string::npos; ++pos) {
    mkdir(dir.substr(0, pos).c_str(), 0755);
  }
  mkdir(dir.c_str(), 0755);
  return dir;
}

}  // namespace threadscope::testing
