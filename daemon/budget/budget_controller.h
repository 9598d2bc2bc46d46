// The overhead budget (--overhead-budget 1%): what tracing one target costs, estimated as it
// goes, and the stage of tracing that keeps it under the budget. Pure: the engine feeds it
// cumulative counters and the time (its injected clock); the controller answers with a stage.
//
// The estimate is an estimate, and says so everywhere it goes (API, report, metrics): cost =
// sum over probe kinds of (hits/s x per-hit cost) + the daemon's own CPU for this target. The
// per-hit costs are measured on this machine at start-up (Calibration), or the defaults below,
// measured on the development machine (docs/PERFORMANCE.md).
//
// Stages, from the most detail to the least (docs/PERFORMANCE.md "Overhead budget"):
//   kAsAsked        the options the client asked for
//   kGilWaits       GIL: only takes that wait (--gil waits), no probe on uncontended takes/drops
//   kNoAcquireStacks locks: no Python stacks at acquires
//   kLockThreshold  locks: only waits of at least lock_threshold_ns become events
//   kDutyCycle      tracing on for `duty_on` of every `duty_period`, off for the rest
// At kDutyCycle, the last stage, each period is judged by its own average cost (the on part is
// dear, the off part nearly free, so a per-second estimate says little there): a period over
// budget doubles the next period (the on part stays `duty_on`; at most `duty_max_period`), a
// period under `up_fraction` x budget halves it back to `duty_period`; only at `duty_period`
// may the stage step up.
// Over budget for `down_after` (smoothed): one stage down. Under `up_fraction` x budget for
// `up_after`: one stage up; a step up that goes over budget again within `up_after` doubles the
// wait before the next step up (at most `max_backoff`), so a target does not flap.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "daemon/common/status.h"

namespace threadscope::budget {

enum class Stage : uint8_t {
  kAsAsked = 0,
  kGilWaits = 1,
  kNoAcquireStacks = 2,
  kLockThreshold = 3,
  kDutyCycle = 4,
};
inline constexpr int kStages = 5;
const char* StageName(Stage stage);

// What probes cost, by kind: a uprobe trap on an emulated instruction, one that is
// single-stepped, a uretprobe, a raw tracepoint hit. Nanoseconds of the traced program's CPU
// per hit, including the BPF program.
enum class HitKind : uint8_t { kUprobe, kUprobeSingleStep, kUretprobe, kTracepoint };
inline constexpr int kHitKinds = 4;

struct Calibration {
  // Defaults: docs/PERFORMANCE.md (uprobe ~0.8 us per take and drop on the development
  // machine; a single-stepped site ~10x an emulated one; a uretprobe about two traps).
  std::array<double, kHitKinds> ns_per_hit = {800, 8000, 1600, 150};
  bool measured = false;  // true: measured on this machine at start-up
  std::string source = "defaults (docs/PERFORMANCE.md)";
};

// Parses "1%", "0.5%", "0.01" (a share of one core). Refuses <= 0 and > 100%.
StatusOr<double> ParseBudget(const std::string& text);

struct BudgetConfig {
  double budget = 0.01;                    // share of one core
  double up_fraction = 0.5;                // step up when the estimate is below this x budget
  uint64_t down_after_ns = 2'000'000'000;  // over budget this long (smoothed): step down
  uint64_t up_after_ns = 10'000'000'000;   // under up_fraction x budget this long: step up
  uint64_t max_backoff_ns = 300'000'000'000;
  double smoothing = 0.5;            // EWMA weight of the newest interval
  Stage lowest = Stage::kDutyCycle;  // the cheapest stage it may go to
  // Stages passed over, by index: those that would change nothing for this trace (gil_waits on
  // a --gil waits trace, no_acquire_stacks without acquire stacks, lock_threshold: recommended
  // only), so that a target over budget reaches a stage that lowers its cost without waiting
  // through stages that do not.
  std::array<bool, kStages> skip{};
  // Duty cycle (kDutyCycle): traced this long of every period.
  uint64_t duty_on_ns = 1'000'000'000;
  uint64_t duty_period_ns = 10'000'000'000;
  // The longest period a busy target's duty cycle stretches to (on 1 s of every 160 s: 0.6%).
  uint64_t duty_max_period_ns = 160'000'000'000;
};

// Cumulative counters of one target since attach.
struct Counters {
  std::array<uint64_t, kHitKinds> hits{};  // probe hits by kind
  uint64_t daemon_cpu_ns = 0;              // the daemon's CPU spent on this target
};

struct Estimate {
  double share = 0;         // estimated cost, share of one core (smoothed)
  double probes_share = 0;  // ... of which probe hits in the target
  double daemon_share = 0;  // ... of which the daemon's own work
  bool estimated = true;    // always: hit counts x calibrated costs, never a measurement
};

struct Decision {
  Stage stage = Stage::kAsAsked;
  bool changed = false;
  // At kDutyCycle: the period changed (not a stage change; `why` says it).
  bool duty_changed = false;
  // kDutyCycle: whether the probes should be live now.
  bool tracing_on = true;
  std::string why;  // one line, for the log and status
};

class BudgetController {
 public:
  BudgetController(BudgetConfig config, Calibration calibration);

  // Feeds the counters at `now_ns` (monotonic); returns the stage to trace at.
  Decision Update(uint64_t now_ns, const Counters& c);

  Stage stage() const { return stage_; }
  const Estimate& estimate() const { return estimate_; }
  const BudgetConfig& config() const { return config_; }
  const Calibration& calibration() const { return calibration_; }
  uint64_t stage_changes() const { return changes_; }
  // At kDutyCycle: the period now (config duty_period_ns, or longer for a busy target).
  uint64_t duty_period_ns() const { return duty_period_ns_; }

 private:
  bool DutyOn(uint64_t now_ns) const;
  // The next stage down (+1) or up (-1) that is not skipped, within [as_asked, lowest].
  std::optional<Stage> NextStage(int direction) const;
  // The estimated cost of everything counted so far, in ns of CPU.
  double CostNs(const Counters& c) const;
  // At kDutyCycle, at the end of each period: stretches or shrinks the next one by its average.
  void JudgePeriod(uint64_t now_ns, const Counters& c, Decision* d);

  BudgetConfig config_;
  Calibration calibration_;
  Stage stage_ = Stage::kAsAsked;
  Estimate estimate_;
  std::optional<uint64_t> last_ns_;
  Counters last_;
  bool have_rate_ = false;
  std::optional<uint64_t> over_since_, under_since_;
  uint64_t stage_since_ = 0;
  uint64_t up_wait_ns_;
  std::optional<uint64_t> last_up_ns_;
  uint64_t duty_epoch_ = 0;
  uint64_t duty_period_ns_;
  double duty_period_cost_ns_ = 0;  // CostNs at duty_epoch_
  uint64_t changes_ = 0;
};

}  // namespace threadscope::budget
