// A clock the test moves (Envoy's SimulatedTimeSystem), for code that takes a Clock
// (daemon/common/clock.h): sessions, the session manager, the live consumer.
#pragma once

#include <atomic>
#include <cstdint>

#include "daemon/common/clock.h"

namespace threadscope::testing {

// Time that moves only when the test says so (Envoy's SimulatedTimeSystem).
class FakeClock final : public Clock {
 public:
  explicit FakeClock(uint64_t monotonic_ns = 5'000'000'000) : now_(monotonic_ns) {}
  uint64_t MonotonicNowNs() const override { return now_; }
  uint64_t RealtimeNowNs() const override { return now_ + kRealtimeOffsetNs; }
  uint64_t BoottimeNowNs() const override { return now_ + suspended_ns_; }
  void Advance(uint64_t ns) { now_ += ns; }
  void AdvanceSeconds(uint64_t s) { Advance(s * 1'000'000'000ull); }
  void set_suspended_ns(uint64_t ns) { suspended_ns_ = ns; }

  static constexpr uint64_t kRealtimeOffsetNs = 1'700'000'000'000'000'000ull;

 private:
  std::atomic<uint64_t> now_;
  std::atomic<uint64_t> suspended_ns_{0};
};

}  // namespace threadscope::testing
