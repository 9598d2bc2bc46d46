#include "daemon/common/labels.h"

#include <array>

namespace threadscope {

namespace {

// Names threadscope's own series carry, and Prometheus' own.
constexpr std::array<std::string_view, 20> kReserved = {
    "pid",  "executable", "python_version", "target", "state", "lock",     "kind",
    "site", "probe",      "reason",         "symbols", "lock_mode", "gil", "le",
    "quantile", "job", "instance", "rule", "stage", "version"};

bool IsPrintableUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    if (n == 2 && c < 0xc2) return false;                              // overlong
    if (n == 2 && c == 0xc2 && static_cast<unsigned char>(s[i + 1]) < 0xa0) return false;  // C1
    i += n;
  }
  return true;
}

std::string Shown(std::string_view s) {
  std::string out(s.substr(0, 40));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return s.size() > 40 ? out + "..." : out;
}

}  // namespace

bool IsUserLabelName(std::string_view name) {
  if (name.empty() || name.rfind("__", 0) == 0) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0)) return false;
  }
  for (auto r : kReserved) {
    if (name == r) return false;
  }
  return true;
}

static Status CheckLabel(std::string_view name, std::string_view value, const LabelLimits& limits) {
  if (name.size() > limits.max_name_bytes) {
    return InvalidArgumentError("label name '" + Shown(name) + "' is longer than " +
                                std::to_string(limits.max_name_bytes) + " bytes");
  }
  if (!IsUserLabelName(name)) {
    return InvalidArgumentError("label '" + Shown(name) +
                                "' is not a Prometheus label name threadscope leaves to users "
                                "([a-zA-Z_][a-zA-Z0-9_]*, not pid, executable, lock, ...)");
  }
  if (value.size() > limits.max_value_bytes) {
    return InvalidArgumentError("the value of label '" + std::string(name) + "' is longer than " +
                                std::to_string(limits.max_value_bytes) + " bytes");
  }
  if (!IsPrintableUtf8(value)) {
    return InvalidArgumentError("the value of label '" + std::string(name) +
                                "' is not printable UTF-8");
  }
  return OkStatus();
}

StatusOr<std::pair<std::string, std::string>> ParseLabel(std::string_view text,
                                                         const LabelLimits& limits) {
  auto eq = text.find('=');
  if (eq == std::string_view::npos) {
    return InvalidArgumentError("label '" + Shown(text) + "' is not NAME=VALUE");
  }
  std::string_view name = text.substr(0, eq), value = text.substr(eq + 1);
  TS_RETURN_IF_ERROR(CheckLabel(name, value, limits));
  return std::make_pair(std::string(name), std::string(value));
}

Status ValidateLabels(const std::map<std::string, std::string>& labels,
                      const LabelLimits& limits) {
  if (labels.size() > limits.max_labels) {
    return InvalidArgumentError("at most " + std::to_string(limits.max_labels) +
                                " labels per target, got " + std::to_string(labels.size()));
  }
  for (const auto& [name, value] : labels) TS_RETURN_IF_ERROR(CheckLabel(name, value, limits));
  return OkStatus();
}

}  // namespace threadscope
