#include "daemon/autoattach/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "daemon/common/labels.h"
#include "probes/threadscope_events.h"

namespace threadscope::autoattach {

namespace {

// A config file is a few kilobytes; a larger one is a mistake (or not a config file).
constexpr size_t kMaxConfigBytes = 1 << 20;
constexpr size_t kMaxRules = 256;

std::string Shown(const std::string& s) {
  std::string out = s.substr(0, 64);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return s.size() > 64 ? out + "..." : out;
}

class Checker {
 public:
  explicit Checker(std::string name) : name_(std::move(name)) {}

  void Error(const YAML::Node& at, const std::string& where, const std::string& what) {
    std::string line;
    if (at.IsDefined() && at.Mark().line >= 0) line = ":" + std::to_string(at.Mark().line + 1);
    errors_.push_back(name_ + line + ": " + where + ": " + what);
  }
  std::vector<std::string> Take() { return std::move(errors_); }

  // The keys of a map node, each once; unknown ones are errors.
  bool Map(const YAML::Node& node, const std::string& where,
           std::initializer_list<const char*> known) {
    if (!node.IsMap()) {
      Error(node, where, "must be a mapping (KEY: VALUE lines)");
      return false;
    }
    std::set<std::string> seen;
    for (const auto& kv : node) {
      std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "?";
      if (!seen.insert(key).second) Error(kv.first, where, "'" + Shown(key) + "' is given twice");
      bool ok = false;
      for (const char* k : known) ok |= key == k;
      if (!ok) {
        std::string list;
        for (const char* k : known) list += std::string(list.empty() ? "" : ", ") + k;
        Error(kv.first, where, "unknown key '" + Shown(key) + "' (known: " + list + ")");
      }
    }
    return true;
  }

  std::optional<std::string> String(const YAML::Node& n, const std::string& where) {
    if (!n.IsScalar()) {
      Error(n, where, "must be a single value");
      return std::nullopt;
    }
    return n.Scalar();
  }

  std::optional<uint64_t> Unsigned(const YAML::Node& n, const std::string& where, uint64_t max) {
    auto s = String(n, where);
    if (!s) return std::nullopt;
    if (s->empty() || s->size() > 19 || s->find_first_not_of("0123456789") != std::string::npos ||
        std::strtoull(s->c_str(), nullptr, 10) > max) {
      Error(n, where, "must be a whole number from 0 to " + std::to_string(max) + ", got '" +
                          Shown(*s) + "'");
      return std::nullopt;
    }
    return std::strtoull(s->c_str(), nullptr, 10);
  }

  std::optional<bool> Bool(const YAML::Node& n, const std::string& where) {
    auto s = String(n, where);
    if (!s) return std::nullopt;
    if (*s == "true" || *s == "yes" || *s == "on") return true;
    if (*s == "false" || *s == "no" || *s == "off") return false;
    Error(n, where, "must be true or false, got '" + Shown(*s) + "'");
    return std::nullopt;
  }

  std::optional<uint64_t> Duration(const YAML::Node& n, const std::string& where) {
    auto s = String(n, where);
    if (!s) return std::nullopt;
    auto ns = ParseDuration(*s);
    if (!ns) Error(n, where, "must be a duration (60s, 500ms, 2m), got '" + Shown(*s) + "'");
    return ns;
  }

  std::map<std::string, std::string> Labels(const YAML::Node& n, const std::string& where,
                                            size_t max) {
    std::map<std::string, std::string> out;
    if (!n.IsMap()) {
      Error(n, where, "must be a mapping of label names to values");
      return out;
    }
    for (const auto& kv : n) {
      auto k = String(kv.first, where);
      auto v = String(kv.second, where + "." + (k ? Shown(*k) : "?"));
      if (!k || !v) continue;
      if (out.count(*k)) Error(kv.first, where, "label '" + Shown(*k) + "' is given twice");
      out[*k] = *v;
    }
    LabelLimits limits;
    limits.max_labels = max;
    if (Status s = ValidateLabels(out, limits); !s.ok()) Error(n, where, s.message());
    return out;
  }

 private:
  std::string name_;
  std::vector<std::string> errors_;
};

void ParseOptions(Checker& c, const YAML::Node& n, const std::string& where,
                  v1::AttachOptions* out) {
  if (!c.Map(n, where,
             {"locks", "lock_threshold", "lock_stacks", "acquire_stacks", "gil", "ring_buffer"})) {
    return;
  }
  if (n["locks"]) {
    if (auto v = c.String(n["locks"], where + ".locks")) out->set_locks(*v);
  }
  if (n["lock_threshold"]) {
    if (auto v = c.Duration(n["lock_threshold"], where + ".lock_threshold")) {
      out->set_lock_threshold_ns(*v);
    }
  }
  if (n["lock_stacks"]) {
    if (auto v = c.Unsigned(n["lock_stacks"], where + ".lock_stacks", TS_PY_MAX_FRAMES)) {
      out->set_lock_stack_frames(static_cast<uint32_t>(*v));
    }
  }
  if (n["acquire_stacks"]) {
    if (auto v = c.Unsigned(n["acquire_stacks"], where + ".acquire_stacks", TS_PY_MAX_FRAMES)) {
      out->set_acquire_stack_frames(static_cast<uint32_t>(*v));
    }
  }
  if (n["gil"]) {
    if (auto v = c.Bool(n["gil"], where + ".gil")) out->set_gil(*v);
  }
  if (n["ring_buffer"]) {
    if (auto s = c.String(n["ring_buffer"], where + ".ring_buffer")) {
      auto bytes = ParseBytes(*s);
      if (!bytes) {
        c.Error(n["ring_buffer"], where + ".ring_buffer",
                "must be a size (16MiB, 65536), got '" + Shown(*s) + "'");
      } else {
        out->set_ring_buffer_bytes(static_cast<uint32_t>(std::min<uint64_t>(*bytes, 1ull << 31)));
      }
    }
  }
  for (const auto& e : CheckRuleOptions(*out)) c.Error(n, where, e);
}

void ParseRule(Checker& c, const YAML::Node& n, size_t index, std::set<std::string>* names,
               Config* config) {
  std::string where = "auto_attach.rules[" + std::to_string(index) + "]";
  if (!c.Map(n, where, {"name", "match", "options", "labels"})) return;
  Rule rule;
  rule.name = "rule-" + std::to_string(index + 1);
  if (n["name"]) {
    if (auto v = c.String(n["name"], where + ".name")) {
      if (!IsRuleName(*v)) {
        c.Error(n["name"], where + ".name",
                "'" + Shown(*v) + "' is not a rule name ([a-zA-Z0-9_.-], 1-64 bytes)");
      }
      rule.name = *v;
    }
  }
  if (!names->insert(rule.name).second) {
    c.Error(n["name"] ? n["name"] : n, where + ".name", "'" + Shown(rule.name) +
                                                           "' names another rule too");
  }
  if (!n["match"]) {
    c.Error(n, where, "has no match (exe, cmdline, cgroup, user)");
  } else if (c.Map(n["match"], where + ".match", {"exe", "cmdline", "cgroup", "user"})) {
    for (const auto& kv : n["match"]) {
      if (!kv.first.IsScalar()) continue;
      std::string key = kv.first.Scalar();
      if (key != "exe" && key != "cmdline" && key != "cgroup" && key != "user") continue;
      auto v = c.String(kv.second, where + ".match." + key);
      if (!v) continue;
      if (Status s = rule.match.Add(key, *v); !s.ok()) {
        c.Error(kv.second, where + ".match", s.message());
      }
    }
    if (rule.match.empty()) c.Error(n["match"], where + ".match", "matches nothing: give a key");
  }
  if (n["options"]) ParseOptions(c, n["options"], where + ".options", &rule.options);
  if (n["labels"]) {
    auto labels = c.Labels(n["labels"], where + ".labels", kMaxRuleLabels);
    for (const auto& [k, v] : labels) (*rule.options.mutable_labels())[k] = v;
  }
  config->auto_attach.rules.push_back(std::move(rule));
}

}  // namespace

std::optional<uint64_t> ParseDuration(std::string_view text) {
  if (text.empty() || text.size() > 32) return std::nullopt;
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
  // The same checks SessionManager::ValidateOptions makes at attach time, for an operator (the
  // daemon's own sessions are privileged): made here so a bad rule stops the daemon at start
  // instead of failing every attach later.
  std::vector<std::string> errors;
  if (!o.locks().empty() && o.locks() != "off" && o.locks() != "contended" && o.locks() != "all") {
    errors.push_back("locks must be off, contended or all, got '" + Shown(o.locks()) + "'");
  }
  uint32_t ring = o.ring_buffer_bytes();
  if (ring != 0 && (ring < (64u << 10) || (ring & (ring - 1)) || ring > (1u << 30))) {
    errors.push_back("ring_buffer must be a power of two from 64KiB to 1GiB, got " +
                     std::to_string(ring) + " bytes");
  }
  if (o.lock_stack_frames() > TS_PY_MAX_FRAMES) {
    errors.push_back("lock_stacks must be 0-" + std::to_string(TS_PY_MAX_FRAMES));
  }
  if (o.acquire_stack_frames() > TS_PY_MAX_FRAMES) {
    errors.push_back("acquire_stacks must be 0-" + std::to_string(TS_PY_MAX_FRAMES));
  }
  std::map<std::string, std::string> labels(o.labels().begin(), o.labels().end());
  LabelLimits limits;
  limits.max_labels = kMaxRuleLabels;
  if (Status s = ValidateLabels(labels, limits); !s.ok()) errors.push_back(s.message());
  return errors;
}

LoadedConfig ParseConfig(const std::string& text, const std::string& name) {
  LoadedConfig out;
  Checker c(name);
  YAML::Node loaded;
  try {
    loaded = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    std::string line = e.mark.line >= 0 ? ":" + std::to_string(e.mark.line + 1) : "";
    out.errors.push_back(name + line + ": not YAML or JSON: " + e.msg);
    return out;
  }
  // Read through a const node: yaml-cpp's non-const operator[] may add the key it looks up.
  const YAML::Node& root = loaded;
  try {
    if (root.IsNull()) return out;  // an empty file configures nothing
    if (!c.Map(root, "(top level)", {"auto_attach", "metrics"})) {
      out.errors = c.Take();
      return out;
    }
    if (const YAML::Node aa = root["auto_attach"]) {
      if (c.Map(aa, "auto_attach", {"max_targets", "cpython_wait", "rules"})) {
        if (aa["max_targets"]) {
          if (auto v = c.Unsigned(aa["max_targets"], "auto_attach.max_targets", 4096)) {
            out.config.auto_attach.max_targets = *v;
          }
        }
        if (aa["cpython_wait"]) {
          if (auto v = c.Duration(aa["cpython_wait"], "auto_attach.cpython_wait")) {
            if (*v < 10'000'000ull || *v > 60'000'000'000ull) {
              c.Error(aa["cpython_wait"], "auto_attach.cpython_wait",
                      "must be from 10ms to 60s");
            } else {
              out.config.auto_attach.cpython_wait_ms = static_cast<int>(*v / 1'000'000);
            }
          }
        }
        if (const YAML::Node rules = aa["rules"]) {
          if (!rules.IsSequence()) {
            c.Error(rules, "auto_attach.rules", "must be a list (lines starting with '- ')");
          } else if (rules.size() > kMaxRules) {
            c.Error(rules, "auto_attach.rules", "at most " + std::to_string(kMaxRules) +
                                                    " rules");
          } else {
            std::set<std::string> names;
            for (size_t i = 0; i < rules.size(); ++i) {
              ParseRule(c, rules[i], i, &names, &out.config);
            }
          }
        }
      }
    }
    if (const YAML::Node m = root["metrics"]) {
      if (c.Map(m, "metrics", {"addr", "retain", "retain_max_targets", "top_locks", "labels"})) {
        if (m["addr"]) out.config.metrics.addr = c.String(m["addr"], "metrics.addr");
        if (m["retain"]) {
          if (auto v = c.Duration(m["retain"], "metrics.retain")) {
            if (*v > 86400'000'000'000ull) {
              c.Error(m["retain"], "metrics.retain", "must be at most 24h");
            } else {
              out.config.metrics.retain_seconds = static_cast<int>(*v / 1'000'000'000ull);
            }
          }
        }
        if (m["retain_max_targets"]) {
          if (auto v = c.Unsigned(m["retain_max_targets"], "metrics.retain_max_targets", 65536)) {
            out.config.metrics.retain_max_targets = *v;
          }
        }
        if (m["top_locks"]) {
          if (auto v = c.Unsigned(m["top_locks"], "metrics.top_locks", 1000)) {
            out.config.metrics.top_locks = *v;
          }
        }
        if (m["labels"]) out.config.metrics.labels = c.Labels(m["labels"], "metrics.labels", 16);
      }
    }
  } catch (const YAML::Exception& e) {
    // yaml-cpp throws on a node used as the wrong kind; whatever it is, it is one more error.
    c.Error(YAML::Node(), "(file)", e.what());
  }
  out.errors = c.Take();
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
