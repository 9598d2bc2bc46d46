#include "daemon/common/clock.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>

namespace threadscope {

namespace {

uint64_t Now(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

class System final : public Clock {
 public:
  uint64_t MonotonicNowNs() const override { return Now(CLOCK_MONOTONIC); }
  uint64_t RealtimeNowNs() const override { return Now(CLOCK_REALTIME); }
  uint64_t BoottimeNowNs() const override { return Now(CLOCK_BOOTTIME); }
};

}  // namespace

const Clock& SystemClock() {
  static const System* clock = new System();  // never destroyed: used by background threads
  return *clock;
}

int64_t RealtimeMinusMonotonicNs(const Clock& clock) {
  return static_cast<int64_t>(clock.RealtimeNowNs()) -
         static_cast<int64_t>(clock.MonotonicNowNs());
}

uint64_t BootTicksToMonotonicNs(uint64_t ticks, const Clock& clock) {
  static const long kTicksPerSecond = sysconf(_SC_CLK_TCK);
  uint64_t boot_ns = ticks * (1000000000ull / static_cast<uint64_t>(kTicksPerSecond));
  // stat's start time counts from boot including suspend (CLOCK_BOOTTIME). Read MONOTONIC
  // first: the two clocks tick together when nothing was suspended, and the difference must
  // not come out a few nanoseconds negative.
  int64_t mono = static_cast<int64_t>(clock.MonotonicNowNs());
  int64_t suspended = std::max<int64_t>(0, static_cast<int64_t>(clock.BoottimeNowNs()) - mono);
  return boot_ns > static_cast<uint64_t>(suspended) ? boot_ns - static_cast<uint64_t>(suspended)
                                                    : 0;
}

}  // namespace threadscope
