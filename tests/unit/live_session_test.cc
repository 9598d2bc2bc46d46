// The live consumer without a kernel: a LiveSession fed by a fake record source, a fake process,
// a /proc tree in $TEST_TMPDIR, a frame resolver answering from a table and a clock the test
// moves. What only the root tier could check before: the attach mark and the threads /proc
// lists, drop accounting, exit and credential-change detection, detach, stack locations defined
// ahead of the records that use them, and watching from the start on a truncated history.
#include "daemon/engine/live_session.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "daemon/model/event_decoder.h"
#include "recording/record_reader.h"
#include "tests/unit/engine_fakes.h"
#include "tests/unit/event_generator.h"

namespace threadscope::engine {
namespace {

using testing::Batch;
using testing::EventGenerator;
using testing::FakeClock;
using testing::FakeFrameResolver;
using testing::FakeProcess;
using testing::FakeRecordSource;
using testing::ProcFixture;
using testing::PythonFrame;
using testing::WaitUntil;
using Pop = BoundedQueue<v1::WatchEventsResponse>::PopResult;

constexpr pid_t kPid = 4000;
constexpr uint64_t kSecond = 1'000'000'000;

std::string CurrentTestName() {
  return ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

v1::Target SampleTarget() {
  v1::Target t;
  t.set_pid(kPid);
  t.set_python_version("3.12.1");
  t.set_state(v1::TARGET_STATE_ATTACHED);
  t.set_join_visibility(v1::JOIN_VISIBILITY_BLOCKING_ONLY);
  t.set_body_done_visible(true);
  t.set_lock_mode("contended");
  return t;
}

// Every record a recording of the session holds so far, decoded.
std::vector<model::DecodedEvent> Recorded(Session& session) {
  auto sub = session.StreamRecording();
  EXPECT_TRUE(sub.ok()) << sub.status().ToString();
  std::vector<model::DecodedEvent> out;
  if (!sub.ok()) return out;
  v1::RecordingChunk chunk;
  while ((*sub)->Next(&chunk, std::chrono::milliseconds(20)) ==
         BoundedQueue<v1::RecordingChunk>::PopResult::kItem) {
    if (!chunk.has_records()) continue;
    recording::RecordReader reader(chunk.records());
    recording::RecordView record;
    while (reader.Next(&record)) {
      auto e = model::DecodeEvent(record);
      EXPECT_TRUE(e.ok()) << e.status().ToString();
      if (e.ok()) out.push_back(*e);
    }
    EXPECT_TRUE(reader.status().ok()) << reader.status().ToString();
  }
  session.Unstream(*sub);
  return out;
}

std::vector<uint16_t> Types(const std::vector<model::DecodedEvent>& events) {
  std::vector<uint16_t> out;
  for (const auto& e : events) out.push_back(e.header.type);
  return out;
}

const v1::Thread* ThreadByTid(const v1::Snapshot& snap, int32_t tid) {
  for (const auto& t : snap.threads()) {
    if (t.native_tid() == tid) return &t;
  }
  return nullptr;
}

class LiveSessionTest : public ::testing::Test {
 protected:
  LiveSessionTest()
      : proc_dir_(testing::TestDir("proc_" + CurrentTestName())),
        fixture_(proc_dir_, kPid),
        proc_(proc_dir_),
        process_(std::make_shared<FakeProcess>(kPid)),
        frames_(std::make_shared<FakeFrameResolver::Shared>()) {
    options_.poll_interval_ms = 2;
    options_.liveness_interval_ms = 200;
  }
  ~LiveSessionTest() override {
    if (session_) {
      EXPECT_TRUE(session_->Detach().ok());
    }
  }

  void Start(bool stacks = false) {
    auto source = std::make_unique<FakeRecordSource>();
    control_ = source->control();
    control_->can_switch_gil = can_switch_gil_;
    LiveSources sources;
    sources.records = std::move(source);
    sources.process = process_;
    auto status = proc_.Status(kPid);
    ASSERT_TRUE(status.ok()) << status.status().ToString();
    sources.attached_status = *status;
    if (stacks) sources.frames = std::make_unique<FakeFrameResolver>(frames_);
    auto s = LiveSession::Start("pid:4000:1", SampleTarget(), std::move(sources), options_, proc_,
                                clock_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    session_ = *s;
  }
  // Records the probes write.
  void Push(std::string batch) { FakeRecordSource::Push(*control_, std::move(batch)); }
  // Everything pushed so far has been ingested.
  void Ingested() { ASSERT_TRUE(FakeRecordSource::WaitPolls(*control_, 2)); }
  // A liveness check falls due (on the test's clock) and runs.
  void LivenessCheck() {
    clock_.Advance(kSecond);
    Ingested();
  }
  bool SourceDetached() { return FakeRecordSource::Detached(*control_); }
  bool can_switch_gil_ = false;  // the source can switch its GIL probes (SetGilWaitsOnly)

  std::string proc_dir_;
  ProcFixture fixture_;
  target::ProcFs proc_;
  FakeClock clock_;
  std::shared_ptr<FakeProcess> process_;
  std::shared_ptr<FakeFrameResolver::Shared> frames_;
  LiveSessionOptions options_;
  std::shared_ptr<FakeRecordSource::Control> control_;
  std::shared_ptr<LiveSession> session_;
  EventGenerator g_{static_cast<uint32_t>(kPid)};
};

// The order a recording starts with: the attach mark, what the probes wrote while they were being
// attached, then the threads /proc lists (a thread is in the scan or seen starting, never lost
// between the two). Every timestamp the engine writes comes from its clock.
TEST_F(LiveSessionTest, StartWritesTheMarkWhatTheProbesWroteThenTheThreadsOfProc) {
  const long ticks_per_second = sysconf(_SC_CLK_TCK);
  fixture_.AddTask(kPid, "python3", 100);
  fixture_.AddTask(kPid + 1, "worker", 250);
  clock_.set_suspended_ns(kSecond / 4);  // boot time runs ahead by the time spent suspended
  // Probes that fire while the others attach: the source has them when the session starts.
  auto source = std::make_unique<FakeRecordSource>();
  FakeRecordSource::Push(*source->control(), g_.Clone(kPid, kPid + 2, "late"));
  control_ = source->control();
  LiveSources sources;
  sources.records = std::move(source);
  sources.process = process_;
  sources.attached_status = *proc_.Status(kPid);
  const uint64_t start = clock_.MonotonicNowNs();
  auto s = LiveSession::Start("pid:4000:1", SampleTarget(), std::move(sources), options_, proc_,
                              clock_);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  session_ = *s;

  auto recorded = Recorded(*session_);
  ASSERT_EQ(Types(recorded),
            (std::vector<uint16_t>{TS_EV_TRACE_MARK, TS_EV_THREAD_CLONE, TS_EV_PREEXISTING_THREAD,
                                   TS_EV_PREEXISTING_THREAD}));
  EXPECT_EQ(std::get<ts_trace_mark>(recorded[0].payload).kind, TS_MARK_ATTACHED);
  EXPECT_EQ(recorded[0].header.ts_ns, start);
  const auto& main = std::get<ts_preexisting_thread>(recorded[2].payload);
  EXPECT_EQ(recorded[2].header.tid, static_cast<uint32_t>(kPid));
  EXPECT_EQ(recorded[2].header.ts_ns, start);
  EXPECT_EQ(main.start_ns, 100 * kSecond / ticks_per_second - kSecond / 4);
  EXPECT_EQ(model::CommToString(std::get<ts_preexisting_thread>(recorded[3].payload).comm),
            "worker");

  v1::Snapshot snap = session_->snapshot();
  EXPECT_EQ(snap.trace_start_ns(), start);
  EXPECT_EQ(snap.now_ns(), start);
  ASSERT_EQ(snap.threads_size(), 3);
  EXPECT_EQ(ThreadByTid(snap, kPid)->origin(), v1::THREAD_ORIGIN_PREEXISTING);
  EXPECT_EQ(ThreadByTid(snap, kPid + 1)->name(), "worker");
  EXPECT_EQ(ThreadByTid(snap, kPid + 2)->name(), "late");
  // A running trace's snapshot describes the clock's now.
  clock_.Advance(7 * kSecond);
  EXPECT_EQ(session_->snapshot().now_ns(), start + 7 * kSecond);
  EXPECT_FALSE(session_->snapshot().final());
}

// Drops are counted where they happen (the kernel, the stash) and written once each, as they
// grow, on the liveness check; watchers hear them in-band.
TEST_F(LiveSessionTest, DropsAreCountedOnceAndReachWatchers) {
  Start();
  auto sub = session_->Watch(v1::WatchEventsRequest());
  FakeRecordSource::SetDrops(*control_, TS_LOST_RINGBUF, 5);
  Ingested();  // no check is due yet: nothing counted
  EXPECT_EQ(session_->snapshot().target().stats().lost_ringbuf(), 0u);
  LivenessCheck();
  EXPECT_EQ(session_->snapshot().target().stats().lost_ringbuf(), 5u);
  v1::WatchEventsResponse r;
  ASSERT_EQ(sub->Next(&r, std::chrono::seconds(1)), Pop::kItem);
  ASSERT_TRUE(r.has_lost_events()) << r.DebugString();
  EXPECT_EQ(r.lost_events().count(), 5u);
  EXPECT_EQ(r.lost_events().source(), v1::LostEvents::SOURCE_KERNEL_RING);

  FakeRecordSource::SetDrops(*control_, TS_LOST_RINGBUF, 8);
  FakeRecordSource::SetDrops(*control_, TS_LOST_STASH, 2);
  LivenessCheck();
  LivenessCheck();  // nothing new: nothing written again
  v1::TraceStats stats = session_->snapshot().target().stats();
  EXPECT_EQ(stats.lost_ringbuf(), 8u);
  EXPECT_EQ(stats.lost_stash(), 2u);
  std::vector<std::pair<uint64_t, v1::LostEvents::Source>> told;
  while (sub->Next(&r, std::chrono::milliseconds(50)) == Pop::kItem) {
    ASSERT_TRUE(r.has_lost_events()) << r.DebugString();
    told.push_back({r.lost_events().count(), r.lost_events().source()});
  }
  EXPECT_EQ(told, (std::vector<std::pair<uint64_t, v1::LostEvents::Source>>{
                      {3, v1::LostEvents::SOURCE_KERNEL_RING},
                      {2, v1::LostEvents::SOURCE_PROBE_STASH}}));
  session_->Unwatch(sub);
}

// --overhead-budget: the target carries the estimate (flagged as one) and the stage; 100,000
// records a second (x 0.8 us, the default per-hit cost) is 8% of a core, over a 1% budget, so
// after 2 s over it the stage steps down. The trace is --gil waits (the default) with contended
// locks: gil_waits, no_acquire_stacks and lock_threshold would change nothing, so the step goes
// straight to duty_cycle.
TEST_F(LiveSessionTest, OverheadBudgetEstimatesAndStepsDown) {
  options_.trace.overhead_budget = 0.01;
  Start();
  EXPECT_TRUE(session_->target().budget().enabled());
  EXPECT_TRUE(session_->target().budget().estimated());
  EXPECT_EQ(session_->target().budget().stage(), "as_asked");
  for (int second = 0; second < 4; ++second) {
    std::vector<std::string> records;
    for (int i = 0; i < 100000; ++i) records.push_back(g_.Gil(kPid + 1, TS_GIL_TAKE_BEGIN));
    Push(testing::Batch(records));
    LivenessCheck();
  }
  v1::OverheadBudget b = session_->target().budget();
  EXPECT_GT(b.estimated_cost(), 0.01) << b.DebugString();
  EXPECT_TRUE(b.estimated());
  EXPECT_TRUE(b.applied());
  EXPECT_EQ(b.stage(), "duty_cycle") << b.DebugString();
  EXPECT_EQ(b.stage_index(), 4u);
  EXPECT_EQ(b.stage_changes(), 1u);
}

// A source that counts probe hits drives the estimate with them, not with records: the
// hand-off bench under --gil waits fires ~2,000 waiting takes a second (a take-begin uprobe
// and a single-stepped wait-return site each) and a few hundred futex syscalls, under 1% with
// the calibration's costs, whatever the records; 200,000 GIL takes a
// second (--gil full: take-begin, take-end uretprobe, drop) are well over it.
TEST_F(LiveSessionTest, OverheadBudgetCountsProbeHitsNotRecords) {
  options_.trace.overhead_budget = 0.01;
  options_.calibration.ns_per_hit = {500, 2000, 1200, 100};
  options_.calibration.measured = true;
  options_.calibration.source = "measured at start-up: test";
  Start();
  loader::ProbeHitCounts hits{};
  for (int second = 0; second < 4; ++second) {
    hits[0] += 2000;  // take-begin, emulated
    hits[1] += 2000;  // wait-return site, single-stepped
    hits[3] += 500;   // syscalls
    FakeRecordSource::SetHits(*control_, hits);
    std::vector<std::string> records;
    for (int i = 0; i < 2000; ++i) records.push_back(g_.Gil(kPid + 1, TS_GIL_WAITED));
    Push(testing::Batch(records));
    LivenessCheck();
  }
  v1::OverheadBudget b = session_->target().budget();
  // 2,000 x 0.5 us + 2,000 x 2 us + 500 x 0.1 us = 5.05 ms a second: 0.5% (plus the test
  // consumer's own CPU, small); the probes' share does not depend on the records.
  EXPECT_GT(b.estimated_probes_cost(), 0.004) << b.DebugString();
  EXPECT_LT(b.estimated_probes_cost(), 0.006) << b.DebugString();
  EXPECT_EQ(b.stage(), "as_asked") << b.DebugString();
  EXPECT_EQ(b.calibration(), "measured at start-up: test");

  for (int second = 0; second < 4; ++second) {
    hits[0] += 400000;  // take-begin and drop
    hits[2] += 200000;  // take-end
    FakeRecordSource::SetHits(*control_, hits);
    LivenessCheck();
  }
  b = session_->target().budget();
  EXPECT_GT(b.estimated_probes_cost(), 0.3) << b.DebugString();
  EXPECT_EQ(b.stage(), "duty_cycle") << b.DebugString();  // the first stage that lowers it
}

// A source that cannot count hits: records stand in for them, and the calibration says so.
TEST_F(LiveSessionTest, OverheadBudgetWithoutHitCountsSaysRecordsAreCounted) {
  options_.trace.overhead_budget = 0.01;
  Start();
  Push(testing::Batch({g_.Gil(kPid + 1, TS_GIL_WAITED)}));
  LivenessCheck();
  LivenessCheck();
  v1::OverheadBudget b = session_->target().budget();
  EXPECT_NE(b.calibration().find("records counted as hits"), std::string::npos) << b.DebugString();
}

// --gil full: the gil_waits stage is recommended, not applied (the GIL probes are not switched
// while attached); --locks all --acquire-stacks: the no_acquire_stacks stage turns the acquire
// stacks off in the source, and the budget says which stages are in effect.
TEST_F(LiveSessionTest, OverheadBudgetAppliesNoAcquireStacks) {
  options_.trace.overhead_budget = 0.01;
  options_.trace.locks = settings::LockMode::kAll;
  options_.trace.acquire_stack_frames = 4;
  options_.trace.gil_mode = settings::GilMode::kFull;
  Start();
  EXPECT_TRUE(session_->target().budget().applied());  // as_asked
  std::vector<std::string> seen;
  for (int second = 0; second < 12 && session_->target().budget().stage_index() < 2; ++second) {
    std::vector<std::string> records;
    for (int i = 0; i < 100000; ++i) records.push_back(g_.Gil(kPid + 1, TS_GIL_TAKE_BEGIN));
    Push(testing::Batch(records));
    LivenessCheck();
    v1::OverheadBudget b = session_->target().budget();
    if (seen.empty() || seen.back() != b.stage()) {
      seen.push_back(b.stage());
      if (b.stage() == "gil_waits") EXPECT_FALSE(b.applied()) << b.DebugString();
    }
  }
  v1::OverheadBudget b = session_->target().budget();
  ASSERT_EQ(b.stage(), "no_acquire_stacks") << b.DebugString();
  // The acquire stacks are off; gil_waits, a step on the way, is still only recommended.
  EXPECT_FALSE(b.applied());
  std::lock_guard<std::mutex> lock(control_->mu);
  EXPECT_EQ(control_->acquire_stacks, std::vector<bool>{false});
}

// --gil full on a source that can switch its GIL probes: the gil_waits stage is applied (the
// source is told, the stream marked), the GIL is reported as waits only since the switch; back
// under budget long enough, every take and drop is traced again.
TEST_F(LiveSessionTest, OverheadBudgetSwitchesGilFullToWaitsAndBack) {
  options_.trace.overhead_budget = 0.01;
  options_.trace.gil_mode = settings::GilMode::kFull;
  can_switch_gil_ = true;
  Start();
  for (int second = 0; second < 12 && session_->target().budget().stage_index() < 1; ++second) {
    std::vector<std::string> records;
    for (int i = 0; i < 100000; ++i) records.push_back(g_.Gil(kPid + 1, TS_GIL_TAKE_BEGIN));
    Push(testing::Batch(records));
    LivenessCheck();
  }
  v1::OverheadBudget b = session_->target().budget();
  // gil_waits, or a stage below it: the consumer's own CPU counts, and under a sanitizer it can
  // keep the estimate over budget for a few more (test clock) seconds.
  ASSERT_GE(b.stage_index(), 1u) << b.DebugString();
  ASSERT_LT(b.stage_index(), 4u) << b.DebugString();  // duty_cycle would pause the probes
  EXPECT_TRUE(b.applied() || b.stage() == "lock_threshold") << b.DebugString();
  {
    std::lock_guard<std::mutex> lock(control_->mu);
    EXPECT_EQ(control_->gil_waits_only, std::vector<bool>{true});
  }
  v1::Snapshot snap = session_->snapshot();
  EXPECT_EQ(snap.gil().mode(), v1::GIL_MODE_WAITS);
  ASSERT_EQ(snap.gil().mode_changes_size(), 1) << snap.gil().DebugString();
  EXPECT_EQ(snap.gil().mode_changes(0).mode(), v1::GIL_MODE_WAITS);
  EXPECT_EQ(snap.gil().cut_waits(), 1u);  // kPid + 1 was in take_gil at the switch
  // Quiet for long enough (under half the budget for up_after, 10 s, per stage): back up to
  // as_asked, full again.
  for (int second = 0; second < 120 && session_->target().budget().stage_index() > 0; ++second) {
    Push(testing::Batch({g_.Gil(kPid + 1, TS_GIL_WAITED)}));
    LivenessCheck();
  }
  ASSERT_EQ(session_->target().budget().stage(), "as_asked");
  std::lock_guard<std::mutex> lock(control_->mu);
  EXPECT_EQ(control_->gil_waits_only, (std::vector<bool>{true, false}));
  EXPECT_NE(session_->snapshot().gil().mode(), v1::GIL_MODE_WAITS);  // the target's mode again
}

// A budget far below what the trace costs steps down to duty_cycle, which is applied: the GIL
// and lock probes are detached (the source is told) for the off part of each period and
// attached again for the on part, each transition marked in the stream; the budget says how
// much of the time was traced.
TEST_F(LiveSessionTest, OverheadBudgetDutyCyclePausesAndResumesTheProbes) {
  options_.trace.overhead_budget = 0.0001;
  Start();
  auto load = [&] {
    std::vector<std::string> records;
    for (int i = 0; i < 20000; ++i) records.push_back(g_.Gil(kPid + 1, TS_GIL_TAKE_BEGIN));
    Push(testing::Batch(records));
    LivenessCheck();
  };
  for (int second = 0; second < 20 && session_->target().budget().stage() != "duty_cycle";
       ++second) {
    load();
  }
  ASSERT_EQ(session_->target().budget().stage(), "duty_cycle");
  // On for the first second of the period, then off.
  for (int second = 0; second < 3 && !session_->target().budget().paused(); ++second) load();
  v1::OverheadBudget b = session_->target().budget();
  ASSERT_TRUE(b.paused()) << b.DebugString();
  EXPECT_TRUE(b.applied()) << b.DebugString();
  EXPECT_EQ(b.pauses(), 1u);
  {
    std::lock_guard<std::mutex> lock(control_->mu);
    EXPECT_EQ(control_->paused, std::vector<bool>{true});
  }
  // Off for the rest of the 10 s period, then on again.
  for (int second = 0; second < 12 && session_->target().budget().paused(); ++second) load();
  b = session_->target().budget();
  EXPECT_FALSE(b.paused()) << b.DebugString();
  EXPECT_EQ(b.stage(), "duty_cycle");
  EXPECT_TRUE(b.applied());
  EXPECT_GE(b.paused_ns(), 8 * kSecond);
  EXPECT_LT(b.traced_fraction(), 0.9);
  EXPECT_GT(b.traced_fraction(), 0.0);
  {
    std::lock_guard<std::mutex> lock(control_->mu);
    EXPECT_EQ(control_->paused, (std::vector<bool>{true, false}));
  }
  std::vector<uint32_t> marks;
  for (const auto& r : Recorded(*session_)) {
    if (const auto* m = std::get_if<ts_trace_mark>(&r.payload)) marks.push_back(m->kind);
  }
  EXPECT_EQ(marks,
            (std::vector<uint32_t>{TS_MARK_ATTACHED, TS_MARK_TRACE_PAUSED, TS_MARK_TRACE_RESUMED}));
}

// A source that cannot pause its probes: duty_cycle stays recommended (applied: false), and the
// source is asked once, not every second.
TEST_F(LiveSessionTest, OverheadBudgetDutyCycleNotAppliedWhereTheSourceCannotPause) {
  options_.trace.overhead_budget = 0.0001;
  Start();
  {
    std::lock_guard<std::mutex> lock(control_->mu);
    control_->can_pause = false;
  }
  bool saw_not_applied = false;
  for (int second = 0; second < 25; ++second) {
    std::vector<std::string> records;
    for (int i = 0; i < 20000; ++i) records.push_back(g_.Gil(kPid + 1, TS_GIL_TAKE_BEGIN));
    Push(testing::Batch(records));
    LivenessCheck();
    v1::OverheadBudget now = session_->target().budget();
    if (now.stage() == "duty_cycle" && !now.applied()) saw_not_applied = true;
  }
  EXPECT_TRUE(saw_not_applied);  // the off seconds: the cycle is recommended, not in effect
  v1::OverheadBudget b = session_->target().budget();
  ASSERT_EQ(b.stage(), "duty_cycle");
  EXPECT_FALSE(b.paused());
  EXPECT_EQ(b.traced_fraction(), 1.0);
  // Off seconds: not applied; an on second (probes live, as the stage asks) is.
  std::lock_guard<std::mutex> lock(control_->mu);
  EXPECT_TRUE(control_->paused.empty());
}

// The pinned process exits: the records still in the source are taken, then the trace ends as
// exited, with its probes removed.
TEST_F(LiveSessionTest, ExitEndsTheTraceAfterItsLastRecords) {
  fixture_.AddTask(kPid, "python3", 100);
  Start();
  v1::WatchEventsRequest req;
  auto sub = session_->Watch(req);
  Push(Batch({g_.Clone(kPid, kPid + 1, "worker")}));
  Ingested();
  process_->Exit();
  Push(Batch({g_.Exit(kPid + 1, "worker"), g_.Exit(kPid)}));  // written as it exited
  EXPECT_FALSE(session_->finished());  // noticed on the next liveness check, not before
  clock_.Advance(kSecond);
  ASSERT_TRUE(WaitUntil([&] { return session_->finished(); }));
  EXPECT_TRUE(SourceDetached());
  v1::Snapshot snap = session_->snapshot();
  EXPECT_TRUE(snap.final());
  EXPECT_EQ(snap.ended_by(), v1::TRACE_END_EXITED);
  EXPECT_EQ(snap.target().state(), v1::TARGET_STATE_EXITED);
  ASSERT_NE(ThreadByTid(snap, kPid + 1), nullptr);
  EXPECT_EQ(ThreadByTid(snap, kPid + 1)->state(), v1::THREAD_STATE_DONE);
  auto types = Types(Recorded(*session_));
  EXPECT_EQ(types.back(), TS_EV_TRACE_MARK);
  v1::WatchEventsResponse r;
  bool finished = false;
  while (sub->Next(&r, std::chrono::milliseconds(200)) == Pop::kItem) {
    if (r.has_target_finished()) {
      EXPECT_EQ(r.target_finished().state(), v1::TARGET_STATE_EXITED);
      finished = true;
    }
  }
  EXPECT_TRUE(finished);
  // Detaching a finished trace changes nothing.
  EXPECT_TRUE(session_->Detach().ok());
  EXPECT_EQ(session_->snapshot().ended_by(), v1::TRACE_END_EXITED);
}

// A setuid exec (or setuid()) makes it a process its owner may no longer trace: the trace ends.
TEST_F(LiveSessionTest, CredentialChangeEndsTheTraceAsExeced) {
  Start();
  LivenessCheck();
  EXPECT_FALSE(session_->finished());
  fixture_.SetCredentials(0, 0);
  clock_.Advance(kSecond);
  ASSERT_TRUE(WaitUntil([&] { return session_->finished(); }));
  EXPECT_TRUE(SourceDetached());
  v1::Snapshot snap = session_->snapshot();
  EXPECT_EQ(snap.target().state(), v1::TARGET_STATE_EXECED);
  EXPECT_EQ(snap.ended_by(), v1::TRACE_END_DETACHED);
}

// Detach removes the probes first, then takes what they wrote, then marks the end.
TEST_F(LiveSessionTest, DetachTakesWhatIsLeftAndMarksTheEnd) {
  Start();
  FakeRecordSource::SetDrops(*control_, TS_LOST_RINGBUF, 2);
  Push(Batch({g_.Clone(kPid, kPid + 1, "worker")}));
  clock_.Advance(3 * kSecond);
  ASSERT_TRUE(session_->Detach().ok());
  EXPECT_TRUE(SourceDetached());
  v1::Snapshot snap = session_->snapshot();
  EXPECT_TRUE(snap.final());
  EXPECT_EQ(snap.ended_by(), v1::TRACE_END_DETACHED);
  EXPECT_EQ(snap.trace_end_ns(), clock_.MonotonicNowNs());
  EXPECT_NE(ThreadByTid(snap, kPid + 1), nullptr);
  EXPECT_EQ(snap.target().stats().lost_ringbuf(), 2u);
  EXPECT_TRUE(session_->Detach().ok());
}

// Stack frames are named the first time a batch names them, and the names go ahead of the
// records that use them (so a recording replays them in order). A frame that cannot be read is
// asked again at its next sighting; one that is not Python is remembered as such.
TEST_F(LiveSessionTest, LocationsAreDefinedOnceAheadOfTheRecordsThatUseThem) {
  fixture_.AddTask(kPid, "python3", 100);
  frames_->frames[{0xc0de, 0x10}] = PythonFrame("/srv/app.py", "work", 12);
  target::ResolvedFrame not_python;
  not_python.kind = target::ResolvedFrame::Kind::kNotPython;
  frames_->frames[{0xc0de, 0x20}] = not_python;
  Start(/*stacks=*/true);
  const std::vector<std::pair<uint64_t, uint64_t>> stack = {
      {0xc0de, 0x10}, {0xc0de, 0x20}, {0xbad, 0x0}};
  Push(EventGenerator::WithStack(g_.SemWait(TS_EV_SEM_WAIT_BEGIN, kPid, 0x5e5), stack));
  Ingested();
  Push(EventGenerator::WithStack(g_.SemWait(TS_EV_SEM_WAIT_END, kPid, 0x5e5), stack));
  Ingested();
  EXPECT_EQ(frames_->asked[std::make_pair(uint64_t{0xc0de}, uint64_t{0x10})], 1);
  EXPECT_EQ(frames_->asked[std::make_pair(uint64_t{0xc0de}, uint64_t{0x20})], 1);
  EXPECT_EQ(frames_->asked[std::make_pair(uint64_t{0xbad}, uint64_t{0x0})], 2);

  auto recorded = Recorded(*session_);
  std::vector<uint16_t> types = Types(recorded);  // the mark and the /proc thread first
  std::vector<uint16_t> after_proc(types.begin() + 2, types.end());
  EXPECT_EQ(after_proc, (std::vector<uint16_t>{TS_EV_PY_LOCATION, TS_EV_PY_LOCATION,
                                               TS_EV_SEM_WAIT_BEGIN, TS_EV_SEM_WAIT_END}));
  const auto& named = std::get<model::PyLocationRecord>(recorded[2].payload);
  EXPECT_EQ(named.file, "/srv/app.py");
  EXPECT_EQ(named.function, "work");
  EXPECT_EQ(named.fixed.line, 12);
  EXPECT_EQ(std::get<model::PyLocationRecord>(recorded[3].payload).fixed.flags,
            uint32_t{TS_LOCATION_NOT_PYTHON});
}

// The waiter's stack, as the API shows it: named frames, the unreadable one as "?", the
// non-Python one left out.
TEST_F(LiveSessionTest, AWaitersStackShowsTheNamedFrames) {
  fixture_.AddTask(kPid, "python3", 100);
  frames_->frames[{0xc0de, 0x10}] = PythonFrame("/srv/app.py", "work", 12);
  target::ResolvedFrame not_python;
  not_python.kind = target::ResolvedFrame::Kind::kNotPython;
  frames_->frames[{0xc0de, 0x20}] = not_python;
  Start(/*stacks=*/true);
  Push(EventGenerator::WithStack(g_.SemWait(TS_EV_SEM_WAIT_BEGIN, kPid, 0x5e5),
                                 {{0xc0de, 0x10}, {0xc0de, 0x20}, {0xbad, 0x0}}));
  Ingested();
  v1::Snapshot snap = session_->snapshot();
  const v1::Thread* main = ThreadByTid(snap, kPid);
  ASSERT_NE(main, nullptr);
  ASSERT_TRUE(main->locks().has_waiting());
  const v1::PyStack& where = main->locks().waiting().stack();
  ASSERT_EQ(where.frames_size(), 2);
  EXPECT_EQ(where.frames(0).file(), "/srv/app.py");
  EXPECT_EQ(where.frames(0).function(), "work");
  EXPECT_EQ(where.frames(0).line(), 12);
  EXPECT_EQ(where.frames(1).file(), "?");
}

// Code objects are read by pid: if the process is gone once they were read, the pid may name
// another process whose memory the reads saw. Nothing read then is kept.
TEST_F(LiveSessionTest, NamesReadAfterTheProcessExitedAreDropped) {
  frames_->frames[{0xc0de, 0x10}] = PythonFrame("/srv/app.py", "work", 12);
  frames_->on_resolve = [this] { process_->Exit(); };
  Start(/*stacks=*/true);
  Push(EventGenerator::WithStack(g_.SemWait(TS_EV_SEM_WAIT_BEGIN, kPid, 0x5e5),
                                 {{0xc0de, 0x10}}));
  Ingested();
  Push(EventGenerator::WithStack(g_.SemWait(TS_EV_SEM_WAIT_END, kPid, 0x5e5), {{0xc0de, 0x10}}));
  Ingested();
  // Forgotten, so asked again (and dropped again).
  EXPECT_EQ(frames_->asked[std::make_pair(uint64_t{0xc0de}, uint64_t{0x10})], 2);
  for (uint16_t type : Types(Recorded(*session_))) EXPECT_NE(type, TS_EV_PY_LOCATION);
}

// A trace whose history outgrew its budget: a from-start watcher is told first, in-band, then
// hears what is left and what comes next; a recording (which must be whole) is refused.
TEST_F(LiveSessionTest, WatchFromStartOnATruncatedHistory) {
  options_.history_bytes = 128 << 10;
  Start();
  auto round = [&](uint32_t tid) {
    uint64_t boot = 0xb000 + tid;
    return Batch({g_.StartBegin(kPid, boot), g_.Clone(kPid, tid),
                  g_.StartEnd(kPid, boot, true, 0x7f000000 + tid), g_.Bootstrap(tid, boot),
                  g_.BodyDone(tid), g_.Exit(tid)});
  };
  for (uint32_t t = 0; t < 3000; t += 100) {  // ring batches of ~27 KiB
    std::string batch;
    for (uint32_t k = t; k < t + 100; ++k) batch += round(5000 + k);
    Push(batch);
    Ingested();
  }
  EXPECT_LE(session_->raw_log_bytes(), (128u << 10) + (64u << 10));
  v1::WatchEventsRequest req;
  req.set_from_start(true);
  auto sub = session_->Watch(req);
  v1::WatchEventsResponse r;
  ASSERT_EQ(sub->Next(&r, std::chrono::seconds(1)), Pop::kItem);
  ASSERT_TRUE(r.has_lost_events()) << r.DebugString();
  EXPECT_EQ(r.lost_events().source(), v1::LostEvents::SOURCE_HISTORY_TRUNCATED);
  EXPECT_GT(r.lost_events().count(), 0u);
  ASSERT_EQ(sub->Next(&r, std::chrono::seconds(1)), Pop::kItem);
  EXPECT_TRUE(r.has_thread_event());
  EXPECT_EQ(session_->StreamRecording().status().code(), StatusCode::kOutOfRange);
  // Live events follow the history.
  Push(round(9999));
  int32_t last_running = 0;
  while (sub->Next(&r, std::chrono::milliseconds(200)) == Pop::kItem) {
    ASSERT_FALSE(r.has_lost_events()) << r.DebugString();
    if (r.thread_event().change() == v1::THREAD_CHANGE_RUNNING) {
      last_running = r.thread_event().thread().native_tid();
    }
  }
  EXPECT_EQ(last_running, 9999);
  session_->Unwatch(sub);
}

TEST_F(LiveSessionTest, StartNeedsASourceAndAProcess) {
  LiveSources none;
  auto s = LiveSession::Start("pid:4000:1", SampleTarget(), std::move(none), options_, proc_,
                              clock_);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace threadscope::engine
