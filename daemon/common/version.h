#pragma once

namespace threadscope {

inline constexpr char kThreadscopeVersion[] = "0.1.0";

}  // namespace threadscope
