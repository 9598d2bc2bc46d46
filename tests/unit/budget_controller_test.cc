// The overhead budget's controller, driven by hand: time and counters are what the test says.
#include "daemon/budget/budget_controller.h"

#include <gtest/gtest.h>

namespace threadscope::budget {
namespace {

constexpr uint64_t kS = 1'000'000'000;

class BudgetControllerTest : public ::testing::Test {
 protected:
  BudgetControllerTest() : c_(Config(), Calibration{}) {}
  static BudgetConfig Config() {
    BudgetConfig cfg;
    cfg.budget = 0.01;
    cfg.down_after_ns = 2 * kS;
    cfg.up_after_ns = 10 * kS;
    cfg.smoothing = 1.0;  // the newest interval only: the arithmetic stays visible
    return cfg;
  }
  // `seconds` of 1 s updates at `uprobe_hits_per_s` emulated uprobe hits (800 ns each).
  Decision Run(int seconds, uint64_t uprobe_hits_per_s) {
    Decision d;
    for (int i = 0; i < seconds; ++i) {
      now_ += kS;
      counters_.hits[static_cast<int>(HitKind::kUprobe)] += uprobe_hits_per_s;
      d = c_.Update(now_, counters_);
      if (d.changed) changes_.push_back(d.stage);
    }
    return d;
  }
  BudgetController c_;
  uint64_t now_ = 1000 * kS;
  Counters counters_;
  std::vector<Stage> changes_;
};

TEST(BudgetParse, PercentOrShare) {
  EXPECT_DOUBLE_EQ(*ParseBudget("1%"), 0.01);
  EXPECT_DOUBLE_EQ(*ParseBudget("0.5%"), 0.005);
  EXPECT_DOUBLE_EQ(*ParseBudget("0.02"), 0.02);
  EXPECT_FALSE(ParseBudget("0%").ok());
  EXPECT_FALSE(ParseBudget("150%").ok());
  EXPECT_FALSE(ParseBudget("abc").ok());
  EXPECT_FALSE(ParseBudget("").ok());
}

TEST_F(BudgetControllerTest, EstimateIsHitsTimesCostPerSecondAndSaysItIsOne) {
  c_.Update(now_, counters_);
  Run(1, 10000);  // 10,000 x 800 ns in 1 s = 0.8% of a core
  EXPECT_NEAR(c_.estimate().share, 0.008, 1e-9);
  EXPECT_TRUE(c_.estimate().estimated);
  EXPECT_EQ(c_.stage(), Stage::kAsAsked);
}

TEST_F(BudgetControllerTest, DaemonCpuCounts) {
  c_.Update(now_, counters_);
  now_ += kS;
  counters_.daemon_cpu_ns += 20'000'000;  // 20 ms of daemon CPU in 1 s: 2%
  c_.Update(now_, counters_);
  EXPECT_NEAR(c_.estimate().daemon_share, 0.02, 1e-9);
  EXPECT_NEAR(c_.estimate().share, 0.02, 1e-9);
}

TEST_F(BudgetControllerTest, StepsDownOneStagePerIntervalOverBudget) {
  c_.Update(now_, counters_);
  Run(1, 100000);  // 8%: over
  EXPECT_EQ(c_.stage(), Stage::kAsAsked);  // not yet: over for down_after first
  Run(2, 100000);
  EXPECT_EQ(c_.stage(), Stage::kGilWaits);
  Run(2, 100000);
  EXPECT_EQ(c_.stage(), Stage::kNoAcquireStacks);
  Run(20, 100000);
  EXPECT_EQ(c_.stage(), Stage::kDutyCycle);  // the last stage, and no further
  EXPECT_EQ(changes_, (std::vector<Stage>{Stage::kGilWaits, Stage::kNoAcquireStacks,
                                          Stage::kLockThreshold, Stage::kDutyCycle}));
}

TEST_F(BudgetControllerTest, InBetweenStaysPut) {
  c_.Update(now_, counters_);
  Run(3, 100000);
  ASSERT_EQ(c_.stage(), Stage::kGilWaits);
  Run(60, 9000);  // 0.72%: under budget, above half of it
  EXPECT_EQ(c_.stage(), Stage::kGilWaits);
}

TEST_F(BudgetControllerTest, StepsBackUpWhenTheRateFalls) {
  c_.Update(now_, counters_);
  Run(5, 100000);
  ASSERT_EQ(c_.stage(), Stage::kNoAcquireStacks);
  Run(10, 100);  // quiet, but not for up_after (10 s from the first quiet update) yet
  EXPECT_EQ(c_.stage(), Stage::kNoAcquireStacks);
  Run(1, 100);
  EXPECT_EQ(c_.stage(), Stage::kGilWaits);
  Run(10, 100);
  EXPECT_EQ(c_.stage(), Stage::kAsAsked);
}

TEST_F(BudgetControllerTest, AStepUpThatGoesOverAgainBacksOff) {
  c_.Update(now_, counters_);
  Run(3, 100000);
  ASSERT_EQ(c_.stage(), Stage::kGilWaits);
  Run(11, 100);  // up after 10 s
  ASSERT_EQ(c_.stage(), Stage::kAsAsked);
  Run(3, 100000);  // over again at once
  ASSERT_EQ(c_.stage(), Stage::kGilWaits);
  Run(11, 100);  // the next step up now waits 20 s
  EXPECT_EQ(c_.stage(), Stage::kGilWaits);
  Run(10, 100);
  EXPECT_EQ(c_.stage(), Stage::kAsAsked);
}

TEST_F(BudgetControllerTest, DutyCycleTracesPartOfEachPeriod) {
  BudgetConfig cfg = Config();
  cfg.lowest = Stage::kDutyCycle;
  cfg.up_after_ns = 1000 * kS;
  BudgetController c(cfg, Calibration{});
  uint64_t now = 0;
  Counters counters;
  c.Update(now, counters);
  Decision d;
  for (int i = 0; i < 12 && c.stage() != Stage::kDutyCycle; ++i) {
    now += kS;
    counters.hits[0] += 100000;
    d = c.Update(now, counters);
  }
  ASSERT_EQ(c.stage(), Stage::kDutyCycle);
  EXPECT_TRUE(d.tracing_on);  // the period starts traced
  int on = 0;
  for (int i = 0; i < 10; ++i) {
    now += kS;
    on += c.Update(now, counters).tracing_on;
  }
  EXPECT_EQ(on, 1);  // 1 s of every 10 s
}

TEST_F(BudgetControllerTest, ABusyTargetsDutyCycleStretchesAndComesBack) {
  BudgetConfig cfg = Config();
  BudgetController c(cfg, Calibration{});
  uint64_t now = 0;
  Counters counters;
  c.Update(now, counters);
  // 200k hits/s x 800 ns = 16% of a core while traced; hits only while the probes are on.
  auto run = [&](int seconds, uint64_t hits_per_s) {
    bool on = true;
    for (int i = 0; i < seconds; ++i) {
      now += kS;
      if (on) counters.hits[0] += hits_per_s;
      Decision d = c.Update(now, counters);
      on = d.tracing_on;
    }
  };
  run(12, 200000);
  ASSERT_EQ(c.stage(), Stage::kDutyCycle);
  EXPECT_EQ(c.duty_period_ns(), 10 * kS);
  run(10, 200000);  // a period at 1 s of 10 s: 1.6% > 1%
  EXPECT_EQ(c.duty_period_ns(), 20 * kS);
  run(60, 200000);  // 1 s of 20 s: 0.8%, under the budget, above half of it: stays
  EXPECT_EQ(c.duty_period_ns(), 20 * kS);
  EXPECT_EQ(c.stage(), Stage::kDutyCycle);
  run(40, 0);  // quiet: a whole quiet period, and the period shrinks back first...
  EXPECT_EQ(c.duty_period_ns(), 10 * kS);
  EXPECT_EQ(c.stage(), Stage::kDutyCycle);
  run(11, 0);  // ...then the stage steps up
  EXPECT_EQ(c.stage(), Stage::kLockThreshold);
}

TEST_F(BudgetControllerTest, StagesThatChangeNothingArePassedOver) {
  BudgetConfig cfg = Config();
  cfg.skip[static_cast<int>(Stage::kNoAcquireStacks)] = true;
  cfg.skip[static_cast<int>(Stage::kLockThreshold)] = true;
  BudgetController c(cfg, Calibration{});
  uint64_t now = 0;
  Counters counters;
  c.Update(now, counters);
  std::vector<Stage> seen;
  for (int i = 0; i < 12; ++i) {
    now += kS;
    counters.hits[0] += 100000;  // 8%: over
    if (Decision d = c.Update(now, counters); d.changed) seen.push_back(d.stage);
  }
  EXPECT_EQ(seen, (std::vector<Stage>{Stage::kGilWaits, Stage::kDutyCycle}));
  for (int i = 0; i < 70; ++i) {  // quiet: up the same way (the duty period first shrinks back)
    now += kS;
    if (Decision d = c.Update(now, counters); d.changed) seen.push_back(d.stage);
  }
  EXPECT_EQ(seen, (std::vector<Stage>{Stage::kGilWaits, Stage::kDutyCycle, Stage::kGilWaits,
                                      Stage::kAsAsked}));
}

TEST_F(BudgetControllerTest, LowestStageIsRespected) {
  BudgetConfig cfg = Config();
  cfg.lowest = Stage::kGilWaits;
  BudgetController c(cfg, Calibration{});
  uint64_t now = 0;
  Counters counters;
  c.Update(now, counters);
  for (int i = 0; i < 30; ++i) {
    now += kS;
    counters.hits[0] += 100000;
    c.Update(now, counters);
  }
  EXPECT_EQ(c.stage(), Stage::kGilWaits);
}

// Realistic mixes, at costs like the ones measured at start-up on the development machine
// (emulated ~0.5 us, single-stepped ~1.5 us, uretprobe ~1 us, raw tracepoint ~0.1 us).
Calibration Measured() {
  Calibration cal;
  cal.ns_per_hit = {500, 1500, 1000, 100};
  cal.measured = true;
  cal.source = "measured at start-up: test";
  return cal;
}

// The hand-off bench under auto-attach defaults (--gil waits, --locks contended): ~1,500
// waiting takes a second, each a take-begin uprobe plus a single-stepped wait-return site,
// ~3,000 syscalls of the target through sys_enter, and 3 ms a second of daemon CPU: 0.6%, under
// 1%: the trace stays as asked.
TEST(BudgetControllerMix, HandoffUnderGilWaitsStaysAsAsked) {
  BudgetConfig cfg;
  cfg.budget = 0.01;
  BudgetController c(cfg, Measured());
  uint64_t now = 0;
  Counters counters;
  c.Update(now, counters);
  for (int i = 0; i < 30; ++i) {
    now += kS;
    counters.hits[static_cast<int>(HitKind::kUprobe)] += 1500;
    counters.hits[static_cast<int>(HitKind::kUprobeSingleStep)] += 1500;
    counters.hits[static_cast<int>(HitKind::kTracepoint)] += 3000;
    counters.daemon_cpu_ns += 3'000'000;
    c.Update(now, counters);
  }
  EXPECT_NEAR(c.estimate().share, 0.0063, 1e-4);
  EXPECT_EQ(c.stage(), Stage::kAsAsked);
  EXPECT_EQ(c.stage_changes(), 0u);
}

// --gil full on a GIL-bound program: 200,000 takes a second, each a take-begin uprobe, a
// take-end uretprobe and a drop uprobe: 0.4 s of CPU a second, 40%: steps down.
TEST(BudgetControllerMix, GilFullAt200kTakesStepsDown) {
  BudgetConfig cfg;
  cfg.budget = 0.01;
  BudgetController c(cfg, Measured());
  uint64_t now = 0;
  Counters counters;
  c.Update(now, counters);
  for (int i = 0; i < 3; ++i) {
    now += kS;
    counters.hits[static_cast<int>(HitKind::kUprobe)] += 400000;
    counters.hits[static_cast<int>(HitKind::kUretprobe)] += 200000;
    c.Update(now, counters);
  }
  EXPECT_NEAR(c.estimate().probes_share, 0.4, 1e-9);
  EXPECT_EQ(c.stage(), Stage::kGilWaits);
}

// Single-stepped sites weigh more than emulated ones at the same rate.
TEST(BudgetControllerMix, SingleSteppedHitsCostTheirOwnFigure) {
  BudgetConfig cfg;
  cfg.smoothing = 1.0;
  BudgetController emulated(cfg, Measured()), stepped(cfg, Measured());
  Counters a, b;
  emulated.Update(0, a);
  stepped.Update(0, b);
  a.hits[static_cast<int>(HitKind::kUprobe)] = 10000;
  b.hits[static_cast<int>(HitKind::kUprobeSingleStep)] = 10000;
  emulated.Update(kS, a);
  stepped.Update(kS, b);
  EXPECT_NEAR(emulated.estimate().share, 0.005, 1e-9);
  EXPECT_NEAR(stepped.estimate().share, 0.015, 1e-9);
}

}  // namespace
}  // namespace threadscope::budget
