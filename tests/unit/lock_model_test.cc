#include "daemon/model/lock_model.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "daemon/model/trace_model.h"
#include "tests/unit/model_harness.h"

namespace threadscope::model {
namespace {

using testing::EventGenerator;

constexpr uint32_t kT1 = 1001;
constexpr uint32_t kT2 = 1002;
constexpr uint32_t kT3 = 1003;
constexpr uint64_t kObjA = 0x7f0000001000, kSemA = 0x55000000a000;
constexpr uint64_t kObjB = 0x7f0000002000, kSemB = 0x55000000b000;

class LockModelTest : public testing::ModelTest {
 protected:
  void Exact(bool exact) {
    TraceModelConfig c;
    c.locks.exact_ownership = exact;
    Configure(c);
  }
  std::vector<LockChangeEvent> Feed(const std::vector<std::string>& records) {
    return FeedRecords(records).locks;
  }
  const LockModel& locks() { return model_.locks(); }
  // The live lock at a semaphore address (the newest generation).
  const LockRecord& At(uint64_t sem) {
    const LockRecord* found = nullptr;
    for (const auto& [id, l] : locks().locks()) {
      if (l.sem == sem && (!found || l.id > found->id)) found = &l;
    }
    EXPECT_NE(found, nullptr) << "no lock at " << std::hex << sem;
    static LockRecord empty;
    return found ? *found : empty;
  }
  std::string Begin(uint32_t tid, uint64_t sem) { return g_.SemWait(TS_EV_SEM_WAIT_BEGIN, tid, sem); }
  std::string End(uint32_t tid, uint64_t sem, bool acquired = true) {
    return g_.SemWait(TS_EV_SEM_WAIT_END, tid, sem, acquired ? 0 : -1);
  }
  std::string Wait(uint64_t ns) {
    g_.Advance(ns);
    return {};
  }
};

// Feed() skips empty strings: Wait() only moves the clock.
std::vector<std::string> Seq(std::initializer_list<std::string> records) {
  std::vector<std::string> out;
  for (const auto& r : records) {
    if (!r.empty()) out.push_back(r);
  }
  return out;
}

TEST(Log2HistogramTest, BucketsArePowersOfTwo) {
  Log2Histogram h;
  for (uint64_t v : {0ull, 1ull, 2ull, 3ull, 4ull, 1023ull, 1024ull, ~0ull}) h.Add(v);
  EXPECT_EQ(h.buckets[0], 2u);  // 0 and 1
  EXPECT_EQ(h.buckets[1], 2u);  // 2, 3
  EXPECT_EQ(h.buckets[2], 1u);  // 4
  EXPECT_EQ(h.buckets[9], 1u);  // 1023
  EXPECT_EQ(h.buckets[10], 1u); // 1024
  EXPECT_EQ(h.buckets[Log2Histogram::kBuckets - 1], 1u);  // everything huge lands last
  EXPECT_EQ(h.count, 8u);
  EXPECT_EQ(h.max, ~0ull);
  Log2Histogram other;
  other.Add(5);
  h.Merge(other);
  EXPECT_EQ(h.buckets[2], 2u);
  EXPECT_EQ(h.count, 9u);
}

TEST_F(LockModelTest, ContendedModeInfersOwnersFromHandoffs) {
  Exact(false);
  auto ev = Feed(Seq({g_.LockNew(kMain, kObjA, kSemA),
                      // T1 took A without contention: invisible. T2 waits; T1 releases and wakes.
                      Begin(kT2, kSemA), Wait(5'000'000), g_.FutexWake(kT1, kSemA),
                      End(kT2, kSemA),
                      // T3 waits while T2 (the inferred owner) holds it.
                      Begin(kT3, kSemA), Wait(1'000'000), g_.FutexWake(kT2, kSemA),
                      End(kT3, kSemA)}));
  const LockRecord& a = At(kSemA);
  EXPECT_EQ(a.kind, LockKind::kLock);
  EXPECT_EQ(a.contended, 2u);
  EXPECT_EQ(a.wakeups, 2u);
  EXPECT_EQ(a.wait.count, 2u);
  EXPECT_GE(a.wait.max, 5'000'000u);
  EXPECT_EQ(a.acquires, 0u);  // unknown in this mode
  ASSERT_TRUE(a.owner);
  EXPECT_EQ(*a.owner, static_cast<pid_t>(kT3));
  EXPECT_FALSE(a.owner_exact);

  ASSERT_EQ(ev.size(), 6u);
  EXPECT_EQ(ev[0].change, LockChange::kWaitBegin);
  EXPECT_FALSE(ev[0].other);  // the first holder was never seen
  EXPECT_EQ(ev[1].change, LockChange::kWoken);
  EXPECT_EQ(ev[1].tid, static_cast<pid_t>(kT1));
  EXPECT_EQ(ev[2].change, LockChange::kWaitEnd);
  EXPECT_TRUE(ev[2].acquired);
  EXPECT_EQ(ev[2].other, static_cast<pid_t>(kT1));
  EXPECT_EQ(ev[3].change, LockChange::kWaitBegin);
  EXPECT_EQ(ev[3].other, static_cast<pid_t>(kT2));  // learned from the first handoff
  EXPECT_EQ(ev[5].other, static_cast<pid_t>(kT2));
  EXPECT_EQ(locks().FindThread(kT3)->last_woken_by, static_cast<pid_t>(kT2));
  EXPECT_EQ(locks().FindThread(kT2)->lock_waits, 1u);
}

TEST_F(LockModelTest, TimedOutWaitIsCountedAndOwnsNothing) {
  Exact(false);
  auto ev = Feed(Seq({g_.LockNew(kMain, kObjA, kSemA), Begin(kT1, kSemA), Wait(100'000'000),
                      End(kT1, kSemA, /*acquired=*/false)}));
  const LockRecord& a = At(kSemA);
  EXPECT_EQ(a.timeouts, 1u);
  EXPECT_EQ(a.contended, 1u);
  EXPECT_FALSE(a.owner);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_FALSE(ev[1].acquired);
  EXPECT_GE(ev[1].wait_ns, 100'000'000u);
}

TEST_F(LockModelTest, ContendedModeTellsConditionWaitsFromLockWaits) {
  // Condition.wait: the waiting thread allocates a waiter lock, takes it, and blocks on it
  // until notify() releases it from another thread.
  Exact(false);
  auto ev = Feed(Seq({g_.LockNew(kT1, kObjB, kSemB), Begin(kT1, kSemB), Wait(2'000'000),
                      g_.FutexWake(kT2, kSemB), End(kT1, kSemB)}));
  const LockRecord& waiter = At(kSemB);
  EXPECT_TRUE(waiter.condition_waiter);
  EXPECT_EQ(waiter.contended, 0u);  // not lock contention
  const ThreadLockState* t1 = locks().FindThread(kT1);
  EXPECT_EQ(t1->condition_waits, 1u);
  EXPECT_EQ(t1->lock_waits, 0u);
  EXPECT_EQ(t1->last_woken_by, static_cast<pid_t>(kT2));
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0].wait_kind, WaitKind::kCondition);
  EXPECT_EQ(ev[2].wait_kind, WaitKind::kCondition);
  EXPECT_FALSE(waiter.owner);  // handing a condition waiter over does not make an owner

  // Freed, it leaves no record behind but keeps its numbers.
  Feed({g_.SemWait(TS_EV_SEM_DESTROY, kT1, kSemB)});
  EXPECT_EQ(locks().locks().size(), 0u);
  EXPECT_EQ(locks().freed_condition_waits().count, 1u);
  EXPECT_EQ(locks().FindThread(kT1)->condition_waits, 1u);
}

TEST_F(LockModelTest, WaitOnAJoinSentinelIsAJoin) {
  Exact(false);
  auto ev = Feed(Seq({g_.Sentinel(kT1, kObjA, kSemA), Begin(kMain, kSemA), Wait(1'000'000),
                      g_.FutexWake(kT1, kSemA), End(kMain, kSemA)}));
  EXPECT_TRUE(ev.empty());  // the thread model reports joins; no lock events for them
  EXPECT_EQ(At(kSemA).contended, 0u);
  EXPECT_EQ(At(kSemA).kind, LockKind::kJoinSentinel);
  EXPECT_GE(locks().FindThread(kMain)->join_wait_ns, 1'000'000u);
}

TEST_F(LockModelTest, AJoinSentinelTakenAsALockStaysASentinel) {
  // The main thread's _tstate_lock: a sentinel whose acquire arrives as any Lock's. Its hold is
  // the thread's life, not a lock hold, and must not replace the sentinel with a new lock.
  Exact(true);
  auto ev = Feed({g_.Sentinel(kMain, kObjA, kSemA), g_.LockAcquire(kMain, kObjA, kSemA)});
  g_.Advance(1'000'000);
  auto released = Feed({g_.LockRelease(kMain, kObjA, kSemA)});
  EXPECT_EQ(At(kSemA).kind, LockKind::kJoinSentinel);
  for (const auto& e : released) EXPECT_NE(e.change, LockChange::kReleased);
}

TEST_F(LockModelTest, WaitThatBeganBeforeTheAttachIsIgnored) {
  Exact(false);
  auto ev = Feed({g_.LockNew(kMain, kObjA, kSemA), End(kT1, kSemA)});
  EXPECT_TRUE(ev.empty());
  EXPECT_EQ(At(kSemA).wait.count, 0u);
}

TEST_F(LockModelTest, AllModeCountsEveryAcquireAndHold) {
  Exact(true);
  std::vector<std::string> r = {g_.LockNew(kMain, kObjA, kSemA)};
  for (int i = 0; i < 3; ++i) {
    r.push_back(g_.LockAcquire(kT1, kObjA, kSemA));
    g_.Advance(10'000);
    r.push_back(g_.LockRelease(kT1, kObjA, kSemA));
  }
  r.push_back(g_.LockAcquire(kT2, kObjA, kSemA));
  r.push_back(g_.LockAcquire(kT1, kObjA, kSemA, TS_ACQUIRE_FAILED));  // acquire(False)
  Feed(r);
  const LockRecord& a = At(kSemA);
  EXPECT_EQ(a.acquires, 4u);
  EXPECT_EQ(a.releases, 3u);
  EXPECT_EQ(a.failed_trylocks, 1u);
  EXPECT_EQ(a.acquires_by_thread.at(kT1), 3u);
  EXPECT_EQ(a.acquires_by_thread.at(kT2), 1u);
  EXPECT_EQ(a.hold.count, 3u);
  ASSERT_TRUE(a.owner);
  EXPECT_EQ(*a.owner, static_cast<pid_t>(kT2));
  EXPECT_TRUE(a.owner_exact);
  EXPECT_EQ(locks().FindThread(kT2)->held, std::vector<uint64_t>{a.id});
}

TEST_F(LockModelTest, AllModeWaitBeginNamesTheExactOwner) {
  Exact(true);
  auto ev = Feed(Seq({g_.LockNew(kMain, kObjA, kSemA), g_.LockAcquire(kT1, kObjA, kSemA),
                      Begin(kT2, kSemA), Wait(3'000'000), g_.LockRelease(kT1, kObjA, kSemA),
                      g_.FutexWake(kT1, kSemA), End(kT2, kSemA),
                      g_.LockAcquire(kT2, kObjA, kSemA, TS_ACQUIRE_ACQUIRED, true)}));
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev[0].change, LockChange::kWaitBegin);
  EXPECT_EQ(ev[0].other, static_cast<pid_t>(kT1));
  const LockRecord& a = At(kSemA);
  EXPECT_EQ(a.owner, static_cast<pid_t>(kT2));
  EXPECT_EQ(a.contended, 1u);
  EXPECT_EQ(a.failed_trylocks, 0u);
}

TEST_F(LockModelTest, TimedOutAcquireIsNotAFailedTry) {
  Exact(true);
  Feed(Seq({g_.LockNew(kMain, kObjA, kSemA), g_.LockAcquire(kT1, kObjA, kSemA),
            Begin(kT2, kSemA), Wait(100'000'000), End(kT2, kSemA, false),
            g_.LockAcquire(kT2, kObjA, kSemA, TS_ACQUIRE_FAILED, /*waited=*/true)}));
  const LockRecord& a = At(kSemA);
  EXPECT_EQ(a.timeouts, 1u);
  EXPECT_EQ(a.failed_trylocks, 0u);
  EXPECT_EQ(a.owner, static_cast<pid_t>(kT1));
}

TEST_F(LockModelTest, RLockDepthSurvivesConditionWait) {
  Exact(true);
  const uint32_t R = TS_LOCK_RLOCK;
  Feed({g_.LockNew(kMain, kObjA, kSemA, R),
        g_.LockAcquire(kT1, kObjA, kSemA, 1, false, R),
        g_.LockAcquire(kT1, kObjA, kSemA, 1, false, R),  // reentrant: depth 2
        // Condition(RLock).wait releases all levels and restores them after.
        g_.LockRelease(kT1, kObjA, kSemA, R, TS_LOCK_OP_RELEASE_SAVE)});
  EXPECT_FALSE(At(kSemA).owner);
  Feed({g_.LockAcquire(kT2, kObjA, kSemA, 1, false, R), g_.LockRelease(kT2, kObjA, kSemA, R),
        g_.LockAcquire(kT1, kObjA, kSemA, 1, false, R, TS_LOCK_OP_RESTORE)});
  const LockRecord& a = At(kSemA);
  EXPECT_EQ(a.owner, static_cast<pid_t>(kT1));
  EXPECT_EQ(a.depth, 2u);
  Feed({g_.LockRelease(kT1, kObjA, kSemA, R)});
  EXPECT_EQ(At(kSemA).owner, static_cast<pid_t>(kT1));  // one level left
  Feed({g_.LockRelease(kT1, kObjA, kSemA, R)});
  EXPECT_FALSE(At(kSemA).owner);
  EXPECT_EQ(At(kSemA).acquires_by_thread.at(kT1), 3u);
}

TEST_F(LockModelTest, DeadlockIsDetectedAndResolved) {
  Exact(true);
  auto ev = Feed(Seq({g_.LockNew(kMain, kObjA, kSemA), g_.LockNew(kMain, kObjB, kSemB),
                      g_.LockAcquire(kT1, kObjA, kSemA), g_.LockAcquire(kT2, kObjB, kSemB),
                      Begin(kT1, kSemB), Begin(kT2, kSemA)}));
  ASSERT_EQ(locks().deadlocks().size(), 1u);
  const Deadlock& d = locks().deadlocks()[0];
  EXPECT_EQ(d.threads.size(), 2u);
  std::map<pid_t, uint64_t> waits;
  for (size_t i = 0; i < d.threads.size(); ++i) waits[d.threads[i]] = d.locks[i];
  EXPECT_EQ(waits.at(kT1), At(kSemB).id);
  EXPECT_EQ(waits.at(kT2), At(kSemA).id);
  EXPECT_FALSE(d.resolved_ns);
  EXPECT_EQ(ev.back().change, LockChange::kDeadlock);

  // A second look from the other thread's wait does not report it twice.
  Feed({Begin(kT2, kSemA)});
  EXPECT_EQ(locks().deadlocks().size(), 1u);

  ev = Feed({g_.Exit(kT2)});  // killed: the cycle is broken
  ASSERT_TRUE(locks().deadlocks()[0].resolved_ns);
  EXPECT_EQ(ev.back().change, LockChange::kDeadlockResolved);
}

// The duty cycle's pause (TS_MARK_TRACE_PAUSED): owners known before it are forgotten and waits
// in progress cut, so a cycle that pre-gap ownership would close is not reported (the owners may
// have let go in the gap, unseen); one built entirely after the gap is.
TEST_F(LockModelTest, PauseForgetsOwnersSoNoDeadlockFromBeforeTheGap) {
  Exact(true);
  Feed(Seq({g_.LockNew(kMain, kObjA, kSemA), g_.LockNew(kMain, kObjB, kSemB),
            g_.LockAcquire(kT1, kObjA, kSemA), g_.LockAcquire(kT2, kObjB, kSemB), Begin(kT3, kSemA),
            g_.Mark(TS_MARK_TRACE_PAUSED), Wait(9'000'000'000), g_.Mark(TS_MARK_TRACE_RESUMED)}));
  EXPECT_EQ(locks().pauses(), 1u);
  EXPECT_EQ(locks().cut_waits(), 1u);  // kT3's wait: its end was not seen
  EXPECT_FALSE(At(kSemA).owner);
  EXPECT_FALSE(At(kSemB).owner);
  EXPECT_TRUE(At(kSemA).waiters.empty());
  EXPECT_TRUE(locks().threads().at(kT1).held.empty());
  // With the owners of before the gap, these two waits would close T1 -> B (T2) -> A (T1).
  auto ev = Feed({Begin(kT1, kSemB), Begin(kT2, kSemA)});
  EXPECT_TRUE(locks().deadlocks().empty());
  for (const auto& e : ev) EXPECT_NE(e.change, LockChange::kDeadlock);
  // Built after the gap: both takes and both waits seen.
  constexpr uint64_t kObjC = 0x7f0000003000, kSemC = 0x55000000c000;
  constexpr uint64_t kObjD = 0x7f0000004000, kSemD = 0x55000000d000;
  constexpr uint32_t kT4 = 1004, kT5 = 1005;
  Feed({g_.LockNew(kMain, kObjC, kSemC), g_.LockNew(kMain, kObjD, kSemD),
        g_.LockAcquire(kT4, kObjC, kSemC), g_.LockAcquire(kT5, kObjD, kSemD), Begin(kT4, kSemD),
        Begin(kT5, kSemC)});
  ASSERT_EQ(locks().deadlocks().size(), 1u);
  std::vector<pid_t> threads = locks().deadlocks()[0].threads;
  std::sort(threads.begin(), threads.end());
  EXPECT_EQ(threads, (std::vector<pid_t>{pid_t(kT4), pid_t(kT5)}));
}

// No lock-order edge from a lock held before the gap: its release may have happened unseen.
TEST_F(LockModelTest, PauseForgetsHeldLocksForTheOrderGraph) {
  Exact(true);
  Feed(Seq({g_.LockNew(kMain, kObjA, kSemA), g_.LockNew(kMain, kObjB, kSemB),
            g_.LockAcquire(kT1, kObjA, kSemA), g_.Mark(TS_MARK_TRACE_PAUSED),
            g_.Mark(TS_MARK_TRACE_RESUMED), g_.LockAcquire(kT1, kObjB, kSemB),
            g_.LockRelease(kT1, kObjB, kSemB), g_.LockAcquire(kT2, kObjB, kSemB),
            g_.LockAcquire(kT2, kObjA, kSemA)}));
  EXPECT_TRUE(locks().inversions().empty());
}

// A deadlock proven before the pause stays: its waits cannot end unless the cycle does.
TEST_F(LockModelTest, PauseKeepsADeadlockProvenBeforeIt) {
  Exact(true);
  Feed({g_.LockNew(kMain, kObjA, kSemA), g_.LockNew(kMain, kObjB, kSemB),
        g_.LockAcquire(kT1, kObjA, kSemA), g_.LockAcquire(kT2, kObjB, kSemB), Begin(kT1, kSemB),
        Begin(kT2, kSemA), g_.Mark(TS_MARK_TRACE_PAUSED), g_.Mark(TS_MARK_TRACE_RESUMED)});
  ASSERT_EQ(locks().deadlocks().size(), 1u);
  EXPECT_FALSE(locks().deadlocks()[0].resolved_ns);
  EXPECT_EQ(locks().cut_waits(), 0u);
  Feed({End(kT1, kSemB, /*acquired=*/false)});  // a timeout after the gap ends it
  EXPECT_TRUE(locks().deadlocks()[0].resolved_ns);
}

TEST_F(LockModelTest, ThreeThreadCycle) {
  Exact(true);
  constexpr uint64_t kObjC = 0x7f0000003000, kSemC = 0x55000000c000;
  Feed({g_.LockNew(kMain, kObjA, kSemA), g_.LockNew(kMain, kObjB, kSemB),
        g_.LockNew(kMain, kObjC, kSemC), g_.LockAcquire(kT1, kObjA, kSemA),
        g_.LockAcquire(kT2, kObjB, kSemB), g_.LockAcquire(kT3, kObjC, kSemC),
        Begin(kT1, kSemB), Begin(kT2, kSemC)});
  EXPECT_TRUE(locks().deadlocks().empty());  // a chain, not yet a cycle
  Feed({Begin(kT3, kSemA)});
  ASSERT_EQ(locks().deadlocks().size(), 1u);
  EXPECT_EQ(locks().deadlocks()[0].threads.size(), 3u);
}

TEST_F(LockModelTest, ContendedModeCannotSeeADeadlockWithUnknownOwners) {
  Exact(false);
  Feed({g_.LockNew(kMain, kObjA, kSemA), g_.LockNew(kMain, kObjB, kSemB), Begin(kT1, kSemB),
        Begin(kT2, kSemA)});
  EXPECT_TRUE(locks().deadlocks().empty());
}

TEST_F(LockModelTest, OrderInversionReportedOnce) {
  Exact(true);
  std::vector<std::string> r = {g_.LockNew(kMain, kObjA, kSemA), g_.LockNew(kMain, kObjB, kSemB)};
  for (int round = 0; round < 2; ++round) {
    r.insert(r.end(), {g_.LockAcquire(kT1, kObjA, kSemA), g_.LockAcquire(kT1, kObjB, kSemB),
                       g_.LockRelease(kT1, kObjB, kSemB), g_.LockRelease(kT1, kObjA, kSemA),
                       g_.LockAcquire(kT2, kObjB, kSemB), g_.LockAcquire(kT2, kObjA, kSemA),
                       g_.LockRelease(kT2, kObjA, kSemA), g_.LockRelease(kT2, kObjB, kSemB)});
  }
  auto ev = Feed(r);
  ASSERT_EQ(locks().inversions().size(), 1u);
  const OrderInversion& inv = locks().inversions()[0];
  EXPECT_EQ(inv.lock_a, At(kSemA).id);
  EXPECT_EQ(inv.lock_b, At(kSemB).id);
  EXPECT_EQ(inv.thread_ab, static_cast<pid_t>(kT1));
  EXPECT_EQ(inv.thread_ba, static_cast<pid_t>(kT2));
  EXPECT_LT(inv.ab_ns, inv.ba_ns);
  int reported = 0;
  for (const auto& e : ev) reported += e.change == LockChange::kOrderInversion;
  EXPECT_EQ(reported, 1);
  EXPECT_TRUE(locks().deadlocks().empty());
}

TEST_F(LockModelTest, ReusedAddressStartsANewGeneration) {
  Exact(false);
  Feed(Seq({g_.LockNew(kMain, kObjA, kSemA), Begin(kT1, kSemA), Wait(1000),
            g_.FutexWake(kT2, kSemA), End(kT1, kSemA), g_.SemWait(TS_EV_SEM_DESTROY, kT1, kSemA),
            g_.LockNew(kMain, kObjA, kSemA), Begin(kT2, kSemA)}));
  std::vector<const LockRecord*> at;
  for (const auto& [id, l] : locks().locks()) {
    if (l.sem == kSemA) at.push_back(&l);
  }
  ASSERT_EQ(at.size(), 2u);  // the freed one was contended: it stays listed
  if (at[0]->id > at[1]->id) std::swap(at[0], at[1]);
  EXPECT_EQ(at[0]->generation, 1u);
  EXPECT_TRUE(at[0]->freed_ns);
  EXPECT_EQ(at[1]->generation, 2u);
  EXPECT_FALSE(at[1]->freed_ns);
  EXPECT_EQ(at[0]->contended, 1u);
  EXPECT_EQ(at[1]->contended, 1u);
  EXPECT_EQ(at[1]->waiters.size(), 1u);
}

TEST_F(LockModelTest, UncontendedFreedLocksAreDropped) {
  Exact(false);
  Feed({g_.LockNew(kMain, kObjA, kSemA), g_.SemWait(TS_EV_SEM_DESTROY, kMain, kSemA)});
  EXPECT_TRUE(locks().locks().empty());
  EXPECT_EQ(locks().freed_locks_dropped(), 1u);
}

TEST_F(LockModelTest, FreedContendedLocksAreBounded) {
  // A program that makes and fights over a fresh lock forever must not grow the model forever.
  Exact(false);
  for (uint64_t i = 0; i < 5000; ++i) {
    uint64_t sem = 0x550000000000 + i * 64;
    Feed(Seq({g_.LockNew(kMain, 0, sem), Begin(kT1, sem), g_.FutexWake(kT2, sem),
              End(kT1, sem), g_.SemWait(TS_EV_SEM_DESTROY, kMain, sem)}));
  }
  EXPECT_LE(locks().locks().size(), 4097u);
  EXPECT_GE(locks().freed_locks_dropped(), 5000u - 4097u);
}

TEST_F(LockModelTest, TargetExitEndsWaitsAndDeadlocks) {
  Exact(true);
  Feed({g_.LockNew(kMain, kObjA, kSemA), g_.LockNew(kMain, kObjB, kSemB),
        g_.LockAcquire(kT1, kObjA, kSemA), g_.LockAcquire(kT2, kObjB, kSemB), Begin(kT1, kSemB),
        Begin(kT2, kSemA), g_.Mark(TS_MARK_TARGET_EXITED)});
  ASSERT_EQ(locks().deadlocks().size(), 1u);
  EXPECT_TRUE(locks().deadlocks()[0].resolved_ns);
  EXPECT_TRUE(At(kSemA).waiters.empty());
  EXPECT_FALSE(locks().FindThread(kT1)->waiting_lock);
}

}  // namespace
}  // namespace threadscope::model

namespace threadscope::model {
namespace {

TEST(LocationTableTest, InvalidUtf8FromARecordingBecomesReplacementCharacters) {
  LocationTable table;
  PyLocationRecord r{};
  r.fixed.code = 0x1000;
  r.fixed.instr = 0x1010;
  r.fixed.line = 7;
  r.file = "caf\xc3\xa9.py";          // valid: kept
  r.function = "f\xff\xc3(\xed\xa0\x80";  // stray byte, truncated sequence, encoded surrogate
  table.Define(r);
  ts_py_stack st{};
  st.depth = 1;
  st.frames[0].code = 0x1000;
  st.frames[0].instr = 0x1010;
  PyStack stack = table.Resolve(st);
  ASSERT_EQ(stack.frames.size(), 1u);
  const CodeLocation& l = table.Get(stack.frames[0]);
  EXPECT_EQ(l.file, "caf\xc3\xa9.py");
  EXPECT_EQ(l.function, "f\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

// A target that creates locks without end: the model keeps at most twice its bound of records,
// and what it could not record is counted, not lost silently.
TEST_F(LockModelTest, LockRecordsAreBounded) {
  TraceModelConfig c;
  c.locks.exact_ownership = true;
  c.locks.max_locks = 64;
  model_ = TraceModel(c);
  for (uint64_t i = 0; i < 5000; ++i) {
    Feed({g_.LockNew(kMain, 0x7f0000100000 + i * 64, 0x550000100000 + i * 64)});
  }
  EXPECT_LE(locks().locks().size(), 128u);
  EXPECT_GT(locks().locks_untracked(), 0u);
  // Contended locks still get records past the soft bound.
  Feed({Begin(kT1, kSemA), End(kT1, kSemA)});
  EXPECT_EQ(At(kSemA).contended, 1u);
}

// Freeing a lock costs the same however many threads and locks the model holds (a Condition wait
// frees a lock each time: it used to visit every thread and lock).
TEST_F(LockModelTest, FreedWaiterLocksLeaveNothingBehind) {
  Exact(false);
  for (uint32_t t = 0; t < 2000; ++t) Feed({g_.Clone(kMain, 20000 + t)});
  for (uint64_t i = 0; i < 20000; ++i) {
    uint64_t obj = 0x7f0000200000 + (i % 50) * 64, sem = 0x550000200000 + (i % 50) * 64;
    Feed({g_.LockNew(kT1, obj, sem), Begin(kT1, sem),
          g_.FutexWake(kT2, sem), End(kT1, sem),
          g_.SemWait(TS_EV_SEM_DESTROY, kT1, sem)});
  }
  EXPECT_LE(locks().locks().size(), 2u);
  EXPECT_EQ(locks().FindThread(kT1)->condition_waits, 20000u);
}

// Deadlocks: past the bound the oldest resolved cycles go, counted.
TEST_F(LockModelTest, DeadlocksAreBounded) {
  TraceModelConfig c;
  c.locks.exact_ownership = true;
  c.locks.max_deadlocks = 4;
  model_ = TraceModel(c);
  for (int round = 0; round < 10; ++round) {
    Feed({g_.LockAcquire(kT1, kObjA, kSemA), g_.LockAcquire(kT2, kObjB, kSemB),
          Begin(kT1, kSemB), Begin(kT2, kSemA)});
    // One of them times out: the cycle resolves.
    Feed({End(kT1, kSemB, /*acquired=*/false), g_.LockRelease(kT1, kObjA, kSemA),
          End(kT2, kSemA), g_.LockRelease(kT2, kObjA, kSemA), g_.LockRelease(kT2, kObjB, kSemB)});
  }
  EXPECT_EQ(locks().deadlocks().size(), 4u);
  EXPECT_EQ(locks().deadlocks_dropped(), 6u);
  EXPECT_NE(locks().FindDeadlock(locks().deadlocks().back().id), nullptr);
}

}  // namespace
}  // namespace threadscope::model
