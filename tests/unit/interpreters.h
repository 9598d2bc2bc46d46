// The interpreter matrix (tests/interpreters.json) resolved on this machine, for the C++ tests
// that read or run real interpreters. tests/interpreters.py is the same reader for the root tier
// and the benchmarks; the two agree on labels, paths and reasons.
#ifndef THREADSCOPE_TESTS_UNIT_INTERPRETERS_H_
#define THREADSCOPE_TESTS_UNIT_INTERPRETERS_H_

#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "daemon/common/status.h"

namespace threadscope::interpreters {

struct Interpreter {
  std::string label;    // "debian-3.11", "pyenv-3.13.0", "debian-unstable-3.14", "extra-..."
  std::string kind;     // system, pyenv, debian-unstable, extra
  std::string version;  // from the matrix: what it reports, or major.minor; "" for extras
  std::string path;     // the interpreter as its own processes see it
  std::string binary;   // the same file from the host: what ELF reading opens
  std::string root;     // the root it lives in ("" on the host)
  std::vector<std::string> argv;  // how to run it: append the script and its arguments
  bool required = false;
  std::string missing;  // why it is not usable here; "" when it is

  bool present() const { return missing.empty(); }
  // "SKIP label: reason", the line the tests print for an absent optional interpreter.
  std::string SkipLine() const { return "SKIP " + label + ": " + missing; }
};

// GoogleTest prints a parameter by its label.
inline void PrintTo(const Interpreter& in, std::ostream* os) { *os << in.label; }

// Every entry of the matrix, then THREADSCOPE_EXTRA_PYTHONS (PATH or LABEL=PATH, colon
// separated), present or not. Paths are resolved as tests/interpreters.py resolves them:
// pyenv under $PYENV_ROOT (else ~/.pyenv of the user), the Debian unstable ones under
// $THREADSCOPE_DEBIAN_UNSTABLE_ROOT (else the file's default), run through tools/in-root.
// `matrix_file` and `in_root` are relative to the working directory (Bazel's runfiles root).
// A malformed file or THREADSCOPE_EXTRA_PYTHONS is an error.
StatusOr<std::vector<Interpreter>> Load(
    const std::string& matrix_file = "tests/interpreters.json",
    const std::string& in_root = "tools/in-root");

// The command line for `args` run by `in` (for popen): each word shell-quoted.
std::string CommandLine(const Interpreter& in, const std::vector<std::string>& args);

// What the interpreter says platform.python_version() is; "" when it cannot be run.
std::string SelfReportedVersion(const Interpreter& in);

// (major, minor) of a version string ("3.14.10" -> {3, 14}); {-1, -1} when it is not one.
std::pair<int, int> MajorMinor(const std::string& version);

}  // namespace threadscope::interpreters

#endif  // THREADSCOPE_TESTS_UNIT_INTERPRETERS_H_
