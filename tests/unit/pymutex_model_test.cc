// The lock model on 3.13+ PyMutex locks (parks, unparks, hand-offs, re-parks), free-threaded
// critical sections, signal locks, and the rules that keep it from ever reporting a deadlock or
// an inversion that is not there.
#include <gtest/gtest.h>

#include <map>

#include "daemon/model/lock_model.h"
#include "daemon/model/trace_model.h"
#include "tests/unit/event_generator.h"

namespace threadscope::model {
namespace {

using testing::EventGenerator;

constexpr uint32_t kMain = 1000;
constexpr uint32_t kT1 = 1001;
constexpr uint32_t kT2 = 1002;
constexpr uint32_t kT3 = 1003;
constexpr uint64_t kLockType = 0x9a0000, kRLockType = 0x9b0000, kListType = 0x9c0000,
                   kDictType = 0x9d0000, kOtherType = 0x9e0000;
constexpr uint64_t kA = 0x7f0000001000, kB = 0x7f0000002000, kC = 0x7f0000003000;
// Each waiter's wait entry lives on its own stack.
constexpr uint64_t kSema1 = 0x7ffd00001000, kSema2 = 0x7ffd00002000, kSema3 = 0x7ffd00003000;
constexpr uint64_t kEntry1 = 0x7ffd00001100, kEntry2 = 0x7ffd00002100, kEntry3 = 0x7ffd00003100;

class PyMutexModelTest : public ::testing::Test {
 protected:
  void SetUp() override { Mode(false); }
  void Mode(bool exact) {
    TraceModelConfig c;
    c.locks.exact_ownership = exact;
    model_ = TraceModel(c);
    Feed({g_.PyType(kLockType, "_thread.lock"), g_.PyType(kRLockType, "_thread.RLock"),
          g_.PyType(kListType, "list"), g_.PyType(kDictType, "dict"),
          g_.PyType(kOtherType, "_io.BufferedWriter")});
  }
  std::vector<LockChangeEvent> Feed(const std::vector<std::string>& records) {
    std::vector<ModelEvent> out;
    for (const auto& r : records) {
      if (r.empty()) continue;
      model_.ApplyRecord(reinterpret_cast<const uint8_t*>(r.data()), r.size(), &out);
    }
    std::vector<LockChangeEvent> locks;
    for (const auto& e : out) {
      if (e.kind == ModelEvent::Kind::kLock) locks.push_back(e.lock);
    }
    return locks;
  }
  const LockModel& locks() { return model_.locks(); }
  // The newest lock whose object is `obj`.
  const LockRecord& At(uint64_t obj) {
    const LockRecord* found = nullptr;
    for (const auto& [id, l] : locks().locks()) {
      if (l.obj == obj && (!found || l.id > found->id)) found = &l;
    }
    EXPECT_NE(found, nullptr) << "no lock at " << std::hex << obj;
    static LockRecord empty;
    return found ? *found : empty;
  }
  std::string Wait(uint64_t ns) {
    g_.Advance(ns);
    return {};
  }
  std::string Location(uint64_t code, uint64_t instr, const std::string& file, int line,
                       const std::string& function) {
    ts_py_location fixed{};
    fixed.code = code;
    fixed.instr = instr;
    fixed.line = line;
    return MakePyLocationRecord(g_.pid(), g_.now(), fixed, file, function);
  }

  EventGenerator g_{kMain};
  TraceModel model_;
};

TEST_F(PyMutexModelTest, HandOffEndsTheWaitExactlyAndNamesTheNewOwner) {
  // T1 took A unseen (an uncontended PyMutex never calls anything); T2 blocks; T1's release
  // hands A over (T2 waited over 1 ms).
  auto ev = Feed({g_.MutexNew(kMain, kA, kLockType), g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 7),
                  Wait(5'000'000), g_.Unpark(kT1, kSema2, /*handed_off=*/true, kT2),
                  g_.ParkEnd(kT2, kSema2, TS_PARK_OK, /*handed_off=*/true)});
  const LockRecord& a = At(kA);
  EXPECT_EQ(a.kind, LockKind::kLock);
  EXPECT_TRUE(a.pymutex);
  EXPECT_EQ(a.sem, 0u);
  EXPECT_EQ(a.contended, 1u);
  EXPECT_EQ(a.parks, 1u);
  EXPECT_EQ(a.handoffs, 1u);
  EXPECT_EQ(a.barges, 0u);
  EXPECT_EQ(a.wakeups, 1u);
  EXPECT_EQ(a.wait.count, 1u);
  EXPECT_GE(a.wait.max, 5'000'000u);
  ASSERT_TRUE(a.owner);
  EXPECT_EQ(*a.owner, static_cast<pid_t>(kT2));
  EXPECT_TRUE(a.waiters.empty());
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0].change, LockChange::kWaitBegin);
  EXPECT_EQ(ev[1].change, LockChange::kWoken);
  EXPECT_EQ(ev[1].tid, static_cast<pid_t>(kT1));
  EXPECT_EQ(ev[2].change, LockChange::kWaitEnd);
  EXPECT_TRUE(ev[2].acquired);
  EXPECT_EQ(ev[2].other, static_cast<pid_t>(kT1));
  EXPECT_EQ(locks().FindThread(kT2)->last_woken_by, static_cast<pid_t>(kT1));
}

TEST_F(PyMutexModelTest, ReParksOfOneAcquireAreOneWait) {
  // Woken without a hand-off, T2 loses the race to a barging T1 and parks again inside the same
  // acquire (same mutex_entry, same time_to_be_fair): one wait, two parks.
  auto ev = Feed({g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 7), Wait(500'000),
                  g_.Unpark(kT1, kSema2, false, kT2), g_.ParkEnd(kT2, kSema2, TS_PARK_OK, false),
                  g_.Gil(kT2, TS_GIL_TAKE_BEGIN), g_.Gil(kT2, TS_GIL_TAKE_END),
                  g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 7), Wait(2'000'000),
                  g_.Unpark(kT1, kSema2, true, kT2), g_.ParkEnd(kT2, kSema2, TS_PARK_OK, true)});
  const LockRecord& a = At(kA);
  EXPECT_EQ(a.contended, 1u);
  EXPECT_EQ(a.parks, 2u);
  EXPECT_EQ(a.reparks, 1u);
  EXPECT_EQ(a.barges, 1u);
  EXPECT_EQ(a.handoffs, 1u);
  EXPECT_EQ(a.wait.count, 1u);
  EXPECT_GE(a.wait.max, 2'500'000u);  // from the first park to the last end
  int begins = 0, ends = 0;
  for (const auto& e : ev) {
    begins += e.change == LockChange::kWaitBegin;
    ends += e.change == LockChange::kWaitEnd;
  }
  EXPECT_EQ(begins, 1);
  EXPECT_EQ(ends, 1);
  EXPECT_EQ(locks().FindThread(kT2)->lock_waits, 1u);
}

TEST_F(PyMutexModelTest, AWokenWaiterCompetesUntilItsNextLockRecord) {
  Feed({g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 7), Wait(300'000),
        g_.Unpark(kT1, kSema2, false, kT2), g_.ParkEnd(kT2, kSema2, TS_PARK_OK, false)});
  {
    const LockRecord& a = At(kA);
    ASSERT_EQ(a.waiters.size(), 1u);  // competing, still listed...
    EXPECT_TRUE(a.waiters[0].woken);  // ...as woken
    EXPECT_TRUE(locks().FindThread(kT2)->waiting_woken);
    EXPECT_FALSE(a.owner);            // nobody holds it right now
    EXPECT_EQ(a.wait.count, 0u);
  }
  // Its next park is for B: it won A's race, and has held A since its last park ended.
  auto ev = Feed({Wait(1'000'000), g_.Park(kT2, kSema2, kB, kLockType, kEntry2, 9)});
  const LockRecord& a = At(kA);
  EXPECT_TRUE(a.waiters.empty());
  EXPECT_EQ(a.wait.count, 1u);
  EXPECT_LT(a.wait.max, 1'000'000u);
  ASSERT_TRUE(a.owner);
  EXPECT_EQ(*a.owner, static_cast<pid_t>(kT2));
  EXPECT_FALSE(a.owner_exact);
  ASSERT_GE(ev.size(), 2u);
  EXPECT_EQ(ev[0].change, LockChange::kWaitEnd);
  EXPECT_TRUE(ev[0].acquired);
  EXPECT_EQ(At(kB).waiters.size(), 1u);
}

TEST_F(PyMutexModelTest, ATimeoutIsFinalOnlyOnceNoRetryCanFollow) {
  // Timed out, but the unparker had already dequeued it: the retry waits on and gets the lock.
  Feed({g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 7, 50'000'000), Wait(50'000'000),
        g_.ParkEnd(kT2, kSema2, TS_PARK_TIMEOUT), g_.Unpark(kT1, kSema2, true, kT2),
        g_.Park(kT2, kSema2, 0, 0, 0, 0, -1, TS_PARK_SITE_RETRY),
        g_.ParkEnd(kT2, kSema2, TS_PARK_OK, true, TS_PARK_SITE_RETRY)});
  EXPECT_EQ(At(kA).timeouts, 0u);
  EXPECT_EQ(At(kA).contended, 1u);
  EXPECT_EQ(At(kA).owner, static_cast<pid_t>(kT2));
  // A real timeout: nothing continues it, and another thread's record 20 ms later makes it final.
  auto ev = Feed({g_.Park(kT3, kSema3, kB, kLockType, kEntry3, 11, 10'000'000), Wait(10'000'000),
                  g_.ParkEnd(kT3, kSema3, TS_PARK_TIMEOUT)});
  EXPECT_EQ(At(kB).timeouts, 0u);  // not yet
  ev = Feed({Wait(25'000'000), g_.Gil(kT1, TS_GIL_DROP)});
  const LockRecord& b = At(kB);
  EXPECT_EQ(b.timeouts, 1u);
  EXPECT_FALSE(b.owner);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].change, LockChange::kWaitEnd);
  EXPECT_FALSE(ev[0].acquired);
  EXPECT_GE(ev[0].wait_ns, 10'000'000u);
  EXPECT_LT(ev[0].wait_ns, 20'000'000u);  // ends when the park did, not when it was decided
}

TEST_F(PyMutexModelTest, AnUnparkPostedBeforeItsParkStillPairs) {
  auto ev = Feed({g_.Unpark(kT1, kSema2, true, kT2),
                  g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 7),
                  g_.ParkEnd(kT2, kSema2, TS_PARK_OK, true)});
  const LockRecord& a = At(kA);
  EXPECT_EQ(a.wakeups, 1u);
  EXPECT_EQ(a.handoffs, 1u);
  EXPECT_EQ(a.last_waker, static_cast<pid_t>(kT1));
  EXPECT_EQ(a.owner, static_cast<pid_t>(kT2));
  ASSERT_EQ(ev.back().change, LockChange::kWaitEnd);
  EXPECT_EQ(ev.back().other, static_cast<pid_t>(kT1));
}

TEST_F(PyMutexModelTest, DistinctLockObjectsAreDistinctLocks) {
  // What the semaphore reading got wrong on 3.13.1+: the mutex byte is not an identity.
  Feed({g_.Park(kT1, kSema1, kA, kLockType, kEntry1, 1), g_.Park(kT2, kSema2, kB, kLockType, kEntry2, 2),
        g_.Park(kT3, kSema3, kC, kRLockType, kEntry3, 3)});
  EXPECT_NE(At(kA).id, At(kB).id);
  EXPECT_NE(At(kA).id, At(kC).id);
  EXPECT_EQ(At(kC).kind, LockKind::kRLock);
  EXPECT_EQ(At(kA).id_address, kA);
  EXPECT_FALSE(At(kA).id_is_sem);
  EXPECT_EQ(locks().locks().size(), 3u);
}

TEST_F(PyMutexModelTest, AFreedLockEndsItsGeneration) {
  Feed({g_.MutexNew(kMain, kA, kLockType), g_.Park(kT1, kSema1, kA, kLockType, kEntry1, 1),
        g_.Unpark(kT2, kSema1, true, kT1), g_.ParkEnd(kT1, kSema1, TS_PARK_OK, true),
        g_.LockFree(kT1, kA), g_.MutexNew(kMain, kA, kLockType)});
  std::vector<const LockRecord*> at;
  for (const auto& [id, l] : locks().locks()) {
    if (l.obj == kA) at.push_back(&l);
  }
  ASSERT_EQ(at.size(), 2u);
  if (at[0]->id > at[1]->id) std::swap(at[0], at[1]);
  EXPECT_EQ(at[0]->generation, 1u);
  EXPECT_TRUE(at[0]->freed_ns);
  EXPECT_EQ(at[1]->generation, 2u);
  EXPECT_EQ(at[1]->contended, 0u);
}

TEST_F(PyMutexModelTest, EventParksAreNotLocks) {
  auto ev = Feed({g_.EventPark(kMain, kSema1, 0x7f00000090b9), g_.Unpark(kT1, kSema1, false, kMain),
                  g_.ParkEnd(kMain, kSema1)});
  EXPECT_TRUE(ev.empty());
  EXPECT_TRUE(locks().locks().empty());
  EXPECT_TRUE(locks().contention().empty());
  EXPECT_EQ(locks().event_parks(), 1u);
}

TEST_F(PyMutexModelTest, AnUnknownMutexIsContentionNeverALock) {
  // 3.15: a buffered file's lock is a PyMutex too; it is reported by line, never as a lock,
  // and never takes part in a deadlock.
  Feed({g_.Park(kT1, kSema1, kA, kOtherType, kEntry1, 1), g_.Park(kT2, kSema2, kB, 0, kEntry2, 2)});
  EXPECT_TRUE(locks().locks().empty());
  ASSERT_EQ(locks().contention().size(), 1u);  // same kind, no type, no stack: one row
  const ContentionSite& site = locks().contention().begin()->second;
  EXPECT_EQ(site.kind, ContentionKind::kMutex);
  EXPECT_EQ(site.waits, 2u);
  EXPECT_EQ(site.waiters.size(), 2u);
  EXPECT_TRUE(locks().deadlocks().empty());
}

TEST_F(PyMutexModelTest, CriticalSectionContentionByTypeAndLine) {
  // Free-threaded: four threads append to one list and store into one dict.
  const uint64_t kCode = 0xc0de0000, kList = 0x7f00000a0000, kDict = 0x7f00000b0000;
  std::vector<std::string> r = {Location(kCode, 0x110, "app/q.py", 42, "worker"),
                                Location(kCode, 0x148, "app/q.py", 43, "worker")};
  uint64_t fair = 100;
  for (uint32_t tid : {kT1, kT2, kT3}) {
    uint64_t sema = 0x7ffd10000000 + tid * 0x1000, entry = sema + 0x100;
    r.push_back(testing::WithStack(g_.CsSlow(tid, kList, kListType), {{kCode, 0x110}}));
    r.push_back(testing::WithStack(g_.CsPark(tid, sema, kList, kListType, entry, ++fair),
                                   {{kCode, 0x110}}));
    r.push_back(Wait(1'000'000));
    r.push_back(g_.Unpark(kMain, sema, true, tid));
    r.push_back(g_.ParkEnd(tid, sema, TS_PARK_OK, true));
    r.push_back(testing::WithStack(g_.CsPark(tid, sema, kDict, kDictType, entry, ++fair),
                                   {{kCode, 0x148}}));
    r.push_back(Wait(2'000'000));
    r.push_back(g_.Unpark(kMain, sema, false, tid));
    r.push_back(g_.ParkEnd(tid, sema, TS_PARK_OK, false));
    r.push_back(g_.Exit(tid));
  }
  auto ev = Feed(r);
  EXPECT_TRUE(locks().locks().empty());
  ASSERT_EQ(locks().contention().size(), 2u);
  std::map<std::string, const ContentionSite*> by_type;
  for (const auto& [id, c] : locks().contention()) by_type[c.type] = &c;
  const ContentionSite* list = by_type.at("list");
  const ContentionSite* dict = by_type.at("dict");
  EXPECT_EQ(list->kind, ContentionKind::kCriticalSection);
  EXPECT_EQ(list->waits, 3u);
  EXPECT_EQ(list->spins, 3u);
  EXPECT_EQ(list->thread_count, 3u);
  EXPECT_EQ(list->wait.count, 3u);
  EXPECT_GE(list->wait.sum, 3'000'000u);
  EXPECT_EQ(model_.locations().Get(list->location).line, 42);
  EXPECT_EQ(model_.locations().Get(dict->location).line, 43);
  EXPECT_EQ(dict->waits, 3u);
  EXPECT_EQ(dict->wait.count, 3u);  // ended by each thread's exit
  EXPECT_TRUE(list->waiters.empty());
  EXPECT_TRUE(dict->waiters.empty());
  const ThreadLockState* t1 = locks().FindThread(kT1);
  EXPECT_EQ(t1->contention_waits, 2u);
  EXPECT_EQ(t1->lock_waits, 0u);
  int begins = 0;
  for (const auto& e : ev) {
    if (e.change == LockChange::kWaitBegin) {
      ++begins;
      EXPECT_EQ(e.wait_kind, WaitKind::kContention);
      EXPECT_NE(e.site_id, 0u);
    }
  }
  EXPECT_EQ(begins, 6);
}

TEST_F(PyMutexModelTest, ContentionRowsAreBounded) {
  TraceModelConfig c;
  c.locks.max_contention_sites = 4;
  model_ = TraceModel(c);
  std::vector<std::string> r = {g_.PyType(kListType, "list")};
  for (int i = 0; i < 20; ++i) {
    uint64_t code = 0xc0de0000 + i * 0x1000;
    r.push_back(Location(code, 0x10, "app/q.py", 100 + i, "f"));
    r.push_back(testing::WithStack(g_.CsPark(kT1, kSema1, 0x7f00000a0000, kListType, kEntry1, i),
                                   {{code, 0x10}}));
    r.push_back(g_.ParkEnd(kT1, kSema1, TS_PARK_OK, true));
  }
  Feed(r);
  EXPECT_EQ(locks().contention().size(), 5u);  // 4 rows and "other"
  uint64_t waits = 0, other = 0;
  for (const auto& [id, site] : locks().contention()) {
    waits += site.waits;
    if (site.other) other = site.waits;
  }
  EXPECT_EQ(waits, 20u);
  EXPECT_EQ(other, 16u);
}

TEST_F(PyMutexModelTest, AllModeDeadlockOnPyMutexLocks) {
  Mode(true);
  auto ev = Feed({g_.MutexNew(kMain, kA, kLockType), g_.MutexNew(kMain, kB, kLockType),
                  g_.MutexAcquire(kT1, kA), g_.MutexAcquire(kT2, kB),
                  g_.Park(kT1, kSema1, kB, kLockType, kEntry1, 1),
                  g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 2)});
  ASSERT_EQ(locks().deadlocks().size(), 1u);
  EXPECT_EQ(ev.back().change, LockChange::kDeadlock);
}

TEST_F(PyMutexModelTest, ContendedModeDeadlockNeedsOwnersFromHandOffs) {
  // Owners learned from hand-offs close a cycle; a woken waiter (not blocked) never does.
  Feed({g_.Park(kT1, kSema1, kA, kLockType, kEntry1, 1), g_.Unpark(kT3, kSema1, true, kT1),
        g_.ParkEnd(kT1, kSema1, TS_PARK_OK, true),  // T1 holds A
        g_.Park(kT2, kSema2, kB, kLockType, kEntry2, 2), g_.Unpark(kT3, kSema2, true, kT2),
        g_.ParkEnd(kT2, kSema2, TS_PARK_OK, true),  // T2 holds B
        g_.Park(kT1, kSema1, kB, kLockType, kEntry1, 3)});
  EXPECT_TRUE(locks().deadlocks().empty());
  Feed({g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 4)});
  ASSERT_EQ(locks().deadlocks().size(), 1u);
  const Deadlock& d = locks().deadlocks()[0];
  std::map<pid_t, uint64_t> waits;
  for (size_t i = 0; i < d.threads.size(); ++i) waits[d.threads[i]] = d.locks[i];
  EXPECT_EQ(waits.at(kT1), At(kB).id);
  EXPECT_EQ(waits.at(kT2), At(kA).id);
}

TEST_F(PyMutexModelTest, AWokenWaiterIsNotInACycle) {
  Mode(true);
  Feed({g_.MutexAcquire(kT1, kA), g_.MutexAcquire(kT2, kB),
        g_.Park(kT1, kSema1, kB, kLockType, kEntry1, 1),
        // T2 released B, waking T1 without handing it over; then T2 blocks on A.
        g_.MutexRelease(kT2, kB), g_.Unpark(kT2, kSema1, false, kT1),
        g_.ParkEnd(kT1, kSema1, TS_PARK_OK, false), g_.MutexAcquire(kT2, kB),
        g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 2)});
  EXPECT_TRUE(locks().deadlocks().empty());
  // T1 lost the race and parks again: now it is a cycle.
  Feed({g_.Park(kT1, kSema1, kB, kLockType, kEntry1, 1)});
  EXPECT_EQ(locks().deadlocks().size(), 1u);
}

TEST_F(PyMutexModelTest, ConditionWaiterLockIsASignalNotAnInversion) {
  // Thread.start() on 3.12: Event.wait -> Condition.wait with the Condition's lock C held takes
  // a fresh waiter lock W (C -> W), the new thread's notify() releases W (not its owner), and
  // the waiter retakes C while it "holds" W (W -> C). Not an inversion: W is a signal.
  Mode(true);
  const uint64_t kWaiter = kB, kCond = kA;
  auto ev = Feed({g_.LockNew(kMain, kCond, 0x55000000a000), g_.LockNew(kMain, kWaiter, 0x55000000b000),
                  g_.LockAcquire(kMain, kCond, 0x55000000a000),
                  g_.LockAcquire(kMain, kWaiter, 0x55000000b000),  // waiter.acquire(): C -> W
                  g_.LockRelease(kMain, kCond, 0x55000000a000),     // _release_save
                  g_.LockAcquire(kT1, kCond, 0x55000000a000),       // the new thread: set()
                  g_.LockRelease(kT1, kWaiter, 0x55000000b000),     // notify(): W released by T1
                  g_.LockRelease(kT1, kCond, 0x55000000a000),
                  g_.LockAcquire(kMain, kWaiter, 0x55000000b000),   // waiter.acquire() returns
                  g_.LockAcquire(kMain, kCond, 0x55000000a000)});   // _acquire_restore: W -> C?
  EXPECT_TRUE(locks().inversions().empty());
  for (const auto& e : ev) EXPECT_NE(e.change, LockChange::kOrderInversion);
  EXPECT_TRUE(At(kWaiter).signal);
  EXPECT_FALSE(At(kCond).signal);
}

TEST_F(PyMutexModelTest, ManyLocksTakenInOneOrderHaveNoInversion) {
  // The promise: distinct locks always taken in one order never give an inversion,
  // every lock keeps its own id and its exact count.
  Mode(true);
  constexpr int kLocks = 200;
  std::vector<std::string> r;
  auto obj = [](int i) { return 0x7f0000100000 + static_cast<uint64_t>(i) * 0x40; };
  for (int i = 0; i < kLocks; ++i) r.push_back(g_.MutexNew(kMain, obj(i), kLockType));
  for (int round = 0; round < 5; ++round) {
    for (uint32_t tid : {kT1, kT2, kT3}) {
      for (int i = 0; i + 2 < kLocks; i += 3) {
        for (int k = 0; k < 3; ++k) r.push_back(g_.MutexAcquire(tid, obj(i + k)));
        for (int k = 2; k >= 0; --k) r.push_back(g_.MutexRelease(tid, obj(i + k)));
      }
    }
  }
  auto ev = Feed(r);
  EXPECT_TRUE(locks().inversions().empty());
  EXPECT_TRUE(locks().deadlocks().empty());
  std::set<uint64_t> ids;
  for (int i = 0; i + 2 < kLocks; ++i) {
    const LockRecord& l = At(obj(i));
    ids.insert(l.id);
    EXPECT_EQ(l.acquires, 15u) << i;
    EXPECT_EQ(l.releases, 15u) << i;
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kLocks - 2));
}

TEST_F(PyMutexModelTest, ALockIsNeverInAnInversionWithItselfOrAnUnknownLock) {
  Mode(true);
  Feed({// Two generations at one address, taken under each other in both orders.
        g_.MutexNew(kMain, kA, kLockType), g_.MutexAcquire(kT1, kA), g_.MutexAcquire(kT1, kB),
        g_.MutexRelease(kT1, kB), g_.MutexRelease(kT1, kA), g_.LockFree(kMain, kA),
        g_.MutexNew(kMain, kA, kLockType), g_.MutexAcquire(kT2, kB), g_.MutexAcquire(kT2, kA),
        g_.MutexRelease(kT2, kA), g_.MutexRelease(kT2, kB),
        // A lock of unknown kind is never an order's end.
        g_.MutexAcquire(kT1, kC, 1, false, TS_LOCK_UNKNOWN), g_.MutexAcquire(kT1, kB),
        g_.MutexRelease(kT1, kB), g_.MutexRelease(kT1, kC, TS_LOCK_UNKNOWN),
        g_.MutexAcquire(kT2, kB), g_.MutexAcquire(kT2, kC, 1, false, TS_LOCK_UNKNOWN)});
  // kB with the first kA, and kB with the second kA: different locks, each seen in one order.
  EXPECT_TRUE(locks().inversions().empty());
}

TEST_F(PyMutexModelTest, RLockOwnerAndDepthComeFromTheObject) {
  Mode(true);
  const uint64_t kIdent = 0x7f00aaaa0000;
  // Taken 3 deep before the attach; released level by level.
  Feed({g_.Bootstrap(kT1, 0xb00, kIdent),
        g_.MutexRelease(kT1, kC, TS_LOCK_RLOCK, TS_LOCK_OP_RELEASE, kIdent, 3, true)});
  EXPECT_EQ(At(kC).owner, static_cast<pid_t>(kT1));
  EXPECT_EQ(At(kC).depth, 2u);
  Feed({g_.MutexRelease(kT1, kC, TS_LOCK_RLOCK, TS_LOCK_OP_RELEASE, kIdent, 2, true)});
  EXPECT_EQ(At(kC).depth, 1u);
  Feed({g_.MutexRelease(kT1, kC, TS_LOCK_RLOCK, TS_LOCK_OP_RELEASE, kIdent, 1, true)});
  EXPECT_FALSE(At(kC).owner);
  // A release by a thread that does not own it raises and changes nothing.
  Feed({g_.MutexAcquire(kT1, kC, 1, false, TS_LOCK_RLOCK, TS_LOCK_OP_ACQUIRE, kIdent, 1),
        g_.MutexRelease(kT2, kC, TS_LOCK_RLOCK, TS_LOCK_OP_RELEASE, kIdent, 1, true)});
  EXPECT_EQ(At(kC).owner, static_cast<pid_t>(kT1));
  // Re-entry: the object's level.
  Feed({g_.MutexAcquire(kT1, kC, 1, false, TS_LOCK_RLOCK, TS_LOCK_OP_ACQUIRE, kIdent, 2)});
  EXPECT_EQ(At(kC).depth, 2u);
}

TEST_F(PyMutexModelTest, AllModeHandOffThenAcquireIsOneFirstAcquisition) {
  Mode(true);
  const uint64_t kIdent1 = 0x7f00aaaa0000, kIdent2 = 0x7f00bbbb0000;
  Feed({g_.MutexAcquire(kT1, kC, 1, false, TS_LOCK_RLOCK, TS_LOCK_OP_ACQUIRE, kIdent1, 1),
        g_.Park(kT2, kSema2, kC, kRLockType, kEntry2, 5), Wait(2'000'000),
        g_.MutexRelease(kT1, kC, TS_LOCK_RLOCK, TS_LOCK_OP_RELEASE, kIdent1, 1, true),
        g_.Unpark(kT1, kSema2, true, kT2), g_.ParkEnd(kT2, kSema2, TS_PARK_OK, true),
        g_.MutexAcquire(kT2, kC, 1, true, TS_LOCK_RLOCK, TS_LOCK_OP_ACQUIRE, kIdent2, 1)});
  const LockRecord& c = At(kC);
  EXPECT_EQ(c.owner, static_cast<pid_t>(kT2));
  EXPECT_TRUE(c.owner_exact);
  EXPECT_EQ(c.depth, 1u);
  EXPECT_EQ(c.acquires, 2u);
  EXPECT_EQ(c.contended, 1u);
  EXPECT_EQ(c.failed_trylocks, 0u);
}

TEST_F(PyMutexModelTest, AllModeResultEndsAWokenWait) {
  Mode(true);
  // Woken without the lock; the acquire's own return says it timed out in the end.
  Feed({g_.MutexAcquire(kT1, kA), g_.Park(kT2, kSema2, kA, kLockType, kEntry2, 5, 40'000'000),
        g_.Unpark(kT1, kSema2, false, kT2), g_.ParkEnd(kT2, kSema2, TS_PARK_OK, false),
        g_.MutexAcquire(kT2, kA, TS_ACQUIRE_FAILED, true)});
  EXPECT_EQ(At(kA).timeouts, 1u);
  EXPECT_EQ(At(kA).failed_trylocks, 0u);
  EXPECT_TRUE(At(kA).waiters.empty());
  // Interrupted: the acquire raised.
  Feed({g_.Park(kT3, kSema3, kA, kLockType, kEntry3, 6), g_.ParkEnd(kT3, kSema3, TS_PARK_INTR),
        g_.MutexAcquire(kT3, kA, TS_ACQUIRE_ERROR, true)});
  EXPECT_EQ(At(kA).interrupts, 1u);
  EXPECT_EQ(At(kA).timeouts, 1u);
}

TEST_F(PyMutexModelTest, RecordsOfTheOlderAbiStillDecode) {
  // ABI 1 lock events were 64 bytes; a recording made then replays with the new fields zero.
  ts_lock_event e{};
  e.obj = kA;
  e.sem = 0x55000000a000;
  e.kind = TS_LOCK_LOCK;
  std::string r = MakeRecord(TS_EV_LOCK_NEW, 1000, kMain, 5, e);
  r.resize(64);
  ts_header h;
  std::memcpy(&h, r.data(), sizeof(h));
  h.size = 64;
  h.version = 1;
  std::memcpy(r.data(), &h, sizeof(h));
  Feed({r});
  EXPECT_EQ(At(kA).sem, 0x55000000a000u);
  EXPECT_EQ(model_.stats().decode_errors, 0u);
}

}  // namespace
}  // namespace threadscope::model
