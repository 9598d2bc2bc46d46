#include "daemon/autoattach/config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>

#include "daemon/common/labels.h"
#include "settings/trace_settings.h"
#include "probes/threadscope_events.h"

namespace threadscope::autoattach {

namespace {

// What an error line may quote of the input: short and printable.
std::string Shown(std::string_view s) {
  std::string out(s.substr(0, 64));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return s.size() > 64 ? out + "..." : out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<uint64_t> Unsigned(std::string_view s, uint64_t max) {
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  uint64_t v = std::strtoull(std::string(s).c_str(), nullptr, 10);
  if (v > max) return std::nullopt;
  return v;
}

// A comment starts at a '#' at the start of a line or after a space (a pattern may hold '#').
std::string_view StripComment(std::string_view line) {
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
      return line.substr(0, i);
    }
  }
  return line;
}

}  // namespace

std::optional<uint64_t> ParseDuration(std::string_view text) {
  if (text.empty() || text.size() > 32) return std::nullopt;
  if (text == "0") return 0;  // no time needs no unit
  size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
  std::string number(text.substr(0, i));
  std::string_view unit = text.substr(i);
  if (number.empty() || number == "." || std::count(number.begin(), number.end(), '.') > 1) {
    return std::nullopt;
  }
  double scale;
  if (unit == "ns") scale = 1;
  else if (unit == "us" || unit == "µs") scale = 1e3;
  else if (unit == "ms") scale = 1e6;
  else if (unit == "s") scale = 1e9;
  else if (unit == "m") scale = 60e9;
  else if (unit == "h") scale = 3600e9;
  else return std::nullopt;
  double v = std::strtod(number.c_str(), nullptr) * scale;
  if (!std::isfinite(v) || v < 0 || v > 1e18) return std::nullopt;
  return static_cast<uint64_t>(std::llround(v));
}

std::optional<uint64_t> ParseBytes(std::string_view text) {
  if (text.empty() || text.size() > 24) return std::nullopt;
  size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
  if (i == 0 || i > 12) return std::nullopt;
  uint64_t v = std::strtoull(std::string(text.substr(0, i)).c_str(), nullptr, 10);
  std::string_view unit = text.substr(i);
  uint64_t scale;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KiB" || unit == "K" || unit == "k") scale = 1ull << 10;
  else if (unit == "MiB" || unit == "M") scale = 1ull << 20;
  else if (unit == "GiB" || unit == "G") scale = 1ull << 30;
  else return std::nullopt;
  if (v > (4ull << 30) / scale) return std::nullopt;
  return v * scale;
}

std::vector<std::string> CheckRuleOptions(const v1::AttachOptions& o) {
  // The one check of trace settings (settings::ValidateAttachOptions), the one every attach
  // makes, and the operator's ring buffer ceiling (the daemon's own sessions are privileged):
  // made here so a bad rule stops the daemon at start instead of failing every attach later.
  std::vector<std::string> errors;
  settings::SettingsLimits limits;
  limits.labels.max_labels = kMaxRuleLabels;
  auto validated = settings::ValidateAttachOptions(o, limits);
  if (!validated.ok()) errors.push_back(validated.status().message());
  if (o.ring_buffer_bytes() > (1u << 30)) {
    errors.push_back("ring_buffer must be at most 1GiB, got " +
                     std::to_string(o.ring_buffer_bytes()) + " bytes");
  }
  return errors;
}

Status ApplyRuleOption(std::string_view key, std::string_view value, v1::AttachOptions* out) {
  auto bad = [&](const std::string& what) {
    return InvalidArgumentError(std::string(key) + " must be " + what + ", got '" + Shown(value) +
                                "'");
  };
  if (key == "locks") {
    auto mode = settings::ParseLockMode(value);
    if (!mode) return bad("off, contended or all");
    out->set_locks(settings::ToProto(*mode));
  } else if (key == "lock-threshold") {
    auto ns = ParseDuration(value);
    if (!ns) return bad("a duration (1ms, 500us)");
    out->set_lock_threshold_ns(*ns);
  } else if (key == "lock-stacks" || key == "acquire-stacks" || key == "gil-stacks") {
    auto v = Unsigned(value, TS_PY_MAX_FRAMES);
    if (!v) return bad("a whole number from 0 to " + std::to_string(TS_PY_MAX_FRAMES));
    if (key == "lock-stacks") out->set_lock_stack_frames(static_cast<uint32_t>(*v));
    if (key == "acquire-stacks") out->set_acquire_stack_frames(static_cast<uint32_t>(*v));
    if (key == "gil-stacks") out->set_gil_stack_frames(static_cast<uint32_t>(*v));
  } else if (key == "gil-stack-threshold") {
    auto ns = ParseDuration(value);
    if (!ns) return bad("a duration (1ms, 500us)");
    out->set_gil_stack_threshold_ns(*ns);
  } else if (key == "gil") {
    if (!settings::SetGilOption(value, out)) {
      return bad(std::string(settings::kGilOptionValues) + " (or true, false)");
    }
  } else if (key == "overhead-budget") {
    // "off": no budget (every stage as asked). Otherwise checked by the settings' own parse
    // (CheckRuleOptions), the message an attach would give.
    if (value == "off") {
      out->clear_overhead_budget();
    } else {
      if (value.empty() || value.size() > 16) return bad("a share of one core (1%, 0.5%) or off");
      out->set_overhead_budget(std::string(value));
    }
  } else if (key == "ring-buffer") {
    auto bytes = ParseBytes(value);
    if (!bytes || *bytes > (1ull << 30)) return bad("a size up to 1GiB (16MiB, 65536)");
    out->set_ring_buffer_bytes(static_cast<uint32_t>(*bytes));
  } else {
    return InvalidArgumentError(
        "unknown key '" + Shown(key) +
        "' (a rule knows: match, locks, lock-threshold, lock-stacks, acquire-stacks, gil, "
        "gil-stacks, gil-stack-threshold, overhead-budget, ring-buffer, label.NAME)");
  }
  return OkStatus();
}

LoadedConfig ParseConfig(std::string_view text, const std::string& name) {
  LoadedConfig out;
  auto error = [&](size_t line, const std::string& what) {
    out.errors.push_back(name + ":" + std::to_string(line) + ": " + what);
  };
  if (text.size() > kMaxConfigBytes) {
    out.errors.push_back(name + ": larger than " + std::to_string(kMaxConfigBytes >> 10) +
                         " KiB: not a threadscoped config file");
    return out;
  }
  Rule* rule = nullptr;     // the section being read
  size_t rule_line = 0;
  std::set<std::string> names, keys;  // keys: given in the current section
  std::map<std::string, std::string> rule_labels;
  auto finish_rule = [&] {
    if (!rule) return;
    if (rule->match.empty()) error(rule_line, "rule " + rule->name + " has no match line");
    for (const auto& e : CheckRuleOptions(rule->options)) {
      error(rule_line, "rule " + rule->name + ": " + e);
    }
  };
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size() && out.errors.size() < 100) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view raw = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (raw.size() > kMaxConfigLineBytes) {
      error(line_no, "longer than " + std::to_string(kMaxConfigLineBytes) + " bytes");
      continue;
    }
    bool control = false;
    for (char ch : raw) {
      unsigned char u = static_cast<unsigned char>(ch);
      control |= (u < 0x20 && ch != '\t' && ch != '\r') || u == 0x7f;
    }
    if (control) {
      error(line_no, "holds a NUL or control character: not a text config file");
      continue;
    }
    std::string_view line = Trim(StripComment(raw));
    if (line.empty()) continue;
    if (line.front() == '[') {
      finish_rule();
      rule = nullptr;
      if (line.back() != ']' || line.substr(0, 6) != "[rule ") {
        error(line_no, "a section is [rule NAME], got '" + Shown(line) + "'");
        continue;
      }
      std::string rname(Trim(line.substr(6, line.size() - 7)));
      if (!IsRuleName(rname)) {
        error(line_no, "'" + Shown(rname) + "' is not a rule name ([a-zA-Z0-9_.-], 1-64 bytes)");
        continue;
      }
      if (!names.insert(rname).second) {
        error(line_no, "rule " + rname + " is given twice");
        continue;
      }
      if (out.config.auto_attach.rules.size() >= kMaxRules) {
        error(line_no, "at most " + std::to_string(kMaxRules) + " rules");
        break;
      }
      out.config.auto_attach.rules.emplace_back();
      rule = &out.config.auto_attach.rules.back();
      rule->name = rname;
      rule_line = line_no;
      keys.clear();
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      error(line_no, "not KEY = VALUE or [rule NAME]: '" + Shown(line) + "'");
      continue;
    }
    std::string key(Trim(line.substr(0, eq)));
    std::string_view value = Trim(line.substr(eq + 1));
    if (key.empty()) {
      error(line_no, "no key before '='");
      continue;
    }
    // A match line may repeat (its keys add up); everything else is said once per section.
    if (key != "match" && !keys.insert(key).second) {
      error(line_no, "'" + Shown(key) + "' is given twice" + (rule ? " in rule " + rule->name : ""));
      continue;
    }
    if (key.rfind("label.", 0) == 0) {
      std::string lname = key.substr(6);
      if (rule) {
        if (static_cast<size_t>(rule->options.labels_size()) >= kMaxRuleLabels) {
          error(line_no, "rule " + rule->name + " has more than " +
                             std::to_string(kMaxRuleLabels) + " labels");
          continue;
        }
        (*rule->options.mutable_labels())[lname] = std::string(value);
      } else {
        out.config.metrics.labels[lname] = std::string(value);
      }
      std::map<std::string, std::string> one{{lname, std::string(value)}};
      if (Status s = ValidateLabels(one); !s.ok()) error(line_no, s.message());
      continue;
    }
    if (rule) {
      if (key == "match") {
        auto m = Matcher::Parse(value);
        if (!m.ok()) {
          error(line_no, "rule " + rule->name + ": " + m.status().message());
          continue;
        }
        if (Status s = rule->match.Merge(*m); !s.ok()) {
          error(line_no, "rule " + rule->name + ": " + s.message());
        }
        continue;
      }
      if (Status s = ApplyRuleOption(key, value, &rule->options); !s.ok()) {
        error(line_no, "rule " + rule->name + ": " + s.message());
      }
      continue;
    }
    if (key == "max-targets") {
      auto v = Unsigned(value, 4096);
      if (!v) {
        error(line_no, "max-targets must be a whole number from 0 to 4096, got '" +
                           Shown(value) + "'");
      } else {
        out.config.auto_attach.max_targets = *v;
      }
    } else if (key == "cpython-wait") {
      auto ns = ParseDuration(value);
      if (!ns || *ns < 10'000'000ull || *ns > 60'000'000'000ull) {
        error(line_no, "cpython-wait must be a duration from 10ms to 60s, got '" + Shown(value) +
                           "'");
      } else {
        out.config.auto_attach.cpython_wait_ms = static_cast<int>(*ns / 1'000'000);
      }
    } else if (key == "metrics-retention") {
      auto ns = ParseDuration(value);
      if (!ns || *ns > 86400'000'000'000ull) {
        error(line_no, "metrics-retention must be a duration of at most 24h (60s, 2m, 0s), got '" +
                           Shown(value) + "'");
      } else {
        out.config.metrics.retain_seconds = static_cast<int>(*ns / 1'000'000'000ull);
      }
    } else if (key == "metrics-retention-targets") {
      auto v = Unsigned(value, 65536);
      if (!v) {
        error(line_no, "metrics-retention-targets must be a whole number from 0 to 65536");
      } else {
        out.config.metrics.retain_max_targets = *v;
      }
    } else {
      error(line_no, "unknown key '" + Shown(key) +
                         "' (before any [rule NAME]: max-targets, cpython-wait, "
                         "metrics-retention, metrics-retention-targets, label.NAME)");
    }
  }
  finish_rule();
  return out;
}

LoadedConfig LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadedConfig out;
    out.errors.push_back(path + ": cannot read it (" + std::strerror(errno) + ")");
    return out;
  }
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes) {
      LoadedConfig out;
      out.errors.push_back(path + ": larger than " + std::to_string(kMaxConfigBytes >> 10) +
                           " KiB: not a threadscoped config file");
      return out;
    }
  }
  return ParseConfig(text, path);
}

}  // namespace threadscope::autoattach
