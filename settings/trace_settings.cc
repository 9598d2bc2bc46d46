#include "settings/trace_settings.h"

#include "daemon/budget/budget_controller.h"

namespace threadscope::settings {

namespace {

bool IsPowerOfTwo(uint32_t v) { return v && !(v & (v - 1)); }

// The CLI flag each field comes from, so one message serves both sides.
std::string_view FlagOf(std::string_view field) {
  if (field == "ring_buffer_bytes") return "--ring-buffer";
  if (field == "locks") return "--locks";
  if (field == "lock_stack_frames") return "--lock-stacks";
  if (field == "acquire_stack_frames") return "--acquire-stacks";
  if (field == "gil_stack_frames") return "--gil-stacks";
  if (field == "labels") return "--label";
  if (field == "gil_mode") return "--gil";
  if (field == "overhead_budget") return "--overhead-budget";
  return "";
}

Status Invalid(std::string_view field, const std::string& problem) {
  return InvalidArgumentError(std::string(field) + " (" + std::string(FlagOf(field)) + "): " +
                              problem);
}

}  // namespace

const char* LockModeName(LockMode mode) {
  switch (mode) {
    case LockMode::kOff: return "off";
    case LockMode::kContended: return "contended";
    case LockMode::kAll: return "all";
  }
  return "contended";
}

std::optional<LockMode> ParseLockMode(std::string_view name) {
  if (name == "off") return LockMode::kOff;
  if (name == "contended") return LockMode::kContended;
  if (name == "all") return LockMode::kAll;
  return std::nullopt;
}

v1::LockTracing ToProto(LockMode mode) {
  switch (mode) {
    case LockMode::kOff: return v1::LOCK_TRACING_OFF;
    case LockMode::kContended: return v1::LOCK_TRACING_CONTENDED;
    case LockMode::kAll: return v1::LOCK_TRACING_ALL;
  }
  return v1::LOCK_TRACING_CONTENDED;
}

const char* GilModeName(GilMode mode) {
  switch (mode) {
    case GilMode::kWaits: return "waits";
    case GilMode::kFull: return "full";
  }
  return "waits";
}

std::optional<GilMode> ParseGilMode(std::string_view name) {
  if (name == "waits") return GilMode::kWaits;
  if (name == "full") return GilMode::kFull;
  return std::nullopt;
}

v1::GilMode ToProto(GilMode mode) {
  return mode == GilMode::kFull ? v1::GIL_MODE_FULL : v1::GIL_MODE_WAITS;
}

bool SetGilOption(std::string_view value, v1::AttachOptions* out) {
  if (value == "off" || value == "false") {
    out->set_gil(false);
    return true;
  }
  std::optional<GilMode> mode =
      value == "on" || value == "true" ? std::optional(GilMode::kWaits) : ParseGilMode(value);
  if (!mode) return false;
  out->set_gil(true);
  out->set_gil_mode(ToProto(*mode));
  return true;
}

Status StackFramesOutOfRange(std::string_view field, int64_t value) {
  return Invalid(field, std::to_string(value) + " is not in 0-" + std::to_string(kMaxStackFrames));
}

StatusOr<TraceSettings> ValidateAttachOptions(const v1::AttachOptions& options,
                                              const SettingsLimits& limits) {
  TraceSettings s;
  if (uint32_t ring = options.ring_buffer_bytes(); ring != 0) {
    if (ring < kMinRingBufferBytes || !IsPowerOfTwo(ring)) {
      return Invalid("ring_buffer_bytes",
                     "must be 0 or a power of two >= 65536, got " + std::to_string(ring));
    }
    s.ring_buffer_bytes = ring;
  }
  s.lease_seconds = options.lease_seconds();
  // Proto3 enums are open: a newer or hostile client can send any number.
  switch (static_cast<int>(options.locks())) {
    case v1::LOCK_TRACING_UNSPECIFIED:
    case v1::LOCK_TRACING_CONTENDED: s.locks = LockMode::kContended; break;
    case v1::LOCK_TRACING_OFF: s.locks = LockMode::kOff; break;
    case v1::LOCK_TRACING_ALL: s.locks = LockMode::kAll; break;
    default:
      return Invalid("locks", std::to_string(static_cast<int>(options.locks())) +
                                  " is not one of contended, all, off");
  }
  s.lock_threshold_ns = options.lock_threshold_ns();
  if (options.has_lock_stack_frames()) {
    if (options.lock_stack_frames() > kMaxStackFrames) {
      return StackFramesOutOfRange("lock_stack_frames", options.lock_stack_frames());
    }
    s.lock_stack_frames = static_cast<uint8_t>(options.lock_stack_frames());
  }
  if (options.acquire_stack_frames() > kMaxStackFrames) {
    return StackFramesOutOfRange("acquire_stack_frames", options.acquire_stack_frames());
  }
  s.acquire_stack_frames = static_cast<uint8_t>(options.acquire_stack_frames());
  s.gil = !options.has_gil() || options.gil();
  switch (static_cast<int>(options.gil_mode())) {
    case v1::GIL_MODE_UNSPECIFIED:
    case v1::GIL_MODE_WAITS: s.gil_mode = GilMode::kWaits; break;
    case v1::GIL_MODE_FULL: s.gil_mode = GilMode::kFull; break;
    default:
      return Invalid("gil_mode", std::to_string(static_cast<int>(options.gil_mode())) +
                                     " is not one of waits, full");
  }
  if (options.gil_stack_frames() > kMaxStackFrames) {
    return StackFramesOutOfRange("gil_stack_frames", options.gil_stack_frames());
  }
  s.gil_stack_frames = static_cast<uint8_t>(options.gil_stack_frames());
  if (options.gil_stack_threshold_ns()) s.gil_stack_threshold_ns = options.gil_stack_threshold_ns();
  s.labels.insert(options.labels().begin(), options.labels().end());
  if (Status st = ValidateLabels(s.labels, limits.labels); !st.ok()) {
    return Invalid("labels", st.message());
  }
  if (!options.overhead_budget().empty()) {
    StatusOr<double> budget = budget::ParseBudget(options.overhead_budget());
    if (!budget.ok()) return Invalid("overhead_budget", budget.status().message());
    s.overhead_budget = *budget;
  }
  return s;
}

}  // namespace threadscope::settings
