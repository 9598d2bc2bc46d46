// The trace settings: the one check of AttachOptions the daemon and the CLI share.
#include "settings/trace_settings.h"

#include <gtest/gtest.h>

namespace threadscope::settings {
namespace {

std::string Error(const v1::AttachOptions& options, const SettingsLimits& limits = {}) {
  auto s = ValidateAttachOptions(options, limits);
  EXPECT_FALSE(s.ok());
  if (s.ok()) return "";
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  return s.status().message();
}

TEST(SettingsTest, EmptyOptionsAreTheDefaults) {
  auto s = ValidateAttachOptions({});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->ring_buffer_bytes, kDefaultRingBufferBytes);
  EXPECT_EQ(s->lease_seconds, 0u);
  EXPECT_EQ(s->locks, LockMode::kContended);
  EXPECT_EQ(s->lock_threshold_ns, 0u);
  EXPECT_EQ(s->lock_stack_frames, kMaxStackFrames);  // unset: full stacks
  EXPECT_EQ(s->acquire_stack_frames, 0);
  EXPECT_TRUE(s->gil);                                // unset: on
  EXPECT_EQ(s->gil_stack_frames, 0);
  EXPECT_EQ(s->gil_stack_threshold_ns, kDefaultGilStackThresholdNs);  // 0: the default
  EXPECT_TRUE(s->labels.empty());
}

TEST(SettingsTest, EveryFieldIsCarried) {
  v1::AttachOptions o;
  o.set_ring_buffer_bytes(1u << 20);
  o.set_lease_seconds(40);
  o.set_locks(v1::LOCK_TRACING_ALL);
  o.set_lock_threshold_ns(2000);
  o.set_lock_stack_frames(0);  // set to 0: stacks off, not the default
  o.set_acquire_stack_frames(3);
  o.set_gil(false);
  o.set_gil_stack_frames(5);
  o.set_gil_stack_threshold_ns(7000);
  (*o.mutable_labels())["service"] = "api";
  auto s = ValidateAttachOptions(o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->ring_buffer_bytes, 1u << 20);
  EXPECT_EQ(s->lease_seconds, 40u);
  EXPECT_EQ(s->locks, LockMode::kAll);
  EXPECT_EQ(s->lock_threshold_ns, 2000u);
  EXPECT_EQ(s->lock_stack_frames, 0);
  EXPECT_EQ(s->acquire_stack_frames, 3);
  EXPECT_FALSE(s->gil);
  EXPECT_EQ(s->gil_stack_frames, 5);
  EXPECT_EQ(s->gil_stack_threshold_ns, 7000u);
  EXPECT_EQ(s->labels.at("service"), "api");
}

TEST(SettingsTest, LockModesRoundTrip) {
  for (LockMode m : {LockMode::kOff, LockMode::kContended, LockMode::kAll}) {
    EXPECT_EQ(ParseLockMode(LockModeName(m)), m);
    v1::AttachOptions o;
    o.set_locks(ToProto(m));
    auto s = ValidateAttachOptions(o);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->locks, m);
  }
  EXPECT_FALSE(ParseLockMode("sometimes"));
  EXPECT_FALSE(ParseLockMode(""));
}

TEST(SettingsTest, GilModesAndTheBudgetAreCarried) {
  for (GilMode m : {GilMode::kWaits, GilMode::kFull}) {
    EXPECT_EQ(ParseGilMode(GilModeName(m)), m);
    v1::AttachOptions o;
    o.set_gil_mode(ToProto(m));
    auto s = ValidateAttachOptions(o);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->gil_mode, m);
  }
  EXPECT_FALSE(ParseGilMode("on"));  // the CLI's alias, not a mode
  auto unset = ValidateAttachOptions({});
  ASSERT_TRUE(unset.ok());
  EXPECT_EQ(unset->gil_mode, GilMode::kWaits);  // the cheap one is the default
  EXPECT_EQ(unset->overhead_budget, 0);         // no budget unless asked
  v1::AttachOptions o;
  o.set_overhead_budget("1%");
  auto s = ValidateAttachOptions(o);
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ(s->overhead_budget, 0.01);
  o.set_overhead_budget("0.005");
  s = ValidateAttachOptions(o);
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ(s->overhead_budget, 0.005);
}

// Each message names the field and the flag, so it reads the same from the CLI and the API.
TEST(SettingsTest, OutOfRangeValuesAreRefusedWithOneMessage) {
  v1::AttachOptions o;
  o.set_ring_buffer_bytes(12345);
  EXPECT_EQ(Error(o), "ring_buffer_bytes (--ring-buffer): must be 0 or a power of two >= 65536, "
                      "got 12345");
  o = {};
  o.set_ring_buffer_bytes(32u << 10);  // a power of two, too small
  EXPECT_NE(Error(o).find("--ring-buffer"), std::string::npos);
  o = {};
  o.set_locks(static_cast<v1::LockTracing>(9));  // open enum: any number arrives
  EXPECT_EQ(Error(o), "locks (--locks): 9 is not one of contended, all, off");
  o = {};
  o.set_lock_stack_frames(9);
  EXPECT_EQ(Error(o), "lock_stack_frames (--lock-stacks): 9 is not in 0-8");
  o = {};
  o.set_acquire_stack_frames(100);
  EXPECT_EQ(Error(o), "acquire_stack_frames (--acquire-stacks): 100 is not in 0-8");
  o = {};
  o.set_gil_stack_frames(9);
  EXPECT_EQ(Error(o), "gil_stack_frames (--gil-stacks): 9 is not in 0-8");
  o = {};
  o.set_gil_mode(static_cast<v1::GilMode>(7));
  EXPECT_EQ(Error(o), "gil_mode (--gil): 7 is not one of waits, full");
  o = {};
  o.set_overhead_budget("lots");
  EXPECT_EQ(Error(o), "overhead_budget (--overhead-budget): overhead budget 'lots' is not a "
                      "number (1%, 0.5%, 0.01)");
  o.set_overhead_budget("0%");
  EXPECT_NE(Error(o).find("not above 0"), std::string::npos);
  o.set_overhead_budget("150%");
  EXPECT_NE(Error(o).find("at most 100%"), std::string::npos);
  EXPECT_EQ(StackFramesOutOfRange("acquire_stack_frames", -1).message(),
            "acquire_stack_frames (--acquire-stacks): -1 is not in 0-8");
  o = {};
  o.set_acquire_stack_frames(kMaxStackFrames);  // the bounds themselves are fine
  o.set_lock_stack_frames(kMaxStackFrames);
  o.set_gil_stack_frames(kMaxStackFrames);
  EXPECT_TRUE(ValidateAttachOptions(o).ok());
}

TEST(SettingsTest, LabelsAreCheckedAgainstTheLimitsGiven) {
  v1::AttachOptions o;
  (*o.mutable_labels())["pid"] = "3";  // threadscope's own
  std::string e = Error(o);
  EXPECT_EQ(e.rfind("labels (--label): ", 0), 0u) << e;
  o = {};
  (*o.mutable_labels())["a"] = "1";
  (*o.mutable_labels())["b"] = "2";
  EXPECT_TRUE(ValidateAttachOptions(o).ok());
  SettingsLimits one;
  one.labels.max_labels = 1;
  EXPECT_NE(Error(o, one).find("at most 1 labels"), std::string::npos);
}

}  // namespace
}  // namespace threadscope::settings
