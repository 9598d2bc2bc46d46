// How a Python stack is named in one line wherever a short name is needed (metric labels,
// timeline slices): "cache.py:42 Cache.get", the primary frame with the file's base name.
#pragma once

#include <string>

#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::v1 {

std::string ShortWhere(const PyStack& stack);

}  // namespace threadscope::v1
