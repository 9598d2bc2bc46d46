#include "daemon/model/thread_model.h"

#include <gtest/gtest.h>

#include "daemon/model/trace_model.h"
#include "tests/unit/model_harness.h"

namespace threadscope::model {
namespace {

using testing::EventGenerator;

class ThreadModelTest : public testing::ModelTest {
 protected:
  void UseConfig(JoinVisibility joins, bool body = true) {
    TraceModelConfig c;
    c.threads.joins = joins;
    c.threads.body_done_visible = body;
    Configure(c);
  }
  std::vector<ModelEvent> Feed(const std::vector<std::string>& records) {
    return FeedRecords(records).all;
  }
  const ThreadRecord& ByTid(pid_t tid) {
    const ThreadRecord* t = model_.threads().FindByTid(tid);
    EXPECT_NE(t, nullptr) << "no thread with tid " << tid;
    static ThreadRecord empty;
    return t ? *t : empty;
  }
  const ThreadModel& threads() { return model_.threads(); }
};

TEST_F(ThreadModelTest, FullLifecycleInOrder) {
  UseConfig(JoinVisibility::kBlockingOnly);
  auto events = Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
                      g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.Bootstrap(1001, 0xb00),
                      g_.Sentinel(1001, 0x10, 0x20), g_.BodyDone(1001), g_.Exit(1001)});
  const ThreadRecord& t = ByTid(1001);
  EXPECT_EQ(t.origin, ThreadOrigin::kStarted);
  EXPECT_EQ(t.state, ThreadState::kDone);
  EXPECT_EQ(t.ident, 0x7f01u);
  EXPECT_EQ(t.parent_native_tid, static_cast<pid_t>(kMain));
  EXPECT_TRUE(t.observed_from_start);
  EXPECT_FALSE(t.start_failed);
  ASSERT_TRUE(t.started_ns && t.running_ns && t.done_ns && t.bootstrap_ns && t.exited_ns);
  EXPECT_LT(*t.started_ns, *t.running_ns);
  EXPECT_LT(*t.running_ns, *t.done_ns);
  EXPECT_EQ(threads().ReturnedForReport(t), true);
  // DONE and not seen joined, with a sentinel: a non-blocking join is invisible on <= 3.12.
  EXPECT_EQ(threads().JoinedForReport(t), std::nullopt);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].thread.change, ThreadChange::kStarting);
  EXPECT_EQ(events[1].thread.change, ThreadChange::kRunning);
  EXPECT_EQ(events[2].thread.change, ThreadChange::kDone);
}

TEST_F(ThreadModelTest, StartFailureGoesStraightToDone) {
  auto events = Feed({g_.StartBegin(kMain, 0xb00), g_.StartEnd(kMain, 0xb00, false, 0)});
  ASSERT_EQ(threads().threads().size(), 1u);
  const ThreadRecord& t = threads().threads()[0];
  EXPECT_TRUE(t.start_failed);
  EXPECT_EQ(t.state, ThreadState::kDone);
  EXPECT_FALSE(t.running_ns.has_value());
  EXPECT_EQ(t.native_tid, 0);
  EXPECT_FALSE(t.ident.has_value());
  EXPECT_EQ(threads().JoinedForReport(t), false);
  EXPECT_EQ(threads().ReturnedForReport(t), false);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].thread.change, ThreadChange::kStartFailed);
}

TEST_F(ThreadModelTest, ChildRunsBeforeTheParentSeesTheStartReturn) {
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001), g_.Bootstrap(1001, 0xb00)});
  EXPECT_EQ(ByTid(1001).state, ThreadState::kRunning);
  EXPECT_FALSE(ByTid(1001).ident.has_value());
  Feed({g_.StartEnd(kMain, 0xb00, true, 0x7f01)});
  EXPECT_EQ(ByTid(1001).state, ThreadState::kRunning);
  EXPECT_EQ(ByTid(1001).ident, 0x7f01u);
}

TEST_F(ThreadModelTest, BootstrapCarriesTheIdentBeforeTheStartReturns) {
  // The bootstrap probe reads the child's pthread_self(): RUNNING already knows the ident.
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001), g_.Bootstrap(1001, 0xb00, 0x7f01)});
  EXPECT_EQ(ByTid(1001).state, ThreadState::kRunning);
  EXPECT_EQ(ByTid(1001).ident, 0x7f01u);
  Feed({g_.StartEnd(kMain, 0xb00, true, 0x7f01)});
  EXPECT_EQ(ByTid(1001).ident, 0x7f01u);
  int records = 0;
  for (const auto& t : threads().threads()) records += t.native_tid == 1001;
  EXPECT_EQ(records, 1);
}

TEST_F(ThreadModelTest, LostEntryWithBootstrapIdentStillMatchesTheReturn) {
  Feed({g_.Lost(1), g_.Clone(kMain, 1001), g_.Bootstrap(1001, 0xb00, 0x7f01),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01)});
  EXPECT_EQ(ByTid(1001).origin, ThreadOrigin::kStarted);
}

TEST_F(ThreadModelTest, ChildExitsBeforeTheStartReturns) {
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001), g_.Exit(1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01)});
  const ThreadRecord& t = ByTid(1001);
  EXPECT_EQ(t.state, ThreadState::kDone);  // a late return does not revive it
  EXPECT_TRUE(t.running_ns.has_value());
  EXPECT_EQ(t.ident, 0x7f01u);
}

TEST_F(ThreadModelTest, LostStartEntryIsRecoveredFromTheCloneAndReturn) {
  Feed({g_.Lost(1), g_.Clone(kMain, 1001), g_.StartEnd(kMain, 0xb00, true, 0x7f01)});
  const ThreadRecord& t = ByTid(1001);
  EXPECT_EQ(t.origin, ThreadOrigin::kStarted);
  EXPECT_EQ(t.ident, 0x7f01u);
  EXPECT_EQ(model_.stats().lost_ringbuf, 1u);
}

TEST_F(ThreadModelTest, LostCloneIsRecoveredFromTheBootstrap) {
  Feed({g_.StartBegin(kMain, 0xb00), g_.StartEnd(kMain, 0xb00, true, 0x7f01),
        g_.Bootstrap(1001, 0xb00)});
  const ThreadRecord& t = ByTid(1001);
  EXPECT_EQ(t.ident, 0x7f01u);
  EXPECT_EQ(t.state, ThreadState::kRunning);
}

TEST_F(ThreadModelTest, NativeThreadsAreNotPythonStarts) {
  auto events = Feed({g_.Clone(kMain, 1005, "OpenBLAS")});
  const ThreadRecord& t = ByTid(1005);
  EXPECT_EQ(t.origin, ThreadOrigin::kNative);
  EXPECT_EQ(t.state, ThreadState::kRunning);
  EXPECT_EQ(t.name, "OpenBLAS");
  EXPECT_EQ(threads().JoinedForReport(t), false);
  EXPECT_EQ(threads().ReturnedForReport(t), std::nullopt);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].thread.change, ThreadChange::kDiscovered);
}

TEST_F(ThreadModelTest, PreexistingThreadsAreRunningAndNotObservedFromStart) {
  Feed({g_.Preexisting(kMain, 5, "python3"), g_.Preexisting(1003, 7, "worker")});
  EXPECT_EQ(ByTid(1003).origin, ThreadOrigin::kPreexisting);
  EXPECT_EQ(ByTid(1003).state, ThreadState::kRunning);
  EXPECT_FALSE(ByTid(1003).observed_from_start);
  EXPECT_EQ(ByTid(1003).started_ns, 7u);
  EXPECT_EQ(threads().threads().size(), 2u);
}

TEST_F(ThreadModelTest, ScanRacingACloneCountsTheThreadOnce) {
  // The clone record arrived before the /proc scan that also listed the thread...
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001), g_.Preexisting(1001, 1)});
  EXPECT_EQ(threads().threads().size(), 1u);
  EXPECT_EQ(ByTid(1001).origin, ThreadOrigin::kStarted);
  // ...and the other way round.
  Feed({g_.Preexisting(1002, 1), g_.Clone(kMain, 1002)});
  EXPECT_EQ(threads().threads().size(), 2u);
  EXPECT_TRUE(ByTid(1002).observed_from_start);
}

TEST_F(ThreadModelTest, ReusedIdentsAndTidsStaySeparateThreads) {
  UseConfig(JoinVisibility::kExact);
  Feed({g_.StartBegin(kMain, 0xb00, TS_START_API_JOINABLE_THREAD), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01, TS_START_API_JOINABLE_THREAD), g_.Exit(1001),
        // Same pthread_t (glibc reuses stacks) and, later, the same tid.
        g_.StartBegin(kMain, 0xb00, TS_START_API_JOINABLE_THREAD), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01, TS_START_API_JOINABLE_THREAD)});
  ASSERT_EQ(threads().threads().size(), 2u);
  EXPECT_EQ(threads().threads()[0].state, ThreadState::kDone);
  EXPECT_EQ(threads().threads()[1].state, ThreadState::kRunning);
  // A join of that ident now means the newer thread.
  Feed({g_.JoinBegin(kMain, 0x7f01), g_.Exit(1001), g_.JoinEnd(kMain, 0)});
  EXPECT_FALSE(threads().threads()[0].joined);
  EXPECT_TRUE(threads().threads()[1].joined);
  EXPECT_EQ(threads().JoinedForReport(threads().threads()[0]), false);  // exact: never joined
}

TEST_F(ThreadModelTest, BlockingJoinOnTheSentinelIsAJoin) {
  UseConfig(JoinVisibility::kBlockingOnly);
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.Bootstrap(1001, 0xb00),
        g_.Sentinel(1001, 0x10, 0x20), g_.SemWait(TS_EV_SEM_WAIT_BEGIN, kMain, 0x20)});
  ASSERT_EQ(ByTid(1001).join_waiters.size(), 1u);
  EXPECT_EQ(ByTid(1001).join_waiters[0].tid, static_cast<pid_t>(kMain));
  auto events = Feed({g_.BodyDone(1001), g_.Exit(1001),
                      g_.SemWait(TS_EV_SEM_WAIT_END, kMain, 0x20, 0)});
  const ThreadRecord& t = ByTid(1001);
  EXPECT_TRUE(t.joined);
  EXPECT_EQ(t.joined_by, static_cast<pid_t>(kMain));
  EXPECT_TRUE(t.join_waiters.empty());
  EXPECT_EQ(threads().JoinedForReport(t), true);
  EXPECT_EQ(events.back().thread.change, ThreadChange::kJoined);
}

TEST_F(ThreadModelTest, TimedOutJoinIsNotAJoin) {
  UseConfig(JoinVisibility::kBlockingOnly);
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.Sentinel(1001, 0x10, 0x20),
        g_.SemWait(TS_EV_SEM_WAIT_BEGIN, kMain, 0x20),
        g_.SemWait(TS_EV_SEM_WAIT_END, kMain, 0x20, -1)});
  EXPECT_FALSE(ByTid(1001).joined);
  EXPECT_TRUE(ByTid(1001).join_waiters.empty());
  EXPECT_EQ(threads().JoinedForReport(ByTid(1001)), false);  // still running: not joined
}

TEST_F(ThreadModelTest, FreedSentinelAddressReusedByAnotherLockIsNotAJoin) {
  UseConfig(JoinVisibility::kBlockingOnly);
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.Sentinel(1001, 0x10, 0x20), g_.Exit(1001),
        g_.SemWait(TS_EV_SEM_DESTROY, kMain, 0x20),
        // A new lock at the same address; somebody waits on it and gets it.
        g_.SemWait(TS_EV_SEM_WAIT_BEGIN, 1002, 0x20),
        g_.SemWait(TS_EV_SEM_WAIT_END, 1002, 0x20, 0)});
  EXPECT_FALSE(ByTid(1001).joined);
  EXPECT_EQ(threads().JoinedForReport(ByTid(1001)), std::nullopt);
}

TEST_F(ThreadModelTest, RawThreadsWithoutSentinelCannotBeJoined) {
  UseConfig(JoinVisibility::kBlockingOnly);
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.Exit(1001)});
  EXPECT_EQ(threads().JoinedForReport(ByTid(1001)), false);
}

TEST_F(ThreadModelTest, DetachedThreadsAreNotJoined) {
  UseConfig(JoinVisibility::kExact);
  auto events = Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
                      g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.Detach(kMain, 0x7f01),
                      g_.Exit(1001)});
  EXPECT_TRUE(ByTid(1001).detached);
  EXPECT_EQ(threads().JoinedForReport(ByTid(1001)), false);
}

TEST_F(ThreadModelTest, NoJoinSignalMeansUnknown) {
  UseConfig(JoinVisibility::kNone);
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.Exit(1001)});
  EXPECT_EQ(threads().JoinedForReport(ByTid(1001)), std::nullopt);
}

TEST_F(ThreadModelTest, ThreadKilledAtExitDidNotReturn) {
  UseConfig(JoinVisibility::kBlockingOnly, /*body=*/true);
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.Bootstrap(1001, 0xb00), g_.Exit(1001),
        g_.Exit(kMain)});
  EXPECT_EQ(threads().ReturnedForReport(ByTid(1001)), false);
  UseConfig(JoinVisibility::kBlockingOnly, /*body=*/false);
  Feed({g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.Exit(1001)});
  EXPECT_EQ(threads().ReturnedForReport(ByTid(1001)), std::nullopt);
}

TEST_F(ThreadModelTest, TargetExitEndsEveryThread) {
  Feed({g_.Preexisting(kMain, 1), g_.StartBegin(kMain, 0xb00), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01), g_.StartBegin(1001, 0xb01),
        g_.Mark(TS_MARK_TARGET_EXITED)});
  for (const auto& t : threads().threads()) EXPECT_EQ(t.state, ThreadState::kDone);
  // The start that never returned (no clone seen) counts as failed.
  EXPECT_TRUE(threads().threads().back().start_failed);
  EXPECT_TRUE(model_.target_exited_ns().has_value());
  EXPECT_EQ(model_.end_ns(), *model_.target_exited_ns());
}

TEST_F(ThreadModelTest, AfterLossesAnUnfinishedStartIsNotCalledFailed) {
  Feed({g_.StartBegin(kMain, 0xb00), g_.Lost(3), g_.Mark(TS_MARK_TARGET_EXITED)});
  EXPECT_FALSE(threads().threads()[0].start_failed);
  EXPECT_EQ(threads().threads()[0].state, ThreadState::kDone);
}

TEST_F(ThreadModelTest, ExitOfAnUnknownThreadIsStillRecorded) {
  auto events = Feed({g_.Exit(1009, "late")});
  const ThreadRecord& t = ByTid(1009);
  EXPECT_EQ(t.state, ThreadState::kDone);
  EXPECT_FALSE(t.observed_from_start);
  EXPECT_EQ(t.name, "late");
}

TEST_F(ThreadModelTest, RenamesUpdateTheName) {
  auto events = Feed({g_.Preexisting(1003, 1), g_.Rename(1003, 1003, "worker-3")});
  EXPECT_EQ(ByTid(1003).name, "worker-3");
  EXPECT_EQ(events.back().thread.change, ThreadChange::kRenamed);
}

TEST_F(ThreadModelTest, JoinerDyingWhileWaitingIsNoLongerAWaiter) {
  UseConfig(JoinVisibility::kExact);
  Feed({g_.StartBegin(kMain, 0xb00, TS_START_API_JOINABLE_THREAD), g_.Clone(kMain, 1001),
        g_.StartEnd(kMain, 0xb00, true, 0x7f01, TS_START_API_JOINABLE_THREAD),
        g_.Preexisting(1004, 1), g_.JoinBegin(1004, 0x7f01)});
  EXPECT_EQ(ByTid(1001).join_waiters.size(), 1u);
  Feed({g_.Exit(1004)});
  EXPECT_TRUE(ByTid(1001).join_waiters.empty());
}

TEST_F(ThreadModelTest, StatsCountRecordsLossesAndGarbage) {
  Feed({g_.Lost(5), g_.Lost(2, TS_LOST_STASH), g_.Mark(TS_MARK_ATTACHED)});
  std::string garbage = g_.Lost(1);
  garbage[2] = 0;  // bad version
  ApplyBytes(garbage);
  std::string unknown = g_.Lost(1);
  unknown[0] = static_cast<char>(150);
  ApplyBytes(unknown);
  EXPECT_EQ(model_.stats().records, 3u);
  EXPECT_EQ(model_.stats().lost_ringbuf, 5u);
  EXPECT_EQ(model_.stats().lost_stash, 2u);
  EXPECT_EQ(model_.stats().lost(), 7u);
  EXPECT_EQ(model_.stats().decode_errors, 1u);
  EXPECT_EQ(model_.stats().unknown_records, 1u);
  EXPECT_TRUE(model_.attached_ns().has_value());
}

// Random interleavings of independent threads' records must give the same final state as the
// in-order stream: the model may only depend on each thread's own order.
TEST_F(ThreadModelTest, IndependentThreadsInterleaveFreely) {
  UseConfig(JoinVisibility::kBlockingOnly);
  std::vector<std::vector<std::string>> per_parent;
  for (uint32_t p = 0; p < 4; ++p) {
    uint32_t parent = 2000 + p, child = 3000 + p;
    uint64_t boot = 0xb00 + p;
    per_parent.push_back({g_.Preexisting(parent, 1), g_.StartBegin(parent, boot),
                          g_.Clone(parent, child), g_.StartEnd(parent, boot, true, 0x7000 + p),
                          g_.Bootstrap(child, boot), g_.BodyDone(child), g_.Exit(child)});
  }
  auto final_state = [&](const std::vector<std::string>& order) {
    UseConfig(JoinVisibility::kBlockingOnly);
    Feed(order);
    std::vector<std::string> out;
    for (const auto& t : threads().threads()) {
      out.push_back(std::to_string(t.native_tid) + ":" + ThreadStateName(t.state) + ":" +
                    std::to_string(t.ident.value_or(0)) + ":" +
                    std::to_string(t.parent_native_tid.value_or(0)));
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  std::vector<std::string> in_order;
  for (auto& v : per_parent) in_order.insert(in_order.end(), v.begin(), v.end());
  auto expected = final_state(in_order);
  uint32_t seed = 12345;
  for (int round = 0; round < 50; ++round) {
    std::vector<size_t> pos(per_parent.size(), 0);
    std::vector<std::string> mixed;
    while (mixed.size() < in_order.size()) {
      seed = seed * 1103515245 + 12345;
      size_t k = (seed >> 16) % per_parent.size();
      if (pos[k] < per_parent[k].size()) mixed.push_back(per_parent[k][pos[k]++]);
    }
    EXPECT_EQ(final_state(mixed), expected) << "round " << round;
  }
}

// A process that starts threads forever: the model keeps a bounded number, forgetting the
// oldest finished ones, and counts what it forgot so the report's totals stay right.
TEST_F(ThreadModelTest, FinishedThreadsAreEvictedAndCounted) {
  TraceModelConfig c;
  c.threads.joins = JoinVisibility::kExact;
  c.threads.body_done_visible = true;
  c.threads.max_threads = 64;
  model_ = TraceModel(c);
  Feed({g_.Preexisting(kMain, 1)});
  for (uint32_t i = 0; i < 1000; ++i) {
    uint32_t tid = 2000 + i;
    uint64_t boot = 0xb000 + i, ident = 0x7f0000 + i;
    Feed({g_.StartBegin(kMain, boot), g_.Clone(kMain, tid), g_.StartEnd(kMain, boot, true, ident),
          g_.Bootstrap(tid, boot), g_.BodyDone(tid), g_.Exit(tid), g_.JoinBegin(kMain, ident),
          g_.JoinEnd(kMain)});
  }
  EXPECT_LE(threads().threads().size(), 64u);
  const ThreadCounts& gone = threads().evicted();
  EXPECT_EQ(gone.seen + threads().threads().size(), 1001u);
  EXPECT_EQ(gone.started, gone.seen);
  EXPECT_EQ(gone.joined, gone.seen);
  EXPECT_EQ(gone.returned, gone.seen);
  // The main thread, still running, is never forgotten; the newest are all there.
  EXPECT_NE(threads().FindByTid(kMain), nullptr);
  EXPECT_EQ(ByTid(2999).state, ThreadState::kDone);
  EXPECT_EQ(threads().JoinedForReport(ByTid(2999)), true);
}

}  // namespace
}  // namespace threadscope::model
