#include "daemon/budget/budget_controller.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace threadscope::budget {

const char* StageName(Stage stage) {
  switch (stage) {
    case Stage::kAsAsked:
      return "as_asked";
    case Stage::kGilWaits:
      return "gil_waits";
    case Stage::kNoAcquireStacks:
      return "no_acquire_stacks";
    case Stage::kLockThreshold:
      return "lock_threshold";
    case Stage::kDutyCycle:
      return "duty_cycle";
  }
  return "as_asked";
}

StatusOr<double> ParseBudget(const std::string& text) {
  std::string s = text;
  bool percent = !s.empty() && s.back() == '%';
  if (percent) s.pop_back();
  char* end = nullptr;
  double v = s.empty() ? 0 : std::strtod(s.c_str(), &end);
  if (s.empty() || !end || *end != '\0') {
    return InvalidArgumentError("overhead budget '" + text.substr(0, 32) +
                                "' is not a number (1%, 0.5%, 0.01)");
  }
  if (percent) v /= 100;
  if (!(v > 0) || v > 1) {
    return InvalidArgumentError("overhead budget '" + text.substr(0, 32) +
                                "' is not above 0 and at most 100%");
  }
  return v;
}

BudgetController::BudgetController(BudgetConfig config, Calibration calibration)
    : config_(config),
      calibration_(std::move(calibration)),
      up_wait_ns_(config.up_after_ns),
      duty_period_ns_(config.duty_period_ns) {}

bool BudgetController::DutyOn(uint64_t now_ns) const {
  if (stage_ != Stage::kDutyCycle || duty_period_ns_ == 0) return true;
  return (now_ns - duty_epoch_) % duty_period_ns_ < config_.duty_on_ns;
}

std::optional<Stage> BudgetController::NextStage(int direction) const {
  for (int i = static_cast<int>(stage_) + direction;
       i >= 0 && i <= static_cast<int>(config_.lowest); i += direction) {
    // as_asked is always a stage; the others only where they change this trace.
    if (i == 0 || !config_.skip[i]) return static_cast<Stage>(i);
  }
  return std::nullopt;
}

double BudgetController::CostNs(const Counters& c) const {
  double ns = static_cast<double>(c.daemon_cpu_ns);
  for (int k = 0; k < kHitKinds; ++k) {
    ns += static_cast<double>(c.hits[k]) * calibration_.ns_per_hit[k];
  }
  return ns;
}

void BudgetController::JudgePeriod(uint64_t now_ns, const Counters& c, Decision* d) {
  if (duty_period_ns_ == 0 || now_ns - duty_epoch_ < duty_period_ns_) return;
  const double cost = CostNs(c);
  const double share = (cost - duty_period_cost_ns_) / static_cast<double>(now_ns - duty_epoch_);
  const uint64_t before = duty_period_ns_;
  if (share > config_.budget) {
    duty_period_ns_ =
        std::min(duty_period_ns_ * 2, std::max(config_.duty_max_period_ns, config_.duty_period_ns));
  } else if (share < config_.up_fraction * config_.budget) {
    duty_period_ns_ = std::max(duty_period_ns_ / 2, config_.duty_period_ns);
    // The stage steps up only after a full `up_after` at its own period.
    if (duty_period_ns_ != before) under_since_ = now_ns;
  }
  // A new period starts now, traced first, at the (new) length.
  duty_epoch_ = now_ns;
  duty_period_cost_ns_ = cost;
  if (duty_period_ns_ != before) {
    d->duty_changed = true;
    char buf[200];
    std::snprintf(buf, sizeof(buf),
                  "estimated %.2f%% of a core over the last duty period (budget %.2f%%): "
                  "traced %.1f s of every %.0f s",
                  100 * share, 100 * config_.budget, config_.duty_on_ns / 1e9,
                  duty_period_ns_ / 1e9);
    d->why = buf;
  }
}

Decision BudgetController::Update(uint64_t now_ns, const Counters& c) {
  Decision d;
  if (last_ns_ && now_ns > *last_ns_) {
    const double dt = static_cast<double>(now_ns - *last_ns_);
    double probes_ns = 0;
    for (int k = 0; k < kHitKinds; ++k) {
      uint64_t hits = c.hits[k] >= last_.hits[k] ? c.hits[k] - last_.hits[k] : 0;
      probes_ns += static_cast<double>(hits) * calibration_.ns_per_hit[k];
    }
    double daemon_ns = c.daemon_cpu_ns >= last_.daemon_cpu_ns
                           ? static_cast<double>(c.daemon_cpu_ns - last_.daemon_cpu_ns)
                           : 0;
    // In a duty cycle only the traced part costs: the rate over the interval is what it costs.
    double probes = probes_ns / dt, daemon = daemon_ns / dt;
    double a = have_rate_ ? config_.smoothing : 1.0;
    estimate_.probes_share = a * probes + (1 - a) * estimate_.probes_share;
    estimate_.daemon_share = a * daemon + (1 - a) * estimate_.daemon_share;
    estimate_.share = estimate_.probes_share + estimate_.daemon_share;
    have_rate_ = true;
  }
  if (!last_ns_) stage_since_ = now_ns;
  last_ns_ = now_ns;
  last_ = c;

  const double budget = config_.budget;
  if (have_rate_ && estimate_.share > budget) {
    under_since_.reset();
    if (!over_since_) over_since_ = now_ns;
    std::optional<Stage> down = NextStage(+1);
    if (now_ns - *over_since_ >= config_.down_after_ns && down) {
      // Over again soon after a step up: wait twice as long before the next one.
      if (last_up_ns_ && now_ns - *last_up_ns_ < up_wait_ns_ + config_.down_after_ns) {
        up_wait_ns_ = std::min(up_wait_ns_ * 2, config_.max_backoff_ns);
      }
      stage_ = *down;
      if (stage_ == Stage::kDutyCycle) {
        duty_epoch_ = now_ns;
        duty_period_ns_ = config_.duty_period_ns;
        duty_period_cost_ns_ = CostNs(c);
      }
      d.changed = true;
      char buf[160];
      std::snprintf(buf, sizeof(buf), "estimated %.2f%% of a core > budget %.2f%%: down to %s",
                    100 * estimate_.share, 100 * budget, StageName(stage_));
      d.why = buf;
      over_since_ = now_ns;  // the next step down needs its own full interval
      stage_since_ = now_ns;
    }
  } else if (have_rate_ && estimate_.share < config_.up_fraction * budget) {
    over_since_.reset();
    if (!under_since_) under_since_ = now_ns;
    // A stretched duty cycle shrinks back to its own period before the stage steps up.
    std::optional<Stage> up = NextStage(-1);
    if (now_ns - *under_since_ >= up_wait_ns_ && up &&
        (stage_ != Stage::kDutyCycle || duty_period_ns_ <= config_.duty_period_ns)) {
      stage_ = *up;
      d.changed = true;
      char buf[160];
      std::snprintf(buf, sizeof(buf), "estimated %.2f%% of a core < %.2f%%: up to %s",
                    100 * estimate_.share, 100 * config_.up_fraction * budget, StageName(stage_));
      d.why = buf;
      last_up_ns_ = now_ns;
      under_since_ = now_ns;
      stage_since_ = now_ns;
    }
  } else {
    over_since_.reset();
    under_since_.reset();
  }
  if (stage_ == Stage::kDutyCycle && !d.changed) JudgePeriod(now_ns, c, &d);
  if (d.changed) ++changes_;
  d.stage = stage_;
  d.tracing_on = DutyOn(now_ns);
  return d;
}

}  // namespace threadscope::budget
