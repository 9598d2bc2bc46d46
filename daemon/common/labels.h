// User labels on a target's metrics ("service=api"): one parser and one validator for the
// daemon's --label flag, the CLI's --label, and AttachOptions.labels.
//
// Names are checked by hand, not with std::regex: libstdc++'s regex recurses once per
// character, and a label name is client input (a long one overflowed the daemon's stack).
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include "daemon/common/status.h"

namespace threadscope {

struct LabelLimits {
  size_t max_labels = 16;
  size_t max_name_bytes = 64;
  size_t max_value_bytes = 256;
};

// A Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not "__"-prefixed) that threadscope does
// not set itself (pid, executable, lock, ...). Any length is safe to pass.
bool IsUserLabelName(std::string_view name);

// "NAME=VALUE" -> (name, value), checked against `limits`; InvalidArgument saying why.
StatusOr<std::pair<std::string, std::string>> ParseLabel(std::string_view text,
                                                         const LabelLimits& limits = {});

// Checks a whole label set (count, name and value sizes, names, values valid UTF-8 without
// control characters).
Status ValidateLabels(const std::map<std::string, std::string>& labels,
                      const LabelLimits& limits = {});

}  // namespace threadscope
