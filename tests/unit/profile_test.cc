// Contention profiles from generated record streams: records -> a replayed session (the same
// model and event stream the API serves) -> snapshot + WatchEvents -> profile, then decoded back
// through the pprof proto and checked against the snapshot's own totals.
#include "client/profile.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "recording/recording.h"
#include "daemon/engine/session.h"
#include "pprof/profile.pb.h"
#include "tests/unit/event_generator.h"

namespace threadscope::client::profile {
namespace {

using testing::Batch;
using testing::EventGenerator;

constexpr uint32_t kMain = 1000, kA = 1001, kB = 1002;
constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kLockSem = 0x200, kCondSem = 0x300;
// Code objects: worker() at app.py:20 called from main() at app.py:40; Condition.wait.
const std::pair<uint64_t, uint64_t> kWorker{0xa0, 0x10}, kMainFn{0xb0, 0x20}, kCondWait{0xc0, 0x30};

v1::Target MakeTarget(const std::string& locks, uint64_t threshold_ns, uint32_t acquire_frames) {
  v1::Target t;
  t.set_pid(kMain);
  t.set_executable("/usr/bin/python3.11");
  t.set_interpreter("/usr/bin/python3.11");
  t.set_python_version("3.11.2");
  t.set_command_line("python3 app.py");
  t.set_lock_mode(locks);
  t.set_lock_threshold_ns(threshold_ns);
  t.set_realtime_offset_ns(1'700'000'000'000'000'000);
  t.mutable_python_stacks()->set_enabled(true);
  t.mutable_python_stacks()->set_frames(8);
  t.mutable_python_stacks()->set_frames_acquire(acquire_frames);
  t.mutable_gil()->set_enabled(true);
  return t;
}

struct Trace {
  v1::Snapshot snapshot;
  std::vector<v1::WatchEventsResponse> events;
};

Trace Replay(const v1::Target& target, const std::vector<std::string>& batches,
             bool hold_events = true) {
  std::vector<v1::RecordingChunk> chunks(1);
  auto* h = chunks[0].mutable_header();
  h->set_format_version(recording::kRecordingFormatVersion);
  h->set_abi_version(TS_ABI_VERSION);
  *h->mutable_target() = target;
  for (const auto& b : batches) {
    v1::RecordingChunk c;
    c.set_records(b);
    chunks.push_back(c);
  }
  auto session = engine::ReplaySession::Create("rec:1", chunks);
  EXPECT_TRUE(session.ok()) << session.status().ToString();
  Trace t;
  t.snapshot = (*session)->snapshot();
  v1::WatchEventsRequest req;
  req.set_from_start(true);
  req.set_gil_events(true);
  req.set_hold_events(hold_events);
  auto sub = (*session)->Watch(req);
  v1::WatchEventsResponse r;
  while (sub->Next(&r, std::chrono::milliseconds(100)) ==
         engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kItem) {
    if (r.has_target_finished()) break;
    t.events.push_back(r);
  }
  return t;
}

// The common start: three threads and the code locations their stacks use.
std::vector<std::string> Prologue(EventGenerator& g) {
  return {g.Mark(TS_MARK_ATTACHED),
          g.Preexisting(kMain, 5, "python3"),
          g.Preexisting(kA, 5, "worker-a"),
          g.Preexisting(kB, 5, "worker-b"),
          g.Location(kWorker.first, kWorker.second, 20, "/srv/app.py", "worker"),
          g.Location(kMainFn.first, kMainFn.second, 40, "/srv/app.py", "main"),
          g.Location(kCondWait.first, kCondWait.second, 300, "/usr/lib/python3.11/threading.py",
                     "Condition.wait"),
          g.LockNew(kMain, 0x100, kLockSem)};
}

std::string Label(const Sample& s, const std::string& key) {
  for (const auto& l : s.labels) {
    if (l.key == key) return l.num ? std::to_string(*l.num) : l.str;
  }
  return "";
}

const Sample* FindSample(const Profile& p, Kind kind, const std::string& leaf,
                         const std::string& outcome) {
  for (const auto& s : p.samples) {
    if (s.kind == kind && !s.frames.empty() && s.frames[0].function == leaf &&
        Label(s, "outcome") == outcome) {
      return &s;
    }
  }
  return nullptr;
}

// Contended tracing: A waits 5 ms for the lock (woken by B), B 3 ms, A times out after 1 ms;
// A waits 7 ms in Condition.wait; A waits 2 ms for the GIL; at the end B is still waiting for the
// lock and the GIL.
Trace ContendedTrace(uint64_t threshold_ns = 0) {
  EventGenerator g(kMain);
  std::vector<std::string> r = Prologue(g);
  std::vector<std::pair<uint64_t, uint64_t>> at_worker = {kWorker, kMainFn};
  r.push_back(EventGenerator::WithStack(g.SemWait(TS_EV_SEM_WAIT_BEGIN, kA, kLockSem), at_worker));
  g.Advance(5 * kMs);
  r.push_back(g.FutexWake(kB, kLockSem));
  r.push_back(g.SemWait(TS_EV_SEM_WAIT_END, kA, kLockSem, 0));
  r.push_back(EventGenerator::WithStack(g.SemWait(TS_EV_SEM_WAIT_BEGIN, kB, kLockSem), at_worker));
  g.Advance(3 * kMs);
  r.push_back(g.SemWait(TS_EV_SEM_WAIT_END, kB, kLockSem, 0));
  r.push_back(EventGenerator::WithStack(g.SemWait(TS_EV_SEM_WAIT_BEGIN, kA, kLockSem), at_worker));
  g.Advance(1 * kMs);
  r.push_back(g.SemWait(TS_EV_SEM_WAIT_END, kA, kLockSem, -1));
  // Condition.wait: a fresh lock A created and waits on until another thread releases it.
  r.push_back(g.LockNew(kA, 0x110, kCondSem));
  r.push_back(EventGenerator::WithStack(g.SemWait(TS_EV_SEM_WAIT_BEGIN, kA, kCondSem),
                                        {kCondWait, kWorker, kMainFn}));
  g.Advance(7 * kMs);
  r.push_back(g.FutexWake(kMain, kCondSem));
  r.push_back(g.SemWait(TS_EV_SEM_WAIT_END, kA, kCondSem, 0));
  r.push_back(g.Gil(kA, TS_GIL_TAKE_BEGIN));
  g.Advance(2 * kMs);
  r.push_back(g.Gil(kA, TS_GIL_TAKE_END));
  r.push_back(g.Gil(kB, TS_GIL_TAKE_BEGIN));
  r.push_back(EventGenerator::WithStack(g.SemWait(TS_EV_SEM_WAIT_BEGIN, kB, kLockSem), at_worker));
  g.Advance(4 * kMs);
  r.push_back(g.Mark(TS_MARK_DETACHED));
  return Replay(MakeTarget("contended", threshold_ns, 0), {Batch(r)});
}

struct Totals {
  uint64_t lock_waits = 0, lock_ns = 0, cond_waits = 0, cond_ns = 0, contended = 0;
  uint64_t gil_acq = 0, gil_ns = 0, hold_count = 0, hold_ns = 0;
};

Totals SnapshotTotals(const v1::Snapshot& s) {
  Totals t;
  for (const auto& th : s.threads()) {
    t.lock_waits += th.locks().lock_waits();
    t.lock_ns += th.locks().lock_wait_ns();
    t.cond_waits += th.locks().condition_waits();
    t.cond_ns += th.locks().condition_wait_ns();
  }
  for (const auto& l : s.locks()) {
    t.contended += l.contended();
    if (l.has_hold()) {
      t.hold_count += l.hold().count();
      t.hold_ns += l.hold().sum_ns();
    }
  }
  for (const auto& g : s.gil().per_thread()) {
    t.gil_acq += g.acquisitions();
    t.gil_ns += g.wait_ns();
  }
  return t;
}

TEST(ProfileTest, WaitsByStackWithTotalsOfTheReport) {
  Trace trace = ContendedTrace();
  Profile p = Build(trace.snapshot, trace.events);
  std::vector<std::string> types;
  for (const auto& t : p.sample_types) types.push_back(t.type + "/" + t.unit);
  EXPECT_EQ(types, (std::vector<std::string>{"contentions/count", "delay/nanoseconds",
                                             "condition-waits/count", "condition-delay/nanoseconds",
                                             "gil-waits/count", "gil-delay/nanoseconds"}));
  EXPECT_EQ(p.default_sample_type, "delay");

  // The hot stack: A's 5 ms wait at worker() <- main(), named, labelled, innermost first.
  const Sample* hot = FindSample(p, Kind::kLockWait, "worker", "acquired");
  ASSERT_NE(hot, nullptr);
  ASSERT_EQ(hot->frames.size(), 2u);
  EXPECT_EQ(hot->frames[0], (Frame{"worker", "/srv/app.py", 20}));
  EXPECT_EQ(hot->frames[1], (Frame{"main", "/srv/app.py", 40}));
  int delay = p.Index("delay"), contentions = p.Index("contentions");
  Totals want = SnapshotTotals(trace.snapshot);
  // Waits are summed per (stack, thread, lock, outcome): A acquired once, B once.
  int64_t acquired_ns = 0, acquired_n = 0;
  for (const auto& s : p.samples) {
    if (s.kind == Kind::kLockWait && Label(s, "outcome") == "acquired") {
      acquired_ns += s.values[delay];
      acquired_n += s.values[contentions];
      EXPECT_EQ(Label(s, "lock_kind"), "Lock");
      EXPECT_EQ(Label(s, "wait_kind"), "lock");
      EXPECT_FALSE(Label(s, "lock_id").empty());
    }
  }
  EXPECT_EQ(acquired_n, 2);
  EXPECT_EQ(Label(*hot, "thread_name") + "/" + Label(*hot, "tid") == "worker-a/1001" ||
                Label(*hot, "thread_name") + "/" + Label(*hot, "tid") == "worker-b/1002",
            true);
  EXPECT_GE(acquired_ns, static_cast<int64_t>(8 * kMs));
  ASSERT_NE(FindSample(p, Kind::kLockWait, "worker", "timed out"), nullptr);
  const Sample* still = FindSample(p, Kind::kLockWait, "worker", "still waiting");
  ASSERT_NE(still, nullptr);
  EXPECT_EQ(Label(*still, "tid"), "1002");

  // Totals: completed waits equal the threads' totals; with the wait in progress, the count is
  // the locks' `contended`.
  int64_t completed_ns = p.Total("delay") - still->values[delay];
  EXPECT_EQ(static_cast<uint64_t>(completed_ns), want.lock_ns);
  EXPECT_EQ(static_cast<uint64_t>(p.Total("contentions")), want.contended);
  EXPECT_EQ(static_cast<uint64_t>(p.Total("contentions") - still->values[contentions]),
            want.lock_waits);
  // Condition waits apart, with their own stack, never in delay.
  EXPECT_EQ(static_cast<uint64_t>(p.Total("condition-waits")), want.cond_waits);
  EXPECT_EQ(static_cast<uint64_t>(p.Total("condition-delay")), want.cond_ns);
  const Sample* cond = FindSample(p, Kind::kConditionWait, "Condition.wait", "acquired");
  ASSERT_NE(cond, nullptr);
  EXPECT_EQ(cond->values[delay], 0);
  EXPECT_EQ(cond->frames.size(), 3u);
  // GIL: every take; B's open wait counts up to the end, with no acquisition.
  EXPECT_EQ(static_cast<uint64_t>(p.Total("gil-waits")), want.gil_acq);
  EXPECT_EQ(static_cast<uint64_t>(p.Total("gil-delay")), want.gil_ns);
  EXPECT_EQ(want.gil_acq, 1u);

  EXPECT_EQ(p.duration_nanos, static_cast<int64_t>(trace.snapshot.trace_end_ns() -
                                                   trace.snapshot.trace_start_ns()));
  EXPECT_EQ(p.time_nanos, static_cast<int64_t>(trace.snapshot.trace_start_ns()) +
                              1'700'000'000'000'000'000);
  bool pid_comment = false;
  for (const auto& c : p.comments) pid_comment |= c.find("pid 1000") != std::string::npos &&
                                                  c.find("CPython 3.11.2") != std::string::npos;
  EXPECT_TRUE(pid_comment);
}

TEST(ProfileTest, PprofDecodesBackThroughTheProto) {
  Trace trace = ContendedTrace();
  Profile p = Build(trace.snapshot, trace.events);
  std::string gz = Gzip(ToPprof(p));
  ASSERT_GT(gz.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(gz[0]), 0x1f);
  auto raw = MaybeGunzip(gz);
  ASSERT_TRUE(raw.ok());
  perftools::profiles::Profile pb;
  ASSERT_TRUE(pb.ParseFromString(*raw));
  ASSERT_GT(pb.string_table_size(), 0);
  EXPECT_EQ(pb.string_table(0), "");
  EXPECT_EQ(pb.string_table(pb.default_sample_type()), "delay");
  EXPECT_EQ(pb.string_table(pb.period_type().type()), "contentions");
  EXPECT_EQ(pb.mapping_size(), 1);
  EXPECT_TRUE(pb.mapping(0).has_functions());
  std::set<uint64_t> location_ids, function_ids;
  for (const auto& f : pb.function()) {
    EXPECT_NE(f.id(), 0u);
    EXPECT_TRUE(function_ids.insert(f.id()).second);
  }
  for (const auto& l : pb.location()) {
    EXPECT_NE(l.id(), 0u);
    EXPECT_TRUE(location_ids.insert(l.id()).second);
    ASSERT_EQ(l.line_size(), 1);
    EXPECT_TRUE(function_ids.count(l.line(0).function_id()));
  }
  for (const auto& s : pb.sample()) {
    EXPECT_EQ(s.value_size(), pb.sample_type_size());
    for (uint64_t id : s.location_id()) EXPECT_TRUE(location_ids.count(id));
  }
  // And the same profile comes back through the reader the gate uses.
  auto back = ParsePprof(gz);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->samples.size(), p.samples.size());
  for (size_t i = 0; i < p.samples.size(); ++i) {
    EXPECT_EQ(back->samples[i].frames, p.samples[i].frames);
    EXPECT_EQ(back->samples[i].values, p.samples[i].values);
    EXPECT_EQ(back->samples[i].kind, p.samples[i].kind);
    EXPECT_EQ(back->samples[i].labels.size(), p.samples[i].labels.size());
  }
  EXPECT_EQ(back->comments, p.comments);
  EXPECT_EQ(back->Total("delay"), p.Total("delay"));
  EXPECT_FALSE(ParsePprof("not a profile").ok());
  EXPECT_FALSE(ParsePprof(gz.substr(0, gz.size() / 2)).ok());
}

TEST(ProfileTest, FoldedStacksSumToTheSameFigures) {
  Trace trace = ContendedTrace();
  Profile p = Build(trace.snapshot, trace.events);
  std::string folded = ToCollapsed(p);
  std::map<std::string, int64_t> by_root;
  size_t pos = 0;
  bool hot_line = false;
  while (pos < folded.size()) {
    size_t nl = folded.find('\n', pos);
    std::string line = folded.substr(pos, nl - pos);
    pos = nl + 1;
    size_t space = line.rfind(' ');
    ASSERT_NE(space, std::string::npos) << line;
    std::string stack = line.substr(0, space);
    by_root[stack.substr(0, stack.find(';'))] += std::stoll(line.substr(space + 1));
    hot_line |= stack == "lock wait;main (/srv/app.py:40);worker (/srv/app.py:20)";
  }
  EXPECT_TRUE(hot_line) << folded;
  EXPECT_EQ(by_root["lock wait"], p.Total("delay"));
  EXPECT_EQ(by_root["condition wait"], p.Total("condition-delay"));
  EXPECT_EQ(by_root["GIL wait"], p.Total("gil-delay"));
  EXPECT_EQ(by_root.size(), 3u);
}

TEST(ProfileTest, WaitsBelowTheThresholdKeepTheTotalsWithoutAStack) {
  // 10 ms threshold: none of the waits makes an event; every one is still in the totals.
  Trace trace = ContendedTrace(10 * kMs);
  Profile p = Build(trace.snapshot, trace.events);
  Totals want = SnapshotTotals(trace.snapshot);
  const Sample* still = FindSample(p, Kind::kLockWait, "worker", "still waiting");
  ASSERT_NE(still, nullptr);
  int delay = p.Index("delay");
  EXPECT_EQ(static_cast<uint64_t>(p.Total("delay") - still->values[delay]), want.lock_ns);
  EXPECT_EQ(static_cast<uint64_t>(p.Total("condition-delay")), want.cond_ns);
  // Per thread, under a frame that says why: A's two waits and B's one.
  std::map<std::string, int64_t> residual;
  for (const auto& s : p.samples) {
    if (s.kind == Kind::kLockWait && s.frames.size() == 1 &&
        s.frames[0].function.find("--lock-threshold 10ms") != std::string::npos) {
      residual[Label(s, "tid")] += s.values[p.Index("contentions")];
    }
  }
  EXPECT_EQ(residual, (std::map<std::string, int64_t>{{"1001", 2}, {"1002", 1}}));
}

// --locks all: holds by the stack that took the lock; without acquire stacks, by the wait that
// preceded the take, or by a frame that says how to get one.
TEST(ProfileTest, HoldsByTheAcquiringStack) {
  for (uint32_t acquire_frames : {8u, 0u}) {
    SCOPED_TRACE(acquire_frames);
    EventGenerator g(kMain);
    std::vector<std::string> r = Prologue(g);
    std::string take = g.LockAcquire(kA, 0x100, kLockSem);
    if (acquire_frames) take = EventGenerator::WithStack(take, {kWorker, kMainFn});
    r.push_back(take);
    g.Advance(4 * kMs);
    r.push_back(g.LockRelease(kA, 0x100, kLockSem));
    r.push_back(g.LockAcquire(kB, 0x100, kLockSem));
    g.Advance(1 * kMs);
    r.push_back(g.LockRelease(kB, 0x100, kLockSem));
    r.push_back(g.Mark(TS_MARK_DETACHED));
    Trace trace = Replay(MakeTarget("all", 0, acquire_frames), {Batch(r)});
    Profile p = Build(trace.snapshot, trace.events);
    ASSERT_GE(p.Index("lock-release-hold"), 0);
    Totals want = SnapshotTotals(trace.snapshot);
    EXPECT_EQ(want.hold_count, 2u);
    EXPECT_EQ(static_cast<uint64_t>(p.Total("lock-release")), want.hold_count);
    EXPECT_EQ(static_cast<uint64_t>(p.Total("lock-release-hold")), want.hold_ns);
    int hold = p.Index("lock-release-hold");
    const Sample* longest = nullptr;
    for (const auto& s : p.samples) {
      if (s.kind == Kind::kHold && (!longest || s.values[hold] > longest->values[hold])) {
        longest = &s;
      }
    }
    ASSERT_NE(longest, nullptr);
    EXPECT_EQ(Label(*longest, "tid"), "1001");
    EXPECT_EQ(longest->frames[0].function,
              acquire_frames ? "worker" : "[no stack where it was taken: --acquire-stacks]");
    // Holds are not waits: not in the folded stacks.
    EXPECT_EQ(ToCollapsed(p).find("hold"), std::string::npos);
    // One event per release: only watchers that ask get them.
    size_t released = 0;
    for (const auto& e : trace.events) {
      released += e.lock_event().change() == v1::LOCK_CHANGE_RELEASED;
    }
    EXPECT_EQ(released, 2u);
    Trace quiet = Replay(MakeTarget("all", 0, acquire_frames), {Batch(r)}, false);
    for (const auto& e : quiet.events) {
      EXPECT_NE(e.lock_event().change(), v1::LOCK_CHANGE_RELEASED);
    }
    // Without them, the holds are still in the totals, under a frame that says why.
    Profile q = Build(quiet.snapshot, quiet.events);
    EXPECT_EQ(static_cast<uint64_t>(q.Total("lock-release-hold")), want.hold_ns);
  }
}

// --gil-stacks: a take that waited long enough carries the stack it resumed; a short one has
// none and says why; the totals are the GIL's either way.
TEST(ProfileTest, GilWaitsByStack) {
  EventGenerator g(kMain);
  std::vector<std::string> r = Prologue(g);
  r.push_back(g.Gil(kA, TS_GIL_TAKE_BEGIN));
  g.Advance(6 * kMs);
  r.push_back(EventGenerator::WithStack(g.Gil(kA, TS_GIL_TAKE_END), {kWorker, kMainFn}));
  r.push_back(g.Gil(kA, TS_GIL_DROP));
  r.push_back(g.Gil(kB, TS_GIL_TAKE_BEGIN));
  r.push_back(g.Gil(kB, TS_GIL_TAKE_END));  // 1 us: below the threshold, no stack
  r.push_back(g.Mark(TS_MARK_DETACHED));
  v1::Target target = MakeTarget("contended", 0, 0);
  target.mutable_python_stacks()->set_frames_gil(8);
  target.mutable_python_stacks()->set_gil_threshold_ns(kMs);
  Trace trace = Replay(target, {Batch(r)});
  int acquired_with_stack = 0;
  for (const auto& e : trace.events) {
    acquired_with_stack += e.has_gil_event() && e.gil_event().stack().frames_size() == 2;
  }
  EXPECT_EQ(acquired_with_stack, 1);
  Profile p = Build(trace.snapshot, trace.events);
  Totals want = SnapshotTotals(trace.snapshot);
  EXPECT_EQ(static_cast<uint64_t>(p.Total("gil-waits")), want.gil_acq);
  EXPECT_EQ(static_cast<uint64_t>(p.Total("gil-delay")), want.gil_ns);
  const Sample* hot = FindSample(p, Kind::kGilWait, "worker", "acquired");
  ASSERT_NE(hot, nullptr);
  EXPECT_EQ(hot->frames[1], (Frame{"main", "/srv/app.py", 40}));
  EXPECT_EQ(Label(*hot, "tid"), "1001");
  EXPECT_GE(hot->values[p.Index("gil-delay")], static_cast<int64_t>(6 * kMs));
  ASSERT_NE(FindSample(p, Kind::kGilWait,
                       "[no Python stack: GIL wait shorter than --gil-stack-threshold 1ms]",
                       "acquired"),
            nullptr);
  EXPECT_NE(ToCollapsed(p).find("GIL wait;main (/srv/app.py:40);worker (/srv/app.py:20) "),
            std::string::npos);
}

TEST(ProfileTest, NoLockTracingNoLockSampleTypes) {
  EventGenerator g(kMain);
  std::vector<std::string> r = {g.Mark(TS_MARK_ATTACHED), g.Preexisting(kMain, 5, "python3"),
                                g.Gil(kMain, TS_GIL_TAKE_BEGIN), g.Gil(kMain, TS_GIL_TAKE_END),
                                g.Mark(TS_MARK_DETACHED)};
  Trace trace = Replay(MakeTarget("off", 0, 0), {Batch(r)});
  Profile p = Build(trace.snapshot, trace.events);
  ASSERT_EQ(p.sample_types.size(), 2u);
  EXPECT_EQ(p.sample_types[0].type, "gil-waits");
  EXPECT_EQ(p.default_sample_type, "gil-delay");
  EXPECT_EQ(p.Total("gil-waits"), 1);
}

}  // namespace
}  // namespace threadscope::client::profile
