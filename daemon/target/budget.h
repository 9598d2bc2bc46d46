// How much work inspecting and planning one target may do.
//
// The target chooses the binaries threadscope reads, so every loop whose length comes from a
// binary (instructions decoded, data scanned for tables, call sites searched) can be made long.
// Fixed caps bound each loop (elf_file.h, cpython.h); the budget bounds their sum in time: the
// engine gives each attach a deadline, the loops charge it, and once it has passed they stop
// early and status() says which step ran out. One budget belongs to one attach (one thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "daemon/common/status.h"

namespace threadscope::target {

class Budget {
 public:
  using Clock = std::chrono::steady_clock;

  // Unlimited: only the fixed caps apply.
  Budget() = default;
  static std::shared_ptr<Budget> WithTimeout(std::chrono::milliseconds timeout);
  // A limit in work units instead of time, for tests that must not depend on machine speed.
  // A unit is about one decoded instruction or 8 bytes scanned.
  static std::shared_ptr<Budget> WithWorkLimit(uint64_t units);

  // Records `units` of work done by `step` ("decoding functions"). Returns false once the
  // budget is spent, and from then on.
  bool Charge(uint64_t units, const char* step);
  bool exhausted() const { return exhausted_; }
  uint64_t spent() const { return spent_; }
  // OK while within budget; else DeadlineExceeded naming the step that ran out.
  Status status() const;

 private:
  std::optional<Clock::time_point> start_;
  std::optional<Clock::time_point> deadline_;
  std::optional<uint64_t> max_units_;
  uint64_t spent_ = 0;
  uint64_t next_clock_check_ = 0;
  bool exhausted_ = false;
  std::string step_;
};

// Charges a budget that may be absent (no budget: never exhausted).
inline bool Charge(Budget* budget, uint64_t units, const char* step) {
  return budget == nullptr || budget->Charge(units, step);
}

}  // namespace threadscope::target
