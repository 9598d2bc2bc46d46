#include "stack_text.h"

#include <algorithm>

namespace threadscope::v1 {

std::string ShortWhere(const PyStack& s) {
  if (s.frames_size() == 0) return "";
  const auto& f = s.frames(std::min<int>(static_cast<int>(s.primary()), s.frames_size() - 1));
  std::string file = f.file();
  auto slash = file.rfind('/');
  if (slash != std::string::npos) file = file.substr(slash + 1);
  return file + (f.has_line() ? ":" + std::to_string(f.line()) : "") + " " + f.function();
}

}  // namespace threadscope::v1
