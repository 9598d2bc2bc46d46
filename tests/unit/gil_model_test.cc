#include "daemon/model/gil_model.h"

#include <gtest/gtest.h>

#include "daemon/model/trace_model.h"
#include "tests/unit/model_harness.h"

namespace threadscope::model {
namespace {

using testing::EventGenerator;

constexpr uint32_t kT1 = 1001;
constexpr uint32_t kT2 = 1002;
constexpr uint64_t kMs = 1'000'000;

class GilModelTest : public testing::ModelTest {
 protected:
  std::vector<GilChangeEvent> Feed(const std::string& record) {
    return FeedRecords({record}).gil;
  }
  // take_gil entered, `wait` later it returns.
  void Take(uint32_t tid, uint64_t wait) {
    Feed(g_.Gil(tid, TS_GIL_TAKE_BEGIN));
    g_.Advance(wait);
    Feed(g_.Gil(tid, TS_GIL_TAKE_END));
  }
  const GilModel& gil() { return model_.gil(); }
  const GilThreadStats& T(uint32_t tid) {
    const GilThreadStats* t = gil().FindThread(tid);
    EXPECT_NE(t, nullptr) << tid;
    static GilThreadStats none;
    return t ? *t : none;
  }
};

// --gil waits: the first condition wait begins a wait, TS_GIL_WAITED ends it; nobody becomes
// the holder (holds are not traced) and a wait that began before the attach is not counted.
TEST_F(GilModelTest, WaitsModeCountsWaitedTakesOnly) {
  Feed(g_.Gil(kT1, TS_GIL_TAKE_BEGIN));
  g_.Advance(3 * kMs);
  auto changes = Feed(g_.Gil(kT1, TS_GIL_WAITED));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].kind, GilChangeEvent::Kind::kAcquired);
  EXPECT_EQ(changes[0].wait_ns, 3 * kMs + 1000);
  EXPECT_EQ(T(kT1).wait_ns, 3 * kMs + 1000);
  EXPECT_EQ(T(kT1).hold_ns, 0u);
  EXPECT_EQ(T(kT1).acquisitions, 1u);
  EXPECT_FALSE(gil().holder().has_value());
  EXPECT_EQ(gil().waited_takes(), 1u);
  EXPECT_EQ(gil().switches(), 0u);
  EXPECT_TRUE(Feed(g_.Gil(kT2, TS_GIL_WAITED)).empty());  // its wait began before the attach
  EXPECT_EQ(gil().acquisitions(), 1u);
  EXPECT_EQ(gil().overlaps(), 0u);
}

TEST_F(GilModelTest, WaitIsTakeEntryToReturnAndHoldIsReturnToDrop) {
  Take(kT1, 2 * kMs);
  EXPECT_EQ(gil().holder(), kT1);
  g_.Advance(5 * kMs);
  auto changes = Feed(g_.Gil(kT1, TS_GIL_DROP));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].kind, GilChangeEvent::Kind::kDropped);
  EXPECT_FALSE(changes[0].forced);
  // Records are 1 us apart on top of what the test advances.
  EXPECT_EQ(T(kT1).wait_ns, 2 * kMs + 1000);
  EXPECT_EQ(T(kT1).hold_ns, 5 * kMs + 1000);
  EXPECT_EQ(T(kT1).acquisitions, 1u);
  EXPECT_EQ(T(kT1).voluntary_drops, 1u);
  EXPECT_FALSE(gil().holder().has_value());
  EXPECT_EQ(gil().wait_histogram().count, 1u);
  EXPECT_EQ(gil().hold_histogram().count, 1u);
}

TEST_F(GilModelTest, SwitchesCountChangesOfHolderNotAcquisitions) {
  Take(kT1, 0);
  Feed(g_.Gil(kT1, TS_GIL_DROP));
  Take(kT1, 0);  // the same thread again: no switch
  Feed(g_.Gil(kT1, TS_GIL_DROP));
  Take(kT2, 0);
  Feed(g_.Gil(kT2, TS_GIL_DROP));
  Take(kT1, 0);
  EXPECT_EQ(gil().acquisitions(), 4u);
  EXPECT_EQ(gil().switches(), 2u);
}

TEST_F(GilModelTest, ForcedMarkMakesTheNextDropForced) {
  Take(kT1, 0);
  Feed(g_.Gil(kT2, TS_GIL_TAKE_BEGIN));  // a waiter
  ASSERT_EQ(gil().Waiters().size(), 1u);
  EXPECT_EQ(gil().Waiters()[0].first, kT2);
  Feed(g_.Gil(kT1, TS_GIL_FORCED));
  auto changes = Feed(g_.Gil(kT1, TS_GIL_DROP));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].forced);
  auto acquired = Feed(g_.Gil(kT2, TS_GIL_TAKE_END));
  ASSERT_EQ(acquired.size(), 1u);
  EXPECT_EQ(acquired[0].previous_holder, kT1);
  EXPECT_EQ(T(kT1).forced_drops, 1u);
  EXPECT_EQ(T(kT1).voluntary_drops, 0u);
  EXPECT_EQ(gil().forced_switches(), 1u);
  // The mark is spent: the next drop is voluntary.
  Feed(g_.Gil(kT2, TS_GIL_DROP));
  Take(kT1, 0);
  Feed(g_.Gil(kT1, TS_GIL_DROP));
  EXPECT_EQ(T(kT1).forced_drops, 1u);
  EXPECT_EQ(T(kT1).voluntary_drops, 1u);
}

TEST_F(GilModelTest, InlinedForcedDropIsForced) {
  Take(kT1, 0);
  Feed(g_.Gil(kT1, TS_GIL_DROP_FORCED));
  EXPECT_EQ(T(kT1).forced_drops, 1u);
}

TEST_F(GilModelTest, HolderAtAttachDropsWithoutHoldTime) {
  // The first record of the main thread is a drop: it held the GIL when the probes went live.
  Feed(g_.Gil(kMain, TS_GIL_DROP));
  EXPECT_TRUE(T(kMain).held_at_attach);
  EXPECT_EQ(T(kMain).hold_ns, 0u);
  EXPECT_EQ(T(kMain).voluntary_drops, 1u);
  EXPECT_EQ(gil().unmatched_drops(), 0u);
  // A second drop without a take in between is inconsistent.
  Feed(g_.Gil(kMain, TS_GIL_DROP));
  EXPECT_EQ(gil().unmatched_drops(), 1u);
}

TEST_F(GilModelTest, TakeWhileAnotherHoldsIsAnOverlapAndEndsTheOldHold) {
  Take(kT1, 0);
  g_.Advance(3 * kMs);
  Take(kT2, 0);  // kT1's drop went unseen
  EXPECT_EQ(gil().overlaps(), 1u);
  EXPECT_EQ(gil().holder(), kT2);
  EXPECT_FALSE(T(kT1).holding_since.has_value());
  EXPECT_EQ(T(kT1).hold_ns, 3 * kMs + 2000);
  EXPECT_EQ(T(kT1).voluntary_drops + T(kT1).forced_drops, 0u);  // no drop was seen
}

TEST_F(GilModelTest, DuplicateTakeEntriesAndReturnsCountOnce) {
  // A clone calling the original reports one take twice.
  Feed(g_.Gil(kT1, TS_GIL_TAKE_BEGIN));
  uint64_t began = g_.now();
  Feed(g_.Gil(kT1, TS_GIL_TAKE_BEGIN));
  Feed(g_.Gil(kT1, TS_GIL_TAKE_END));
  Feed(g_.Gil(kT1, TS_GIL_TAKE_END));
  EXPECT_EQ(T(kT1).acquisitions, 1u);
  EXPECT_EQ(*T(kT1).holding_since - began, 2000u);
}

TEST_F(GilModelTest, ThreadExitEndsItsWaitAndHold) {
  Take(kT1, 0);
  Feed(g_.Gil(kT2, TS_GIL_TAKE_BEGIN));
  g_.Advance(kMs);
  Feed(g_.Exit(kT2));  // a daemon thread ends inside take_gil at finalization
  EXPECT_TRUE(gil().Waiters().empty());
  EXPECT_EQ(T(kT2).wait_ns, kMs + 1000);
  Feed(g_.Exit(kT1));
  EXPECT_FALSE(gil().holder().has_value());
}

// The overhead budget switches a --gil full trace to waits only and back (marks in the stream):
// a hold in progress ends unseen (cut: no hold time, no drop, no holder), a take in progress is
// cut, not counted; waits after count as waited takes; back to full, a thread's first drop
// before any take is the hold it had at the switch, not an unmatched drop.
TEST_F(GilModelTest, BudgetSwitchToWaitsCutsWhatItCannotSeeAndBack) {
  Take(kT1, 1 * kMs);                    // kT1 holds
  Feed(g_.Gil(kT2, TS_GIL_TAKE_BEGIN));  // kT2 in take_gil
  g_.Advance(2 * kMs);
  Feed(g_.Mark(TS_MARK_GIL_WAITS_ONLY));
  EXPECT_FALSE(gil().holder().has_value());
  EXPECT_FALSE(T(kT1).holding_since.has_value());
  EXPECT_FALSE(T(kT2).waiting_since.has_value());
  EXPECT_EQ(T(kT1).hold_ns, 0u);  // its end was not seen: no length invented
  EXPECT_EQ(gil().cut_holds(), 1u);
  EXPECT_EQ(gil().cut_waits(), 1u);
  EXPECT_TRUE(gil().waits_only());
  EXPECT_TRUE(gil().Waiters().empty());
  // kT2's take ends unseen; the waits probe reports a later wait of kT1 in full.
  g_.Advance(1 * kMs);
  EXPECT_TRUE(Feed(g_.Gil(kT2, TS_GIL_WAITED)).empty());  // its begin was cut
  Feed(g_.Gil(kT1, TS_GIL_TAKE_BEGIN));
  g_.Advance(4 * kMs);
  Feed(g_.Gil(kT1, TS_GIL_WAITED));
  EXPECT_EQ(gil().waited_takes(), 1u);
  EXPECT_EQ(T(kT1).wait_ns, 1 * kMs + 4 * kMs + 2000);
  // Back to every take: kT1 held the GIL at the switch, its first drop is that hold's end.
  Feed(g_.Mark(TS_MARK_GIL_FULL));
  EXPECT_FALSE(gil().waits_only());
  Feed(g_.Gil(kT1, TS_GIL_DROP));
  EXPECT_EQ(gil().unmatched_drops(), 0u);
  Take(kT2, 1 * kMs);
  EXPECT_EQ(gil().holder(), kT2);
  ASSERT_EQ(gil().mode_changes().size(), 2u);
  EXPECT_TRUE(gil().mode_changes()[0].waits_only);
  EXPECT_EQ(gil().mode_changes()[0].cut_holds, 1u);
  EXPECT_FALSE(gil().mode_changes()[1].waits_only);
  EXPECT_EQ(gil().overlaps(), 0u);
}

// The duty cycle's pause: holds and takes in progress are cut and nobody holds the GIL; after
// the resume a thread's first drop (it took the GIL in the gap) is not an unmatched drop.
TEST_F(GilModelTest, DutyCyclePauseCutsWhatItCannotSee) {
  Take(kT1, 1 * kMs);                    // kT1 holds
  Feed(g_.Gil(kT2, TS_GIL_TAKE_BEGIN));  // kT2 in take_gil
  g_.Advance(2 * kMs);
  Feed(g_.Mark(TS_MARK_TRACE_PAUSED));
  EXPECT_FALSE(gil().holder().has_value());
  EXPECT_TRUE(gil().Waiters().empty());
  EXPECT_EQ(T(kT1).hold_ns, 0u);
  EXPECT_EQ(gil().cut_holds(), 1u);
  EXPECT_EQ(gil().cut_waits(), 1u);
  EXPECT_EQ(gil().pauses(), 1u);
  EXPECT_FALSE(gil().waits_only());  // the mode is not changed by a pause
  g_.Advance(9000 * kMs);
  Feed(g_.Mark(TS_MARK_TRACE_RESUMED));
  Feed(g_.Gil(kT2, TS_GIL_DROP));  // kT2 took it in the gap
  EXPECT_EQ(gil().unmatched_drops(), 0u);
  Take(kT1, 1 * kMs);
  EXPECT_EQ(gil().holder(), kT1);
  EXPECT_LT(T(kT1).wait_ns, 100 * kMs);  // the gap is not a wait
  EXPECT_EQ(gil().overlaps(), 0u);
}

TEST_F(GilModelTest, RecordsOfOtherKindsAreIgnored) {
  Feed(g_.Clone(kMain, kT1));
  Feed(g_.Exit(kT1));
  EXPECT_FALSE(gil().seen());
  EXPECT_TRUE(gil().threads().empty());
}

// Free-threaded builds: the GIL's run-time state from the enable/disable probes and the takes.
class FreeThreadedGilTest : public GilModelTest {
 protected:
  void SetUp() override {
    TraceModelConfig config;
    config.gil.free_threaded = true;
    Configure(config);
  }
};

TEST_F(FreeThreadedGilTest, TransientEnableOfAnImportEndsOff) {
  EXPECT_EQ(gil().runtime(), GilRuntime::kOff);
  EXPECT_TRUE(Feed(g_.Gil(kT1, TS_GIL_ENABLE_TRANSIENT)).empty());
  auto on = Feed(g_.Gil(kT1, TS_GIL_TAKE_BEGIN));  // the importer re-attaches: it is on
  ASSERT_EQ(on.size(), 2u);
  EXPECT_EQ(on[0].kind, GilChangeEvent::Kind::kEnabled);
  EXPECT_EQ(on[0].runtime, GilRuntime::kTransient);
  Feed(g_.Gil(kT1, TS_GIL_TAKE_END));
  Feed(g_.Gil(kT2, TS_GIL_TAKE_BEGIN));  // another thread attaches during the init
  auto off = Feed(g_.Gil(kT1, TS_GIL_DISABLE));
  ASSERT_EQ(off.size(), 1u);
  EXPECT_EQ(off[0].kind, GilChangeEvent::Kind::kDisabled);
  Feed(g_.Gil(kT1, TS_GIL_DROP));  // _PyEval_DisableGIL's inlined drop
  EXPECT_EQ(gil().runtime(), GilRuntime::kOff);
  EXPECT_FALSE(gil().enabled_since());
  EXPECT_EQ(gil().transient_enables(), 1u);
  EXPECT_TRUE(gil().Waiters().empty());  // woken, they return without it
  EXPECT_EQ(gil().unmatched_drops(), 0u);
}

TEST_F(FreeThreadedGilTest, NestedTransientEnablesEndWithTheLastDisable) {
  Feed(g_.Gil(kT1, TS_GIL_ENABLE_TRANSIENT));
  Take(kT1, 0);
  Feed(g_.Gil(kT2, TS_GIL_ENABLE_TRANSIENT));
  Feed(g_.Gil(kT2, TS_GIL_DISABLE));
  EXPECT_EQ(gil().runtime(), GilRuntime::kTransient);
  Feed(g_.Gil(kT1, TS_GIL_DISABLE));
  EXPECT_EQ(gil().runtime(), GilRuntime::kOff);
}

TEST_F(FreeThreadedGilTest, ImportOfAModuleNotFreeThreadingSafeEnablesItForGood) {
  Feed(g_.Gil(kT1, TS_GIL_ENABLE_TRANSIENT));
  Take(kT1, 0);
  EXPECT_EQ(gil().runtime(), GilRuntime::kTransient);
  g_.Advance(kMs);
  const uint64_t at = g_.now();
  auto on = Feed(g_.Gil(kT1, TS_GIL_ENABLE_PERMANENT));
  ASSERT_EQ(on.size(), 1u);
  EXPECT_EQ(on[0].runtime, GilRuntime::kPermanent);
  ASSERT_TRUE(gil().enabled_since());
  EXPECT_GT(*gil().enabled_since(), at);  // the permanent enable's, not the transient one's
  EXPECT_EQ(*gil().enabled_since(), on[0].ts_ns);
  Feed(g_.Gil(kT1, TS_GIL_DISABLE));  // a later import's: the GIL stays on
  Feed(g_.Gil(kT1, TS_GIL_ENABLE_TRANSIENT));
  EXPECT_EQ(gil().runtime(), GilRuntime::kPermanent);
  EXPECT_EQ(gil().transient_enables(), 1u);
}

TEST_F(FreeThreadedGilTest, ForcedOffAtStartUpStaysOff) {
  // PYTHON_GIL=0: every enable returns at once; a module needing the GIL calls no disable.
  Feed(g_.Gil(kT1, TS_GIL_ENABLE_TRANSIENT));
  Feed(g_.Gil(kT1, TS_GIL_DISABLE));
  Feed(g_.Gil(kT1, TS_GIL_ENABLE_TRANSIENT));
  EXPECT_EQ(gil().runtime(), GilRuntime::kOff);
  EXPECT_EQ(gil().transient_enables(), 0u);
}

TEST_F(FreeThreadedGilTest, TakesWithNoEnableMeanOnFromStartUp) {
  Feed(g_.Gil(kT1, TS_GIL_DROP));  // held at attach
  EXPECT_EQ(gil().runtime(), GilRuntime::kOff);
  const uint64_t at = g_.now();
  Take(kT2, kMs);
  EXPECT_EQ(gil().runtime(), GilRuntime::kUnannounced);
  ASSERT_TRUE(gil().enabled_since());
  EXPECT_GT(*gil().enabled_since(), at);  // the first take's
  EXPECT_LT(*gil().enabled_since(), g_.now() - kMs);
  Feed(g_.Gil(kT1, TS_GIL_ENABLE_TRANSIENT));  // -X gil=1: returns 0 at once
  Feed(g_.Gil(kT1, TS_GIL_DISABLE));
  EXPECT_EQ(gil().runtime(), GilRuntime::kUnannounced);
}

TEST_F(GilModelTest, GilBuildsHaveNoRunTimeState) {
  Take(kT1, kMs);
  Feed(g_.Gil(kT1, TS_GIL_DROP));
  EXPECT_EQ(gil().runtime(), GilRuntime::kOff);
  EXPECT_FALSE(gil().enabled_since());
}

}  // namespace
}  // namespace threadscope::model
