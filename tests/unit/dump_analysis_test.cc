// The dump's reasoning, from synthetic facts: states, what each thread waits for, owners and how
// they are known, and deadlocks built from proven edges only.
#include "daemon/dump/analysis.h"

#include <gtest/gtest.h>

namespace threadscope::dump {
namespace {

constexpr uint64_t kLockA = 0x7f0000001000;
constexpr uint64_t kLockB = 0x7f0000002000;
constexpr uint64_t kRLock = 0x7f0000003000;
constexpr uint64_t kWaiter = 0x7f0000004000;
constexpr uint64_t kCond = 0x7f0000005000;
constexpr uint64_t kEvent = 0x7f0000006000;
constexpr uint64_t kThreadObj = 0x7f0000007000;

FrameFacts AppFrame(const std::string& fn, int line) {
  FrameFacts f;
  f.where = {"/srv/app.py", fn, line};
  return f;
}

FrameFacts StdFrame(const std::string& qualname, int line, uint64_t self,
                    const std::string& cls) {
  FrameFacts f;
  f.where = {"/usr/lib/python3.11/threading.py", qualname, line};
  f.self = self;
  f.self_type = cls;
  f.self_stdlib_class = cls;
  return f;
}

WithHold With(uint64_t lock, int line) {
  WithHold w;
  w.object = lock;
  w.type = "_thread.lock";
  w.lock = lock;
  w.taken_at = {"/srv/app.py", "worker", line};
  return w;
}

ThreadFacts Thread(pid_t tid, uint64_t ident) {
  ThreadFacts t;
  t.tid = tid;
  t.ident = ident;
  t.has_thread_state = true;
  t.holds_gil = false;
  return t;
}

ThreadFacts BlockedOn(ThreadFacts t, uint64_t lock) {
  t.blocked.kind = BlockKind::kLock;
  t.blocked.object = lock;
  return t;
}

LockInfo PlainLock(uint64_t addr) {
  LockInfo l;
  l.address = addr;
  l.type = LockType::kLock;
  l.type_name = "_thread.lock";
  l.locked = true;
  return l;
}

const ThreadReport& ThreadOf(const DumpReport& r, pid_t tid) {
  for (const auto& t : r.threads) {
    if (t.tid == tid) return t;
  }
  ADD_FAILURE() << "no thread " << tid;
  static ThreadReport none;
  return none;
}

TEST(DumpAnalysisTest, TwoLockDeadlockFromWithStatements) {
  ProcessFacts p;
  p.locks[kLockA] = PlainLock(kLockA);
  p.locks[kLockB] = PlainLock(kLockB);
  ThreadFacts a = BlockedOn(Thread(11, 0xa), kLockB);
  a.frames.push_back(AppFrame("one", 20));
  a.frames.back().withs.push_back(With(kLockA, 18));
  ThreadFacts b = BlockedOn(Thread(12, 0xb), kLockA);
  b.frames.push_back(AppFrame("two", 30));
  b.frames.back().withs.push_back(With(kLockB, 28));
  p.threads = {a, b};

  DumpReport r = Analyze(p);
  const ThreadReport& ta = ThreadOf(r, 11);
  EXPECT_EQ(ta.state, ThreadState::kLockWait);
  ASSERT_TRUE(ta.waiting_for);
  EXPECT_EQ(ta.waiting_for->lock_id, ObjectId(kLockB));
  EXPECT_EQ(ta.waiting_for->owner, 12);
  EXPECT_EQ(ta.waiting_for->owner_source, OwnerSource::kWithStatement);
  ASSERT_EQ(ta.holds.size(), 1u);
  EXPECT_EQ(ta.holds[0].lock_id, ObjectId(kLockA));

  ASSERT_EQ(r.deadlocks.size(), 1u);
  const DeadlockReport& d = r.deadlocks[0];
  EXPECT_EQ(d.threads, (std::vector<pid_t>{11, 12}));
  EXPECT_EQ(d.locks, (std::vector<std::string>{ObjectId(kLockB), ObjectId(kLockA)}));
  ASSERT_TRUE(d.wait_at[0]);
  EXPECT_EQ(d.wait_at[0]->line, 20);
  ASSERT_TRUE(d.taken_at[0]);
  EXPECT_EQ(d.taken_at[0]->line, 28);  // where 12 took B, which 11 waits for
  EXPECT_EQ(d.taken_at[1]->line, 18);
}

TEST(DumpAnalysisTest, RLockOwnerFieldIsExactAndAnEventWaitIsNotContention) {
  ProcessFacts p;
  LockInfo r;
  r.address = kRLock;
  r.type = LockType::kRLock;
  r.type_name = "_thread.RLock";
  r.locked = true;
  r.owner_ident = 0xa;
  r.count = 1;
  p.locks[kRLock] = r;
  // 11 holds the RLock and waits on an Event (Condition.wait inside Event.wait).
  ThreadFacts holder = BlockedOn(Thread(11, 0xa), kWaiter);
  holder.frames.push_back(StdFrame("Condition.wait", 320, kCond, "Condition"));
  holder.frames.push_back(StdFrame("Event.wait", 622, kEvent, "Event"));
  holder.frames.push_back(AppFrame("holder", 40));
  ThreadFacts waiter = BlockedOn(Thread(12, 0xb), kRLock);
  waiter.frames.push_back(AppFrame("waiter", 50));
  p.threads = {holder, waiter};

  DumpReport out = Analyze(p);
  const ThreadReport& h = ThreadOf(out, 11);
  EXPECT_EQ(h.state, ThreadState::kConditionWait);
  ASSERT_TRUE(h.waiting_for);
  EXPECT_EQ(h.waiting_for->kind, WaitKind::kEvent);
  EXPECT_EQ(h.waiting_for->object_id, ObjectId(kEvent));
  EXPECT_FALSE(h.waiting_for->owner);
  ASSERT_TRUE(h.wait_frame);
  EXPECT_EQ(h.stack[*h.wait_frame].function, "holder");
  ASSERT_EQ(h.holds.size(), 1u);
  EXPECT_EQ(h.holds[0].source, OwnerSource::kRLockOwner);

  const ThreadReport& w = ThreadOf(out, 12);
  ASSERT_TRUE(w.waiting_for);
  EXPECT_EQ(w.waiting_for->kind, WaitKind::kRLock);
  EXPECT_EQ(w.waiting_for->owner, 11);
  EXPECT_EQ(w.waiting_for->owner_source, OwnerSource::kRLockOwner);
  EXPECT_TRUE(out.deadlocks.empty());  // the holder waits on an Event: no cycle
}

TEST(DumpAnalysisTest, ConditionWaitReleasesTheConditionsLock) {
  ProcessFacts p;
  p.locks[kLockA] = PlainLock(kLockA);
  p.condition_locks[kCond] = kLockA;
  // 11: `with cond: cond.wait()` -- its frame is inside the with, but the wait released it.
  ThreadFacts t = BlockedOn(Thread(11, 0xa), kWaiter);
  t.frames.push_back(StdFrame("Condition.wait", 320, kCond, "Condition"));
  t.frames.push_back(AppFrame("consumer", 10));
  WithHold w;
  w.object = kCond;
  w.type = "Condition";
  w.lock = kLockA;
  t.frames.back().withs.push_back(w);
  // 12 waits for the condition's lock.
  ThreadFacts u = BlockedOn(Thread(12, 0xb), kLockA);
  u.frames.push_back(AppFrame("producer", 20));
  p.threads = {t, u};

  DumpReport r = Analyze(p);
  EXPECT_TRUE(ThreadOf(r, 11).holds.empty());
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->kind, WaitKind::kCondition);
  const ThreadReport& producer = ThreadOf(r, 12);
  ASSERT_TRUE(producer.waiting_for);
  EXPECT_FALSE(producer.waiting_for->owner);
  EXPECT_EQ(producer.waiting_for->owner_source, OwnerSource::kUnknown);
}

TEST(DumpAnalysisTest, JoinsNameTheJoinedThread) {
  ProcessFacts p;
  // 3.4-3.12: the sentinel lock belongs to the thread state of 13.
  p.sentinels[kLockA] = 13;
  ThreadFacts j = BlockedOn(Thread(11, 0xa), kLockA);
  j.frames.push_back(StdFrame("Thread._wait_for_tstate_lock", 1132, kThreadObj, "Thread"));
  j.frames.push_back(StdFrame("Thread.join", 1112, kThreadObj, "Thread"));
  j.frames.push_back(AppFrame("main", 5));
  // 3.13+: parked on the handle of the thread with ident 0xc.
  ThreadFacts k = Thread(12, 0xb);
  k.blocked.kind = BlockKind::kJoinHandle;
  k.blocked.joined_ident = 0xc;
  k.frames.push_back(StdFrame("Thread.join", 1150, kThreadObj, "Thread"));
  ThreadFacts target = Thread(13, 0xc);
  target.blocked.kind = BlockKind::kSleep;
  target.blocked.syscall = "clock_nanosleep";
  p.threads = {j, k, target};

  DumpReport r = Analyze(p);
  EXPECT_EQ(ThreadOf(r, 11).state, ThreadState::kJoinWait);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->owner, 13);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->owner_source, OwnerSource::kSentinel);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->object_id, ObjectId(kThreadObj));
  EXPECT_EQ(ThreadOf(r, 12).waiting_for->owner, 13);
  EXPECT_EQ(ThreadOf(r, 12).waiting_for->owner_source, OwnerSource::kThreadHandle);
  EXPECT_EQ(ThreadOf(r, 13).state, ThreadState::kSleeping);
}

TEST(DumpAnalysisTest, UnknownOwnersAndInferredOnesNeverMakeADeadlock) {
  ProcessFacts p;
  p.locks[kLockA] = PlainLock(kLockA);
  p.locks[kLockB] = PlainLock(kLockB);
  // 11 waits for A holding B by `with`; 12 waits for B holding A by an explicit acquire().
  ThreadFacts a = BlockedOn(Thread(11, 0xa), kLockA);
  a.frames.push_back(AppFrame("one", 20));
  a.frames.back().withs.push_back(With(kLockB, 18));
  ThreadFacts b = BlockedOn(Thread(12, 0xb), kLockB);
  b.frames.push_back(AppFrame("two", 30));
  b.frames.back().acquired.push_back(kLockA);
  p.threads = {a, b};

  DumpReport r = Analyze(p);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->owner, 12);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->owner_source, OwnerSource::kAcquireCall);
  EXPECT_EQ(ThreadOf(r, 12).waiting_for->owner_source, OwnerSource::kWithStatement);
  EXPECT_TRUE(r.deadlocks.empty()) << "an inferred owner is not a proven edge";

  // With no evidence at all, the owner is unknown.
  p.threads[1].frames.back().acquired.clear();
  r = Analyze(p);
  EXPECT_FALSE(ThreadOf(r, 11).waiting_for->owner);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->owner_source, OwnerSource::kUnknown);
}

TEST(DumpAnalysisTest, TwoThreadsInsideWithOnOneLockDecideNothing) {
  ProcessFacts p;
  p.locks[kLockA] = PlainLock(kLockA);
  ThreadFacts w = BlockedOn(Thread(10, 0x9), kLockA);
  w.frames.push_back(AppFrame("w", 1));
  ThreadFacts a = Thread(11, 0xa), b = Thread(12, 0xb);
  a.frames.push_back(AppFrame("a", 2));
  a.frames.back().withs.push_back(With(kLockA, 2));
  b.frames.push_back(AppFrame("b", 3));
  b.frames.back().withs.push_back(With(kLockA, 3));
  p.threads = {w, a, b};
  DumpReport r = Analyze(p);
  EXPECT_FALSE(ThreadOf(r, 10).waiting_for->owner);
}

TEST(DumpAnalysisTest, SelfDeadlockOnANonReentrantLock) {
  ProcessFacts p;
  p.locks[kLockA] = PlainLock(kLockA);
  ThreadFacts t = BlockedOn(Thread(11, 0xa), kLockA);
  t.frames.push_back(AppFrame("inner", 9));
  t.frames.push_back(AppFrame("outer", 5));
  t.frames.back().withs.push_back(With(kLockA, 5));
  p.threads = {t};
  DumpReport r = Analyze(p);
  ASSERT_EQ(r.deadlocks.size(), 1u);
  EXPECT_EQ(r.deadlocks[0].threads, (std::vector<pid_t>{11}));
}

TEST(DumpAnalysisTest, TraceOwnersAreExact) {
  ProcessFacts p;
  p.locks[kLockA] = PlainLock(kLockA);
  p.trace_owners[kLockA] = 12;
  ThreadFacts w = BlockedOn(Thread(11, 0xa), kLockA);
  w.frames.push_back(AppFrame("w", 1));
  ThreadFacts o = Thread(12, 0xb);
  o.blocked.kind = BlockKind::kSyscall;
  o.blocked.syscall = "read";
  o.frames.push_back(AppFrame("o", 2));
  p.threads = {w, o};
  DumpReport r = Analyze(p);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->owner, 12);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->owner_source, OwnerSource::kTrace);
  EXPECT_EQ(ThreadOf(r, 12).state, ThreadState::kSyscall);
  ASSERT_EQ(ThreadOf(r, 12).holds.size(), 1u);
  EXPECT_EQ(ThreadOf(r, 12).holds[0].source, OwnerSource::kTrace);
}

TEST(DumpAnalysisTest, GilStates) {
  ProcessFacts p;
  p.gil_holder = 11;
  ThreadFacts run = Thread(11, 0xa);
  run.holds_gil = true;
  run.frames.push_back(AppFrame("spin", 3));
  ThreadFacts wait = Thread(12, 0xb);
  wait.blocked.kind = BlockKind::kGil;
  wait.frames.push_back(AppFrame("spin", 3));
  ThreadFacts req = Thread(13, 0xc);
  req.gil_requested = true;  // 3.15's flag, no system call seen
  ThreadFacts idle = Thread(14, 0);
  idle.has_thread_state = false;
  p.threads = {run, wait, req, idle};
  DumpReport r = Analyze(p);
  EXPECT_EQ(ThreadOf(r, 11).state, ThreadState::kRunning);
  EXPECT_EQ(ThreadOf(r, 12).state, ThreadState::kGilWait);
  EXPECT_EQ(ThreadOf(r, 12).waiting_for->owner, 11);
  EXPECT_EQ(ThreadOf(r, 12).waiting_for->owner_source, OwnerSource::kGilState);
  EXPECT_EQ(ThreadOf(r, 13).state, ThreadState::kGilWait);
  EXPECT_EQ(ThreadOf(r, 14).state, ThreadState::kIdle);
  EXPECT_TRUE(r.deadlocks.empty());
}

TEST(DumpAnalysisTest, StdlibKindsFollowTheOutermostStdlibFrame) {
  ProcessFacts p;
  ThreadFacts q = BlockedOn(Thread(11, 0xa), kWaiter);
  q.frames.push_back(StdFrame("Condition.wait", 320, kCond, "Condition"));
  FrameFacts get;
  get.where = {"/usr/lib/python3.11/queue.py", "Queue.get", 171};
  get.self = kEvent;
  get.self_type = "Queue";
  q.frames.push_back(get);
  q.frames.push_back(AppFrame("consume", 7));
  // 2.7: no qualified names; `self`'s class says Semaphore (a subclass still is one).
  ThreadFacts s = BlockedOn(Thread(12, 0xb), kWaiter);
  s.frames.push_back(StdFrame("wait", 340, kCond, "Condition"));
  s.frames.push_back(StdFrame("acquire", 470, kLockB, "Semaphore"));
  s.frames.back().self_type = "MySemaphore";
  s.frames.push_back(AppFrame("limited", 9));
  p.threads = {q, s};
  DumpReport r = Analyze(p);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->kind, WaitKind::kQueue);
  EXPECT_EQ(ThreadOf(r, 11).waiting_for->object_id, ObjectId(kEvent));
  EXPECT_EQ(ThreadOf(r, 12).waiting_for->kind, WaitKind::kSemaphore);
  EXPECT_EQ(ThreadOf(r, 12).waiting_for->object_type, "MySemaphore");
  EXPECT_EQ(ThreadOf(r, 12).stack[*ThreadOf(r, 12).wait_frame].function, "limited");
}

TEST(DumpAnalysisTest, UserFrameSkipsThreadingAndQueue) {
  std::vector<Frame> stack = {{"/usr/lib/python3.12/threading.py", "Condition.wait", 1},
                              {"/usr/lib/python3.12/queue.py", "Queue.get", 2},
                              {"/srv/app.py", "main", 3}};
  EXPECT_EQ(UserFrame(stack), 2u);
  EXPECT_EQ(UserFrame({}), std::nullopt);
}

}  // namespace
}  // namespace threadscope::dump
