#include "client/timeline.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "perfetto/trace.pb.h"

namespace threadscope::client::timeline {
namespace {

constexpr int32_t kMain = 100, kA = 101, kB = 102;
constexpr uint64_t kMs = 1'000'000;

// A trace: A holds the GIL, B waits for it; B then waits 5 ms for lock L held by A, A releases
// it waking B (a hand-off), B gets it.
class TimelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    final_.mutable_target()->set_pid(kMain);
    final_.mutable_target()->set_executable("/usr/bin/python3.11");
    final_.set_trace_start_ns(1 * kMs);
    final_.set_trace_end_ns(100 * kMs);
    AddThread(kMain, "python3", v1::THREAD_ORIGIN_PREEXISTING, 0, 0);
    AddThread(kA, "worker-a", v1::THREAD_ORIGIN_STARTED, 2 * kMs, 3 * kMs);
    AddThread(kB, "worker-b", v1::THREAD_ORIGIN_STARTED, 4 * kMs, 5 * kMs);
    auto* lock = final_.add_locks();
    lock->set_id("0x55:1");
    auto* frame = lock->mutable_first_contended_at()->add_frames();
    frame->set_file("/srv/app.py");
    frame->set_line(12);
    frame->set_function("work");

    Gil(v1::GIL_CHANGE_WAIT_BEGIN, kA, 10);
    Gil(v1::GIL_CHANGE_ACQUIRED, kA, 11);
    Gil(v1::GIL_CHANGE_WAIT_BEGIN, kB, 12);
    Gil(v1::GIL_CHANGE_DROPPED, kA, 16);
    Gil(v1::GIL_CHANGE_ACQUIRED, kB, 17);
    Gil(v1::GIL_CHANGE_DROPPED, kB, 18);
    Lock(v1::LOCK_CHANGE_WAIT_BEGIN, kB, 20, kA);
    Lock(v1::LOCK_CHANGE_WOKEN, kA, 25, 0);
    Lock(v1::LOCK_CHANGE_WAIT_END, kB, 26, kA);
  }
  void AddThread(int32_t tid, const char* name, v1::ThreadOrigin origin, uint64_t started,
                 uint64_t running) {
    auto* t = final_.add_threads();
    t->set_native_tid(tid);
    t->set_name(name);
    t->set_origin(origin);
    if (started) t->set_started_ns(started);
    if (running) t->set_running_ns(running);
    t->set_state(v1::THREAD_STATE_RUNNING);
  }
  void Gil(v1::GilChange c, int32_t tid, uint64_t ms) {
    v1::WatchEventsResponse r;
    r.mutable_gil_event()->set_change(c);
    r.mutable_gil_event()->set_native_tid(tid);
    r.mutable_gil_event()->set_ts_ns(ms * kMs);
    events_.push_back(r);
  }
  void Lock(v1::LockChange c, int32_t tid, uint64_t ms, int32_t other) {
    v1::WatchEventsResponse r;
    auto* e = r.mutable_lock_event();
    e->set_change(c);
    e->set_native_tid(tid);
    e->set_ts_ns(ms * kMs);
    e->set_lock_id("0x55:1");
    e->set_wait_kind(v1::WAIT_KIND_LOCK);
    if (other) e->set_other_native_tid(other);
    if (c == v1::LOCK_CHANGE_WAIT_END) e->set_acquired(true);
    if (c == v1::LOCK_CHANGE_WAIT_BEGIN) *e->mutable_stack() = final_.locks(0).first_contended_at();
    events_.push_back(r);
  }
  const Slice* Find(const Timeline& t, const std::string& track, const std::string& name) {
    for (const auto& s : t.slices) {
      if (s.track == track && s.name.rfind(name, 0) == 0) return &s;
    }
    return nullptr;
  }

  v1::Snapshot final_;
  std::vector<v1::WatchEventsResponse> events_;
};

TEST_F(TimelineTest, ThreadsWaitsHoldsAndHandOffs) {
  Timeline t = Build(final_, events_);
  // Lifecycle on each thread's own child track.
  const Slice* running = Find(t, "life:101", "running");
  ASSERT_NE(running, nullptr);
  EXPECT_EQ(running->begin_ns, 3 * kMs);
  EXPECT_EQ(running->end_ns, 100 * kMs);
  ASSERT_NE(Find(t, "life:101", "starting"), nullptr);
  // GIL: B waited 12..17 ms; A held 11..16 ms, shown on A and on the process GIL track.
  const Slice* wait = Find(t, "gil:102", "GIL wait");
  ASSERT_NE(wait, nullptr);
  EXPECT_EQ(wait->begin_ns, 12 * kMs);
  EXPECT_EQ(wait->end_ns, 17 * kMs);
  ASSERT_NE(Find(t, "gil:101", "GIL held"), nullptr);
  ASSERT_NE(Find(t, "gil", "held by 101"), nullptr);
  // The lock wait is named by where it happened, and the hand-off is a flow from A's release to
  // B's wait.
  const Slice* lw = Find(t, "thread:102", "lock wait at app.py:12 work");
  ASSERT_NE(lw, nullptr);
  EXPECT_EQ(lw->begin_ns, 20 * kMs);
  EXPECT_EQ(lw->end_ns, 26 * kMs);
  const Slice* release = Find(t, "thread:101", "release wakes a waiter");
  ASSERT_NE(release, nullptr);
  ASSERT_EQ(release->flows_out.size(), 1u);
  ASSERT_EQ(lw->flows_in.size(), 1u);
  EXPECT_EQ(release->flows_out[0], lw->flows_in[0]);
  // B holds the lock from 26 ms to the end on the lock's track.
  const Slice* held = Find(t, "lock:0x55:1", "held by 102");
  ASSERT_NE(held, nullptr);
  EXPECT_EQ(held->end_ns, 100 * kMs);
  // Counters return to 0 after each wait.
  std::map<std::string, int64_t> last;
  for (const auto& c : t.counters) last[c.track] = c.value;
  ASSERT_TRUE(last.count("gilwaiters") && last.count("lockwaiters"));
  EXPECT_EQ(last.at("gilwaiters"), 0);
  EXPECT_EQ(last.at("lockwaiters"), 0);
}

TEST_F(TimelineTest, PerfettoTraceParsesBackWithBalancedSlicesAndFlows) {
  Timeline t = Build(final_, events_);
  perfetto::protos::Trace trace;
  ASSERT_TRUE(trace.ParseFromString(ToPerfetto(t)));
  std::map<uint64_t, std::string> names;
  std::set<int32_t> tids;
  std::map<uint64_t, int> depth;
  std::set<uint64_t> flows_out, flows_in;
  uint64_t last_ts = 0;
  for (const auto& p : trace.packet()) {
    EXPECT_EQ(p.trusted_packet_sequence_id(), 1u);
    if (p.has_track_descriptor()) {
      const auto& d = p.track_descriptor();
      names[d.uuid()] = d.has_thread() ? d.thread().thread_name() : d.name();
      if (d.has_thread()) {
        EXPECT_EQ(d.thread().pid(), kMain);
        tids.insert(d.thread().tid());
      }
      continue;
    }
    ASSERT_TRUE(p.has_track_event());
    EXPECT_GE(p.timestamp(), last_ts);  // in time order
    last_ts = p.timestamp();
    const auto& e = p.track_event();
    ASSERT_TRUE(names.count(e.track_uuid())) << "event on an undeclared track";
    if (e.type() == perfetto::protos::TrackEvent::TYPE_SLICE_BEGIN) ++depth[e.track_uuid()];
    if (e.type() == perfetto::protos::TrackEvent::TYPE_SLICE_END) {
      EXPECT_GT(depth[e.track_uuid()], 0) << names[e.track_uuid()];
      --depth[e.track_uuid()];
    }
    for (uint64_t f : e.flow_ids()) flows_out.insert(f);
    for (uint64_t f : e.terminating_flow_ids()) flows_in.insert(f);
  }
  for (const auto& [uuid, d] : depth) EXPECT_EQ(d, 0) << names[uuid];
  EXPECT_EQ(tids, (std::set<int32_t>{kMain, kA, kB}));
  EXPECT_EQ(flows_out.size(), 1u);
  EXPECT_EQ(flows_out, flows_in);
}

TEST_F(TimelineTest, ChromeJsonHasNamesSlicesFlowsAndCounters) {
  auto j = ToChrome(Build(final_, events_));
  std::map<std::string, int> phases;
  bool named_b = false, lock_wait = false;
  for (const auto& e : j["traceEvents"]) {
    ++phases[e["ph"].get<std::string>()];
    if (e["ph"] == "M" && e["name"] == "thread_name" && e["tid"] == kB) {
      named_b = e["args"]["name"] == "worker-b 102";
    }
    if (e["ph"] == "X" && e["tid"] == kB && e["name"] == "lock wait at app.py:12 work") {
      lock_wait = e["dur"].get<double>() == 6000.0 && e["args"]["woken_by"] == "101";
    }
  }
  EXPECT_TRUE(named_b);
  EXPECT_TRUE(lock_wait);
  EXPECT_EQ(phases["s"], 1);
  EXPECT_EQ(phases["f"], 1);
  EXPECT_EQ(phases["b"], phases["e"]);
  EXPECT_GT(phases["C"], 0);
}

}  // namespace
}  // namespace threadscope::client::timeline
