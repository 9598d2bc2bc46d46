// The trace settings: what a client asks of a trace, validated once.
//
// A knob (--acquire-stacks, say) has one wire form, a field of the API's AttachOptions, and one
// validated form, TraceSettings, made by ValidateAttachOptions. The daemon calls it on every
// Attach; the CLI calls it on the AttachOptions it built from its flags before it connects, so
// a bad value gets the same message whether the CLI or a raw API client sent it. Downstream
// (the live session, the probe planner) takes TraceSettings; what is derived from a settings
// value and a build (which probes, how many frames the BPF side records) lives in the plan.
//
// Adding a knob: a field in AttachOptions (proto/threadscope/v1/threadscope.proto), a member
// here, its check and copy in ValidateAttachOptions, its test in tests/unit/settings_test.cc,
// the flag in client/cli_options.cc, and its use downstream (DEVELOPERS.md, "Adding a knob").
//
// Policies that depend on who asks (ring buffer and lease limits for unprivileged callers) are
// the daemon's, not a setting's validity: they stay in engine::SessionManager.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/common/labels.h"
#include "daemon/common/status.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::settings {

// Python frames a stack holds at most: TS_PY_MAX_FRAMES of the record ABI
// (probes/threadscope_events.h; the loader asserts they agree). Kept here as a number so that
// this library needs nothing of the ABI.
inline constexpr uint32_t kMaxStackFrames = 8;
// The ring buffer when the request leaves it at 0 (DESIGN.md §7: a minute of a busy target's
// contended records; docs/PERFORMANCE.md).
inline constexpr uint32_t kDefaultRingBufferBytes = 16u << 20;
inline constexpr uint32_t kMinRingBufferBytes = 64u << 10;
inline constexpr uint64_t kDefaultGilStackThresholdNs = 1000000;  // 1 ms

// How much of the lock machinery to trace (--locks, AttachOptions.locks).
enum class LockMode {
  kOff,        // thread lifecycle only
  kContended,  // waits, wakers, lock creation: only what happens under contention (default)
  kAll,        // every acquire and release as well
};
// "off", "contended", "all": the CLI's spelling and Target.lock_mode's.
const char* LockModeName(LockMode mode);
std::optional<LockMode> ParseLockMode(std::string_view name);
v1::LockTracing ToProto(LockMode mode);

// How much of the GIL to trace (--gil, AttachOptions.gil_mode).
enum class GilMode {
  // Only takes that wait (the default): take_gil's condition wait and its return, so an
  // uncontended take or drop runs no probe. Exact per-thread waits; no holds, no drops.
  kWaits,
  // Every take and drop (take_gil entry/return, every drop_gil copy, forced switches): exact
  // holds and switches, at ~0.8 us of uprobe traps per take and drop (docs/PERFORMANCE.md).
  kFull,
};
// "waits", "full": the CLI's spelling and the report's.
const char* GilModeName(GilMode mode);
std::optional<GilMode> ParseGilMode(std::string_view name);
v1::GilMode ToProto(GilMode mode);
// The one spelling of the GIL option, for --gil and a rule's `gil =`: waits, full, off, and
// on (the old spelling of waits); true/false as on/off. False when `value` is none of these
// (`out` unchanged).
bool SetGilOption(std::string_view value, v1::AttachOptions* out);
inline constexpr const char* kGilOptionValues = "waits, full, on, off";

struct TraceSettings {
  uint32_t ring_buffer_bytes = kDefaultRingBufferBytes;
  uint32_t lease_seconds = 0;  // 0: the daemon's default lease
  LockMode locks = LockMode::kContended;
  uint64_t lock_threshold_ns = 0;  // lock waits shorter than this make no events
  // Python frames recorded where locks are waited for and created; 0 turns stacks off.
  uint8_t lock_stack_frames = kMaxStackFrames;
  // --locks=all: frames recorded at every successful acquire (where owners took their locks).
  // Off by default: ~0.9 us per acquire for 8 frames, on top of the ~1.2 us the probes cost.
  uint8_t acquire_stack_frames = 0;
  bool gil = true;
  GilMode gil_mode = GilMode::kWaits;
  uint8_t gil_stack_frames = 0;  // at take_gil returns that waited at least ...
  uint64_t gil_stack_threshold_ns = kDefaultGilStackThresholdNs;
  std::map<std::string, std::string> labels;  // user labels on the target's metrics
  // --overhead-budget: the share of one core the target's tracing may cost (0.01 = 1%);
  // 0: no budget (the controller does not run).
  double overhead_budget = 0;
};

// What the validation checks against; the daemon passes its configured label limits.
struct SettingsLimits {
  LabelLimits labels;
};

// The one check of a request's options, with the one set of messages. Each message names the
// field and the CLI flag it comes from ("acquire_stack_frames (--acquire-stacks): 9 is not in
// 0-8"). InvalidArgument when a value is out of range.
StatusOr<TraceSettings> ValidateAttachOptions(const v1::AttachOptions& options,
                                              const SettingsLimits& limits = {});

// The message for a stack depth out of range, for values the wire cannot carry (a negative
// flag value) as well as the ones it can. `field` is an AttachOptions field with frames.
Status StackFramesOutOfRange(std::string_view field, int64_t value);

}  // namespace threadscope::settings
