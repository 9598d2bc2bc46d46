// Where the CLI and the daemon meet by default. Shared by both, so it lives below either.
#pragma once

namespace threadscope {

inline constexpr char kDefaultSocketPath[] = "/run/threadscope/threadscope.sock";

}  // namespace threadscope
