#include "daemon/target/budget.h"

namespace threadscope::target {

namespace {

// Reading the clock costs ~20 ns (vDSO); a unit costs at least that much again, so checking
// every 4096 units keeps the overhead under 1% and overshoots a deadline by microseconds.
constexpr uint64_t kUnitsPerClockCheck = 4096;

}  // namespace

std::shared_ptr<Budget> Budget::WithTimeout(std::chrono::milliseconds timeout) {
  auto b = std::make_shared<Budget>();
  b->start_ = Clock::now();
  b->deadline_ = *b->start_ + timeout;
  return b;
}

std::shared_ptr<Budget> Budget::WithWorkLimit(uint64_t units) {
  auto b = std::make_shared<Budget>();
  b->max_units_ = units;
  return b;
}

bool Budget::Charge(uint64_t units, const char* step) {
  if (exhausted_) return false;
  spent_ += units;
  if (max_units_ && spent_ > *max_units_) {
    exhausted_ = true;
  } else if (deadline_ && spent_ >= next_clock_check_) {
    next_clock_check_ = spent_ + kUnitsPerClockCheck;
    exhausted_ = Clock::now() >= *deadline_;
  }
  if (exhausted_) step_ = step;
  return !exhausted_;
}

Status Budget::status() const {
  if (!exhausted_) return OkStatus();
  std::string limit;
  if (deadline_ && start_) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline_ - *start_);
    limit = "the " + std::to_string(ms.count()) + " ms attach deadline";
  } else {
    limit = "the work limit of " + std::to_string(max_units_.value_or(0)) + " units";
  }
  return Status(StatusCode::kDeadlineExceeded,
                "reading the target's binaries stopped while " + step_ + ": " + limit +
                    " passed; its interpreter or libc is unusually large or crafted to be slow "
                    "to read");
}

}  // namespace threadscope::target
