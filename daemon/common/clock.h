// The clocks the engine reads, behind one interface so that tests drive time (after Envoy's
// TimeSource): lease expiry, a snapshot's `now`, attach times and the timestamps of the records
// the engine writes itself all come from an injected Clock, never from the system directly.
//
// Three clocks, because the kernel stamps records with one and reports others:
//   - CLOCK_MONOTONIC: bpf_ktime_get_ns(), so every record timestamp and every interval;
//   - CLOCK_REALTIME: wall time, to show record times as dates;
//   - CLOCK_BOOTTIME: /proc/PID/stat start times count from boot including suspend.
#pragma once

#include <cstdint>

namespace threadscope {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual uint64_t MonotonicNowNs() const = 0;
  virtual uint64_t RealtimeNowNs() const = 0;
  virtual uint64_t BoottimeNowNs() const = 0;
};

// The system's clocks (clock_gettime). Stateless: one instance serves the whole process.
const Clock& SystemClock();

// CLOCK_REALTIME minus CLOCK_MONOTONIC, to turn record timestamps into wall time.
int64_t RealtimeMinusMonotonicNs(const Clock& clock);

// A /proc/PID/stat start time (clock ticks after boot) as CLOCK_MONOTONIC nanoseconds.
uint64_t BootTicksToMonotonicNs(uint64_t ticks, const Clock& clock);

}  // namespace threadscope
