// Shared traces and leases without a kernel or real time: the SessionManager with an attacher
// that starts LiveSessions over fake record sources, and a clock the test moves. What the root
// tier checks with a real daemon and real seconds (daemon_test), here exactly.
#include "daemon/engine/session_manager.h"

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <vector>

#include "tests/unit/engine_fakes.h"
#include "tests/unit/event_generator.h"

namespace threadscope::engine {
namespace {

using testing::FakeClock;
using testing::FakeProcess;
using testing::FakeRecordSource;
using testing::ProcFixture;
using Pop = BoundedQueue<v1::WatchEventsResponse>::PopResult;

constexpr pid_t kPid = 4100;

std::string CurrentTestName() {
  return ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

class SessionManagerTest : public ::testing::Test {
 protected:
  SessionManagerTest() : proc_dir_(testing::TestDir("proc_" + CurrentTestName())) {
    for (pid_t pid : {kPid, kPid + 1, kPid + 2}) fixtures_.emplace_back(proc_dir_, pid);
    options_.proc_root = proc_dir_;
    options_.live.poll_interval_ms = 2;
  }

  void Create() {
    manager_ = SessionManager::Create(
        options_,
        [this](std::string id, std::shared_ptr<const target::Process> process,
               const LiveSessionOptions& options,
               const target::ProcFs& proc,
               const Clock& clock) -> StatusOr<std::shared_ptr<LiveSession>> {
          ++attaches_;
          attached_options_.push_back(options);
          if (!fail_next_.ok()) {
            Status s = fail_next_;
            fail_next_ = OkStatus();
            return s;
          }
          auto source = std::make_unique<FakeRecordSource>();
          sources_.push_back(source->control());
          LiveSources sources;
          sources.records = std::move(source);
          sources.process = process;
          TS_ASSIGN_OR_RETURN(sources.attached_status, proc.Status(process->pid()));
          v1::Target t;
          t.set_pid(process->pid());
          t.set_lock_mode(settings::LockModeName(options.trace.locks));
          t.mutable_gil()->set_enabled(options.trace.gil);
          return LiveSession::Start(std::move(id), std::move(t), std::move(sources), options, proc,
                                    clock);
        },
        clock_);
  }

  StatusOr<SessionManager::AttachResult> Attach(const Client& client, v1::AttachOptions options = {},
                                                std::shared_ptr<FakeProcess> process = nullptr) {
    return manager_->Attach(process ? process : process_, options, client);
  }
  bool Detached(size_t source) { return FakeRecordSource::Detached(*sources_.at(source)); }

  std::string proc_dir_;
  std::vector<ProcFixture> fixtures_;
  FakeClock clock_;
  SessionManagerOptions options_;
  std::unique_ptr<SessionManager> manager_;
  std::shared_ptr<FakeProcess> process_ = std::make_shared<FakeProcess>(kPid);
  int attaches_ = 0;
  Status fail_next_;
  std::vector<LiveSessionOptions> attached_options_;
  std::vector<std::shared_ptr<FakeRecordSource::Control>> sources_;
  const Client alice_{"fd:7#1", 1000, false};
  const Client bob_{"fd:8#2", 1000, false};
  const Client root_{"fd:9#3", 0, true};
};

// Clients on one process share one trace; each holds a lease of its own, and a second client's
// options do not silently bind it: the notice says what it did not get.
TEST_F(SessionManagerTest, ClientsShareOneTraceEachWithItsOwnLease) {
  Create();
  auto a = Attach(alice_);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_TRUE(a->newly_attached);
  EXPECT_TRUE(a->notice.empty());
  v1::AttachOptions all;
  all.set_locks(v1::LOCK_TRACING_ALL);
  auto b = Attach(bob_, all);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_FALSE(b->newly_attached);
  EXPECT_EQ(b->session, a->session);
  EXPECT_NE(b->lease_id, a->lease_id);
  EXPECT_NE(b->notice.find("--locks all (traced with contended)"), std::string::npos) << b->notice;
  EXPECT_EQ(attaches_, 1);
  EXPECT_EQ(manager_->List().size(), 1u);
}

// A client's Detach ends its own lease: its streams end as if detached and its snapshot is final
// for it, while the trace goes on for the others. The last lease ends the trace.
TEST_F(SessionManagerTest, DetachEndsOnlyTheClientsLeaseUntilTheLast) {
  Create();
  auto a = Attach(alice_);
  auto b = Attach(bob_);
  ASSERT_TRUE(a.ok() && b.ok());
  auto session = a->session;
  auto alices = session->Watch(v1::WatchEventsRequest(), alice_.id);
  auto bobs = session->Watch(v1::WatchEventsRequest(), bob_.id);

  auto r = manager_->Detach(session->id(), alice_, a->lease_id, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->ended);
  EXPECT_TRUE(r->snapshot.final());
  EXPECT_EQ(r->snapshot.ended_by(), v1::TRACE_END_DETACHED);
  EXPECT_FALSE(session->finished());
  EXPECT_FALSE(Detached(0));
  v1::WatchEventsResponse ev;
  ASSERT_EQ(alices->Next(&ev, std::chrono::seconds(1)), Pop::kItem);
  EXPECT_EQ(ev.target_finished().state(), v1::TARGET_STATE_DETACHED);
  EXPECT_EQ(bobs->Next(&ev, std::chrono::milliseconds(20)), Pop::kTimeout);
  // Her lease is gone: detaching again is an error that says so.
  EXPECT_EQ(manager_->Detach(session->id(), alice_, a->lease_id, false).status().code(),
            StatusCode::kFailedPrecondition);

  r = manager_->Detach(session->id(), bob_, "", false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ended);
  EXPECT_TRUE(session->finished());
  EXPECT_TRUE(Detached(0));
  EXPECT_TRUE(manager_->List().empty());
  session->Unwatch(alices);
  session->Unwatch(bobs);
}

// Only the operator may end a trace others hold.
TEST_F(SessionManagerTest, ForceIsForTheOperator) {
  Create();
  auto a = Attach(alice_);
  auto b = Attach(bob_);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(manager_->Detach(a->session->id(), alice_, "", true).status().code(),
            StatusCode::kPermissionDenied);
  auto r = manager_->Detach(a->session->id(), root_, "", true);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ended);
  EXPECT_TRUE(Detached(0));
}

// A client whose connection closed (a killed CLI) loses its leases at once.
TEST_F(SessionManagerTest, ReleaseClientEndsItsLeases) {
  Create();
  auto a = Attach(alice_);
  auto b = Attach(bob_);
  ASSERT_TRUE(a.ok() && b.ok());
  manager_->ReleaseClient(alice_.id);
  EXPECT_FALSE(a->session->finished());
  EXPECT_EQ(manager_->List().size(), 1u);
  manager_->ReleaseClient(bob_.id);
  EXPECT_TRUE(a->session->finished());
  EXPECT_TRUE(Detached(0));
  EXPECT_TRUE(manager_->List().empty());
}

// Auto-attach's lease (Client::until_exit) never idles out: it ends when the trace does (the
// process exited), and the manager then tells its ended listeners (metrics keep the target's
// last values from there; auto-attach takes it off its count).
TEST_F(SessionManagerTest, TheDaemonsOwnLeaseEndsWithTheProcess) {
  Create();
  std::mutex mu;
  std::vector<std::string> ended;
  int listener = manager_->AddEndedListener([&](const std::shared_ptr<Session>& s) {
    std::lock_guard<std::mutex> lock(mu);
    ended.push_back(s->id());
  });
  const Client daemon{"daemon:auto-attach", 0, true, true};
  auto a = Attach(daemon);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto session = a->session;
  // The consumer reads the clock when it starts: let it start before the clock moves.
  ASSERT_TRUE(FakeRecordSource::WaitPolls(*sources_.at(0), 2));
  clock_.Advance(120'000'000'000ull);  // 4 default leases without a client: still traced
  manager_->ExpireIdleLeases();
  EXPECT_FALSE(session->finished());
  EXPECT_EQ(manager_->List().size(), 1u);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(ended.empty());
  }
  ASSERT_TRUE(FakeRecordSource::WaitPolls(*sources_.at(0), 2));  // it saw the clock move
  process_->Exit();
  clock_.Advance(10'000'000'000ull);  // the consumer's next liveness check is due
  ASSERT_TRUE(testing::WaitUntil([&] { return session->finished(); }));
  manager_->ExpireIdleLeases();
  EXPECT_TRUE(manager_->List().empty());
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(ended, std::vector<std::string>{session->id()});
  }
  manager_->RemoveEndedListener(listener);
}

// An ended listener hears of traces ended by Detach and by shutdown too, never of recordings.
TEST_F(SessionManagerTest, EndedListenersHearDetachAndShutdown) {
  Create();
  std::vector<std::string> ended;
  manager_->AddEndedListener(
      [&](const std::shared_ptr<Session>& s) { ended.push_back(s->id()); });
  auto a = Attach(alice_);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(manager_->Detach(a->session->id(), alice_, "", false).ok());
  EXPECT_EQ(ended, std::vector<std::string>{a->session->id()});
  auto b = Attach(bob_, {}, std::make_shared<FakeProcess>(kPid + 1));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  manager_->DetachAll();
  EXPECT_EQ(ended.size(), 2u);
  EXPECT_EQ(ended.back(), b->session->id());
}

// A lease ends after its time without use; using the target renews it. Time is the test's.
TEST_F(SessionManagerTest, IdleLeasesExpireOnTheClock) {
  Create();
  v1::AttachOptions two, ten;
  two.set_lease_seconds(2);
  ten.set_lease_seconds(10);
  auto a = Attach(alice_, two);
  auto b = Attach(bob_, ten);
  ASSERT_TRUE(a.ok() && b.ok());
  auto session = a->session;

  clock_.Advance(1'500'000'000);  // t = 1.5 s
  manager_->ExpireIdleLeases();
  ASSERT_TRUE(manager_->Get(session->id(), &alice_).ok());  // Alice uses it: renewed
  clock_.Advance(1'500'000'000);  // t = 3: Alice idle 1.5 s of her 2
  manager_->ExpireIdleLeases();
  // Still hers: she can end it herself.
  ASSERT_TRUE(manager_->Detach(session->id(), alice_, a->lease_id, false).ok());

  a = Attach(alice_, two);  // a new lease at t = 3, never used
  ASSERT_TRUE(a.ok());
  clock_.Advance(2'500'000'000);  // t = 5.5: idle 2.5 s of 2
  manager_->ExpireIdleLeases();
  EXPECT_EQ(manager_->Detach(session->id(), alice_, a->lease_id, false).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_FALSE(session->finished());  // Bob still holds it
  EXPECT_FALSE(Detached(0));
  clock_.Advance(5'000'000'000);  // t = 10.5: Bob idle 10.5 s of 10
  manager_->ExpireIdleLeases();
  EXPECT_TRUE(session->finished());
  EXPECT_TRUE(Detached(0));
  EXPECT_TRUE(manager_->List().empty());
}

// Only the operator may hold a trace open long without using it.
TEST_F(SessionManagerTest, UnprivilegedLeasesAreClamped) {
  options_.limits.max_lease_seconds_unprivileged = 60;
  Create();
  v1::AttachOptions day;
  day.set_lease_seconds(86400);
  auto a = Attach(alice_, day);
  auto r = Attach(root_, day);
  ASSERT_TRUE(a.ok() && r.ok());
  clock_.Advance(61'000'000'000ull);
  manager_->ExpireIdleLeases();
  EXPECT_EQ(manager_->Detach(a->session->id(), alice_, "", false).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_TRUE(manager_->Detach(a->session->id(), root_, "", false).ok());
}

// A pid reused by another process is another trace (the pinned identity includes its start).
TEST_F(SessionManagerTest, AReusedPidIsANewTrace) {
  Create();
  auto first = std::make_shared<FakeProcess>(kPid, 1);
  auto second = std::make_shared<FakeProcess>(kPid, 2);
  auto a = Attach(alice_, {}, first);
  auto b = Attach(alice_, {}, second);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(b->newly_attached);
  EXPECT_NE(a->session->id(), b->session->id());
  EXPECT_EQ(attaches_, 2);
}

TEST_F(SessionManagerTest, LimitsOnLeasesAndTraces) {
  options_.limits.max_leases_per_session = 2;
  options_.limits.max_sessions_per_uid = 1;
  options_.limits.max_live_sessions = 2;
  Create();
  ASSERT_TRUE(Attach(alice_).ok());
  ASSERT_TRUE(Attach(bob_).ok());
  EXPECT_EQ(Attach(root_).status().code(), StatusCode::kResourceExhausted);  // 2 leases
  // uid 1000 holds one trace already.
  auto other = std::make_shared<FakeProcess>(kPid + 1);
  EXPECT_EQ(Attach(alice_, {}, other).status().code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(Attach(root_, {}, other).ok());
  auto third = std::make_shared<FakeProcess>(kPid + 2);
  EXPECT_EQ(Attach(root_, {}, third).status().code(), StatusCode::kResourceExhausted);
}

// A failed attach leaves nothing behind: the next one of the same process goes through.
TEST_F(SessionManagerTest, AFailedAttachCanBeRetried) {
  Create();
  fail_next_ = FailedPreconditionError("not CPython");
  EXPECT_EQ(Attach(alice_).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(manager_->List().empty());
  auto a = Attach(alice_);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_TRUE(a->newly_attached);
}

// The request's options reach the attacher validated.
TEST_F(SessionManagerTest, OptionsAreValidatedBeforeAttaching) {
  Create();
  v1::AttachOptions bad;
  bad.set_ring_buffer_bytes(12345);
  EXPECT_EQ(Attach(alice_, bad).status().code(), StatusCode::kInvalidArgument);
  bad = {};
  bad.set_ring_buffer_bytes(128u << 20);  // over the unprivileged limit
  EXPECT_EQ(Attach(alice_, bad).status().code(), StatusCode::kInvalidArgument);
  bad = {};
  bad.set_locks(static_cast<v1::LockTracing>(7));  // open enum: any number can arrive
  EXPECT_EQ(Attach(alice_, bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(attaches_, 0);
  v1::AttachOptions good;
  good.set_locks(v1::LOCK_TRACING_ALL);
  good.set_acquire_stack_frames(4);
  good.set_gil(false);
  (*good.mutable_labels())["service"] = "api";
  ASSERT_TRUE(Attach(alice_, good).ok());
  ASSERT_EQ(attached_options_.size(), 1u);
  EXPECT_EQ(attached_options_[0].trace.locks, settings::LockMode::kAll);
  EXPECT_EQ(attached_options_[0].trace.acquire_stack_frames, 4);
  EXPECT_FALSE(attached_options_[0].trace.gil);
  EXPECT_EQ(attached_options_[0].trace.labels.at("service"), "api");
}

TEST_F(SessionManagerTest, WithoutAnAttacherLiveTargetsAreUnimplemented) {
  manager_ = SessionManager::Create(options_, nullptr, clock_);
  EXPECT_EQ(Attach(alice_).status().code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace threadscope::engine
