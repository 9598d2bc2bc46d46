// The start-up calibration's figures as the budget's Calibration (the measurement itself needs
// root and a kernel: daemon_test checks it end to end).
#include "daemon/loader/calibrate.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace threadscope::loader {
namespace {

TEST(Calibration, MeasuredFiguresBecomeThePerHitCostsAndSaySo) {
  CalibrationFigures f;
  f.emulated_ns = 500;
  f.single_step_ns = 16600;
  f.uretprobe_ns = 750;
  f.tracepoint_ns = 31;
  budget::Calibration c = CalibrationFrom(f);
  EXPECT_TRUE(c.measured);
  EXPECT_EQ(c.ns_per_hit[static_cast<int>(budget::HitKind::kUprobe)], 500);
  EXPECT_EQ(c.ns_per_hit[static_cast<int>(budget::HitKind::kUprobeSingleStep)], 16600);
  EXPECT_EQ(c.ns_per_hit[static_cast<int>(budget::HitKind::kUretprobe)], 750);
  EXPECT_EQ(c.ns_per_hit[static_cast<int>(budget::HitKind::kTracepoint)], 31);
  EXPECT_EQ(c.source,
            "measured at start-up: emulated uprobe 500 ns, single-stepped uprobe 16600 ns, "
            "uretprobe 750 ns, raw tracepoint (a syscall through sys_enter) 31 ns");
}

TEST(Calibration, AFailedMeasurementGivesTheDefaultsAndWhy) {
  budget::Calibration c =
      CalibrationFrom(StatusOr<CalibrationFigures>(PermissionDeniedError("no CAP_BPF")));
  EXPECT_FALSE(c.measured);
  EXPECT_EQ(c.ns_per_hit, budget::Calibration{}.ns_per_hit);
  EXPECT_NE(c.source.find("defaults"), std::string::npos) << c.source;
  EXPECT_NE(c.source.find("no CAP_BPF"), std::string::npos) << c.source;
}

// Without root the measurement fails, and says so, rather than guessing.
TEST(Calibration, WithoutPrivilegesTheMeasurementFails) {
  if (geteuid() == 0) GTEST_SKIP() << "runs as root";
  EXPECT_FALSE(MeasureProbeCosts().ok());
}

}  // namespace
}  // namespace threadscope::loader
