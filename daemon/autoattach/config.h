// threadscoped's configuration file (--config FILE): auto-attach rules with their trace
// options and labels, and the metrics settings. YAML (a Kubernetes ConfigMap mounts one), and
// JSON, which is YAML too. deploy/systemd/threadscoped.yaml is the annotated example.
//
//   auto_attach:
//     max_targets: 32          # auto-attached targets at once; past it, matches are refused
//     cpython_wait: 2s         # how long after exec a match may take to map its interpreter
//     rules:
//       - name: web            # [a-zA-Z0-9_.-]{1,64}; the `rule` label of the counters
//         match: {exe: "*/python3*", cmdline: "gunicorn", cgroup: "*kubepods*", user: app}
//         options: {locks: contended, lock_threshold: 1ms, lock_stacks: 8, acquire_stacks: 0,
//                   gil: true, ring_buffer: 16MiB}
//         labels: {service: web}
//   metrics:
//     addr: 127.0.0.1:9464
//     retain: 60s              # an ended target's last values stay this long
//     retain_max_targets: 256
//     top_locks: 10
//     labels: {team: payments}
//
// The whole file is checked at start: every problem is reported, one line each with its line
// number, and the daemon does not start (exit 2).
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "daemon/autoattach/rules.h"

namespace threadscope::autoattach {

struct AutoAttachConfig {
  std::vector<Rule> rules;
  size_t max_targets = 32;
  int cpython_wait_ms = 2000;
};

struct MetricsConfig {
  std::optional<std::string> addr;
  std::optional<int> retain_seconds;
  std::optional<size_t> retain_max_targets;
  std::optional<size_t> top_locks;
  std::map<std::string, std::string> labels;
};

struct Config {
  AutoAttachConfig auto_attach;
  MetricsConfig metrics;
};

struct LoadedConfig {
  Config config;
  std::vector<std::string> errors;  // "FILE:LINE: where: what", one per problem; empty = ok
};

// Reads and checks `path`.
LoadedConfig LoadConfigFile(const std::string& path);
// The same for text already read; `name` prefixes the errors.
LoadedConfig ParseConfig(const std::string& text, const std::string& name);

// "60s", "1.5s", "500ms", "250us", "100ns", "2m" -> nanoseconds; nullopt when malformed.
std::optional<uint64_t> ParseDuration(std::string_view text);
// "16MiB", "65536", "64KiB", "1GiB" -> bytes; nullopt when malformed or over 4 GiB.
std::optional<uint64_t> ParseBytes(std::string_view text);

// Checks the AttachOptions a rule asks for as the daemon will at attach time for an operator
// (lock mode, stack depths, ring size, labels): every problem, as "what: why".
std::vector<std::string> CheckRuleOptions(const v1::AttachOptions& options);

}  // namespace threadscope::autoattach
