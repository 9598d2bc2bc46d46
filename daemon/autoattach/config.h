// threadscoped's configuration file (--config FILE): auto-attach rules with their trace
// options and labels, and the metrics settings. A line format with no dependency (a Kubernetes
// ConfigMap mounts it as a file); deploy/systemd/threadscoped.conf is the annotated example.
//
//   # comments and blank lines are ignored; every other line is KEY = VALUE or [rule NAME]
//   max-targets = 32            # auto-attached targets at once; past it, matches are refused
//   cpython-wait = 2s           # how long after exec a match may take to map its interpreter
//   metrics-retention = 60s     # an ended target's last values stay on /metrics this long
//   metrics-retention-targets = 256
//   label.cluster = prod        # on every series (as --label)
//
//   [rule web]                  # NAME: [a-zA-Z0-9_.-]{1,64}, the `rule` label of the counters
//   match = exe=*/python3*,cmdline=gunicorn   # as --auto-attach (several match lines: all apply)
//   locks = contended           # trace options: locks, lock-threshold, lock-stacks,
//   lock-threshold = 1ms        #   acquire-stacks, gil, gil-stacks, gil-stack-threshold,
//   gil = true                  #   overhead-budget, ring-buffer: the AttachOptions of an attach
//   overhead-budget = 0.5%      # default 1% for auto-attached targets; off: no budget
//   label.service = web         # this rule's targets' labels
//
// The whole file is checked at start, every problem "FILE:LINE: what", and the daemon does not
// start (exit 4). The file is hostile input as much as a flag: bounded in size, line length
// and rule count; NUL bytes and control characters are errors, never passed on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/autoattach/rules.h"

namespace threadscope::autoattach {

struct AutoAttachConfig {
  std::vector<Rule> rules;
  size_t max_targets = 32;
  int cpython_wait_ms = 2000;
};

struct MetricsConfig {
  std::optional<int> retain_seconds;
  std::optional<size_t> retain_max_targets;
  std::map<std::string, std::string> labels;
};

struct Config {
  AutoAttachConfig auto_attach;
  MetricsConfig metrics;
};

struct LoadedConfig {
  Config config;
  std::vector<std::string> errors;  // "FILE:LINE: what", one per problem; empty = ok
};

inline constexpr size_t kMaxConfigBytes = 1 << 20;
inline constexpr size_t kMaxConfigLineBytes = 4096;
inline constexpr size_t kMaxRules = 256;

// Reads and checks `path`.
LoadedConfig LoadConfigFile(const std::string& path);
// The same for text already read; `name` prefixes the errors.
LoadedConfig ParseConfig(std::string_view text, const std::string& name);

// "60s", "1.5s", "500ms", "250us", "100ns", "2m", "0" -> nanoseconds; nullopt when malformed.
std::optional<uint64_t> ParseDuration(std::string_view text);
// "16MiB", "65536", "64KiB", "1GiB" -> bytes; nullopt when malformed or over 4 GiB.
std::optional<uint64_t> ParseBytes(std::string_view text);

// One trace option of a rule ("locks", "contended") into the AttachOptions an attach takes:
// the one place rule text becomes attach settings. An error says what is wrong with the value.
Status ApplyRuleOption(std::string_view key, std::string_view value, v1::AttachOptions* out);

// Checks the AttachOptions a rule asks for as the daemon will at attach time for an operator
// (lock mode, stack depths, ring size, labels): every problem, as "what: why".
std::vector<std::string> CheckRuleOptions(const v1::AttachOptions& options);

}  // namespace threadscope::autoattach
