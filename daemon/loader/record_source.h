// Where a live session's records come from, after Pixie's BCCWrapper: the BPF ring buffer
// (BpfTracer) in the daemon, a fake serving generated batches or a recording in tests. The
// engine's consumer (LiveSession) knows nothing else about BPF, so everything between the ring
// and the model runs without a kernel.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "daemon/common/status.h"

namespace threadscope::loader {

// Called with back-to-back records (probes/threadscope_events.h), as the ring holds them.
using RecordCallback = std::function<void(const uint8_t* data, size_t size)>;

// Probe runs for the target since attach, by how the kernel ran them, in the order of
// enum ts_hit_kind (probes/threadscope_events.h) and budget::HitKind: emulated uprobe,
// single-stepped uprobe, uretprobe, raw tracepoint.
using ProbeHitCounts = std::array<uint64_t, 4>;

class RecordSource {
 public:
  virtual ~RecordSource() = default;
  // Waits up to timeout_ms for records, then delivers every record available. Returns how many
  // records were delivered.
  virtual StatusOr<size_t> Poll(int timeout_ms, const RecordCallback& callback) = 0;
  // Delivers what is available, without waiting.
  virtual StatusOr<size_t> Drain(const RecordCallback& callback) = 0;
  // Records lost before they could be delivered, by ts_lost_source, since the start.
  virtual uint64_t Drops(uint32_t source) const = 0;
  // Stops producing records (removes every probe); what was produced stays readable by Drain.
  virtual void DetachAll() = 0;
  // The overhead budget's no_acquire_stacks stage: false stops the stacks at acquires
  // (--acquire-stacks) while attached, true brings them back. Sources that cannot say
  // Unimplemented; the budget then reports the stage as not applied.
  virtual Status SetAcquireStacks(bool on) {
    (void)on;
    return UnimplementedError("this record source cannot change acquire stacks");
  }
  // The overhead budget's gil_waits stage on a --gil full trace: true traces only the takes that
  // wait (take_gil's slow path), false every take and drop again. The caller marks the switch
  // in the record stream once this returns (records before it are of the old mode). Sources
  // that cannot say Unimplemented; the budget then reports the stage as not applied.
  virtual Status SetGilWaitsOnly(bool on) {
    (void)on;
    return UnimplementedError("this record source cannot switch the GIL probes");
  }
  // Cumulative probe hits for the overhead budget's estimate (records are not hits: probes
  // run without a record). Sources that cannot count say Unimplemented; the budget then counts
  // records as hits.
  virtual StatusOr<ProbeHitCounts> ProbeHits() const {
    return UnimplementedError("this record source does not count probe hits");
  }
  // The overhead budget's duty_cycle stage: true detaches the costly probes (GIL and lock
  // probes; thread lifecycle and lock creation/free stay, so identities stay right), false
  // attaches them again. The caller drains and marks the transition (TS_MARK_TRACE_PAUSED /
  // TS_MARK_TRACE_RESUMED) once this returns. Unimplemented: the stage stays recommended only.
  virtual Status SetTracingPaused(bool paused) {
    (void)paused;
    return UnimplementedError("this record source cannot pause its probes");
  }
};

}  // namespace threadscope::loader
