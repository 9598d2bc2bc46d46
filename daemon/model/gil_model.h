// Rebuilds who holds the GIL, who waits for it, and per thread how long each waited and held,
// from take_gil/drop_gil records. Pure.
//
// A take is waiting from take_gil's entry to its return; a hold runs from that return to the
// thread's next drop. A drop is forced when the eval loop dropped because a waiter asked (the
// TS_GIL_FORCED mark at the switch code precedes it), voluntary otherwise (a blocking call, a
// thread ending). What this can and cannot know:
//   - holds and waits that began before the attach have no start: the first drop of the holder
//     at attach counts as a drop but adds no hold time (take_gil calls in progress at the attach
//     never report their return);
//   - --gil waits: only the slow path is probed. A wait runs from take_gil's first condition
//     wait to the wait return that finds the GIL free (TS_GIL_WAITED); holds, drops, switches
//     and uncontended takes are not seen;
//   - the overhead budget may switch a --gil full trace to --gil waits and back while attached
//     (TS_MARK_GIL_WAITS_ONLY / TS_MARK_GIL_FULL): at the switch to waits, holds and takes in
//     progress end unseen (counted as cut, no hold time, no drop) and nobody is the holder; at
//     the switch back, waits in progress are cut and a thread's first drop before any take
//     is the hold it had at the switch, like one held at attach;
//   - the overhead budget's duty cycle detaches the GIL probes for most of each period
//     (TS_MARK_TRACE_PAUSED ... TS_MARK_TRACE_RESUMED): at the pause, as at a switch to waits,
//     holds and takes in progress are cut and nobody is the holder; after it, as at a switch back
//     to full, a thread's first drop before any take is a hold of unknown start. Counts are of
//     the traced time only;
//   - a drop site the plan could not find (an inlined copy in a stripped build) shows as a take
//     returning while another thread still holds: counted in `overlaps`, and the previous hold
//     ends there, so per-thread times stay bounded by the wall clock.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "daemon/model/event_decoder.h"
#include "daemon/model/histogram.h"
#include "daemon/model/py_locations.h"

namespace threadscope::model {

struct GilThreadStats {
  uint64_t acquisitions = 0;  // takes whose return was seen
  uint64_t wait_ns = 0;       // take_gil entry to return, summed
  uint64_t hold_ns = 0;       // acquisition to drop, summed (holds whose start was seen)
  uint64_t forced_drops = 0;
  uint64_t voluntary_drops = 0;
  uint64_t first_ns = 0;  // first GIL record of the thread
  std::optional<uint64_t> waiting_since;
  std::optional<uint64_t> holding_since;  // set while this thread holds it
  bool forced_pending = false;            // the switch code ran; the next drop is forced
  bool held_at_attach = false;            // dropped it before any take was seen
  bool take_unseen = false;               // --gil full again after waits only: no take seen since
};

// The overhead budget switched the GIL probes while attached (a --gil full trace).
struct GilModeChange {
  uint64_t ts_ns = 0;
  bool waits_only = false;  // from here: only takes that waited (else every take and drop)
  uint64_t cut_holds = 0;   // holds in progress whose end was not seen
  uint64_t cut_waits = 0;   // takes in progress whose end was not seen
};

// Free-threaded builds: is the GIL on, and since when. CPython 3.13t+ keeps a counter,
// gil->enabled: 0 off, >0 on (transient enables by extension imports nest), INT_MAX on for good
// (PYTHON_GIL=1, -X gil=1, or an imported module not marked free-threading safe).
enum class GilRuntime {
  kOff,          // no record says otherwise (the build's default; GIL builds stay here too)
  kTransient,    // an extension import turned it on for its init (_PyEval_EnableGILTransient)
  kPermanent,    // an import of a module not marked free-threading safe turned it on for good
  kUnannounced,  // takes seen with no enable: on from start-up (PYTHON_GIL=1, -X gil=1) or
                 // enabled before the attach
};

struct GilChangeEvent {
  // kEnabled / kDisabled: free-threaded builds only (GilRuntime changes).
  enum class Kind { kWaitBegin, kAcquired, kDropped, kEnabled, kDisabled } kind = Kind::kAcquired;
  uint64_t ts_ns = 0;
  pid_t tid = 0;
  uint64_t wait_ns = 0;  // kAcquired: how long the take waited
  uint64_t hold_ns = 0;  // kDropped: how long it was held (0 when its start was not seen)
  bool forced = false;   // kDropped: a forced switch
  std::optional<pid_t> previous_holder;  // kAcquired: who held it before (a switch when != tid)
  PyStack stack;  // kAcquired: the record's stack (GIL stacks on, the wait long enough)
  GilRuntime runtime = GilRuntime::kOff;  // kEnabled: how
};

struct GilModelConfig {
  // A free-threaded build: GIL records mean it was enabled at run time (GilRuntime).
  bool free_threaded = false;
};

class GilModel {
 public:
  explicit GilModel(GilModelConfig config = {}) : config_(config) {}

  // Applies GIL records and thread exits; appends what changed to `out` (may be null).
  void Apply(const DecodedEvent& e, std::vector<GilChangeEvent>* out) { Apply(e, nullptr, out); }
  // `stack`: the record's resolved Python stack, when it carried one.
  void Apply(const DecodedEvent& e, const PyStack* stack, std::vector<GilChangeEvent>* out);

  bool seen() const { return records_ > 0; }
  uint64_t records() const { return records_; }
  std::optional<pid_t> holder() const { return holder_; }
  std::optional<uint64_t> holder_since() const;
  uint64_t switches() const { return switches_; }  // acquisitions by a different thread
  uint64_t acquisitions() const { return acquisitions_; }
  uint64_t forced_switches() const { return forced_drops_; }
  uint64_t overlaps() const { return overlaps_; }
  uint64_t unmatched_drops() const { return unmatched_drops_; }
  // --gil waits: takes that waited and then got the GIL (TS_GIL_WAITED).
  uint64_t waited_takes() const { return waited_takes_; }
  // The overhead budget's switches of the GIL probes, oldest first (bounded), and whether only
  // waits are traced now.
  const std::vector<GilModeChange>& mode_changes() const { return mode_changes_; }
  bool waits_only() const { return waits_only_; }
  uint64_t cut_holds() const { return cut_holds_; }
  uint64_t cut_waits() const { return cut_waits_; }
  uint64_t pauses() const { return pauses_; }
  const Log2Histogram& wait_histogram() const { return wait_; }
  const Log2Histogram& hold_histogram() const { return hold_; }
  const std::map<pid_t, GilThreadStats>& threads() const { return threads_; }
  // Free-threaded builds: the GIL's run-time state, when it last became enabled (kPermanent,
  // kUnannounced: first seen), and how many transient enables (extension imports) were seen.
  GilRuntime runtime() const { return runtime_; }
  std::optional<uint64_t> enabled_since() const { return enabled_since_; }
  uint64_t transient_enables() const { return transient_enables_; }
  // Threads waiting for the GIL now, longest first: (tid, since).
  std::vector<std::pair<pid_t, uint64_t>> Waiters() const;
  const GilThreadStats* FindThread(pid_t tid) const;

 private:
  GilThreadStats& Thread(pid_t tid, uint64_t ts);
  void EndHold(pid_t tid, GilThreadStats& t, uint64_t ts, bool forced, bool count_drop,
               std::vector<GilChangeEvent>* out);

  GilModelConfig config_;
  uint64_t records_ = 0;
  std::optional<pid_t> holder_;
  std::optional<pid_t> last_holder_;
  uint64_t switches_ = 0;
  uint64_t acquisitions_ = 0;
  uint64_t forced_drops_ = 0;
  uint64_t overlaps_ = 0;
  uint64_t unmatched_drops_ = 0;
  uint64_t waited_takes_ = 0;
  Log2Histogram wait_;
  Log2Histogram hold_;
  std::map<pid_t, GilThreadStats> threads_;
  static constexpr size_t kMaxThreads = 16384;
  std::deque<pid_t> exited_;  // oldest first: whose rows go first past kMaxThreads
  GilRuntime runtime_ = GilRuntime::kOff;
  std::optional<uint64_t> enabled_since_;
  uint64_t transient_depth_ = 0;
  bool transient_pending_ = false;  // an enable entered, its take not seen yet
  uint64_t transient_enables_ = 0;

  void SwitchMode(bool waits_only, uint64_t ts);
  // TS_MARK_TRACE_PAUSED / TS_MARK_TRACE_RESUMED: the overhead budget's duty cycle.
  void Pause(uint64_t ts);
  void Resume();
  uint64_t pauses_ = 0;
  std::vector<GilModeChange> mode_changes_;
  bool waits_only_ = false;
  uint64_t cut_holds_ = 0;
  uint64_t cut_waits_ = 0;

  void SetRuntime(GilRuntime r, uint64_t ts, pid_t tid, std::vector<GilChangeEvent>* out);
};

}  // namespace threadscope::model
