// `threadscope check`: runs a command N times under tracing (or reads saved reports), compares
// the contention figures with a committed baseline (client/gate.h), and writes what CI systems
// read. Exit codes of its own: 0 ok, 1 regression, 2 usage (bad flags, missing or corrupt
// baseline), 3 internal error, 4 no data.
#pragma once

#include <string>
#include <vector>

namespace threadscope::client {

enum CheckExit : int {
  kCheckOk = 0,
  kCheckRegression = 1,
  kCheckUsage = 2,
  kCheckInternal = 3,
  kCheckNoData = 4,
};

struct CheckOptions {
  std::string baseline;
  int runs = 5;
  bool update_baseline = false;
  std::vector<std::string> reports;     // saved JSON reports instead of running the command
  // Per-stack figures: each run also writes a contention profile (--pprof-out) whose stacks
  // become figures (client/gate.h, StackFigures).
  bool stacks = false;
  // Compare contention profiles instead: the first is the baseline, the others the runs.
  std::vector<std::string> compare_profiles;
  std::vector<std::string> thresholds;  // NAME=REL,ABS
  std::string junit_file;
  std::string json_file;
  std::string summary_file;  // Markdown; default: $GITHUB_STEP_SUMMARY when set
  bool github = false;       // annotations on stdout; default: when GITHUB_ACTIONS=true
  std::vector<std::string> global_flags;  // before `run`: --server, --tls-ca, --token-file ...
  std::vector<std::string> run_flags;     // after `run`: --locks, --gil
};

int CheckCommand(const CheckOptions& options, const std::vector<std::string>& command);

}  // namespace threadscope::client
