// Recordings, replayed sessions and the service, without a kernel: records come from the
// EventGenerator, the API is reached through a real (in-process) gRPC channel.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "daemon/engine/recording.h"
#include "daemon/engine/session.h"
#include "daemon/engine/session_manager.h"
#include "daemon/service/server.h"
#include "daemon/service/threadscope_service.h"
#include "tests/unit/event_generator.h"

namespace threadscope {
namespace {

using testing::Batch;
using testing::EventGenerator;


v1::Target SampleTarget() {
  v1::Target t;
  t.set_pid(1000);
  t.set_python_version("3.11.2");
  t.set_symbols(v1::SYMBOL_LEVEL_DYNAMIC_ONLY);
  t.set_join_visibility(v1::JOIN_VISIBILITY_BLOCKING_ONLY);
  t.set_body_done_visible(true);
  auto* p = t.add_probes();
  p->set_name("thread_start");
  p->set_attached(true);
  return t;
}

std::vector<v1::RecordingChunk> Recording(const std::vector<std::string>& record_batches,
                                          bool trailer = true) {
  std::vector<v1::RecordingChunk> chunks(1);
  auto* h = chunks[0].mutable_header();
  h->set_format_version(engine::kRecordingFormatVersion);
  h->set_abi_version(TS_ABI_VERSION);
  *h->mutable_target() = SampleTarget();
  for (const auto& b : record_batches) {
    v1::RecordingChunk c;
    c.set_records(b);
    chunks.push_back(c);
  }
  if (trailer) {
    v1::RecordingChunk t;
    t.mutable_trailer()->set_state(v1::TARGET_STATE_EXITED);
    chunks.push_back(t);
  }
  return chunks;
}

std::vector<std::string> SampleBatches(EventGenerator& g) {
  return {Batch({g.Mark(TS_MARK_ATTACHED), g.Preexisting(1000, 5, "python3")}),
          Batch({g.StartBegin(1000, 0xb0), g.Clone(1000, 1001),
                 g.StartEnd(1000, 0xb0, true, 0x7f01), g.Bootstrap(1001, 0xb0),
                 g.Sentinel(1001, 0x10, 0x20), g.SemWait(TS_EV_SEM_WAIT_BEGIN, 1000, 0x20)}),
          Batch({g.BodyDone(1001), g.Exit(1001), g.SemWait(TS_EV_SEM_WAIT_END, 1000, 0x20, 0),
                 g.StartBegin(1000, 0xb1), g.StartEnd(1000, 0xb1, false, 0), g.Exit(1000),
                 g.Mark(TS_MARK_TARGET_EXITED)})};
}

std::string TempPath(const char* name) {
  return std::string("/tmp/ts_unit_") + std::to_string(getpid()) + "_" + name;
}

TEST(RecordingTest, FileRoundTrip) {
  EventGenerator g;
  auto chunks = Recording(SampleBatches(g));
  std::string path = TempPath("roundtrip.tsrec");
  auto w = engine::RecordingWriter::Create(path);
  ASSERT_TRUE(w.ok());
  for (const auto& c : chunks) ASSERT_TRUE((*w)->Write(c).ok());
  ASSERT_TRUE((*w)->Close().ok());
  auto read = engine::ReadRecordingFile(path);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ASSERT_EQ(read->size(), chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ((*read)[i].SerializeAsString(), chunks[i].SerializeAsString());
  }
  unlink(path.c_str());
}

TEST(RecordingTest, BadFilesAreRejectedWithReasons) {
  EXPECT_EQ(engine::ReadRecordingFile("/nonexistent.tsrec").status().code(), StatusCode::kNotFound);
  std::string path = TempPath("bad.tsrec");
  {
    std::ofstream(path) << "#!/bin/sh\n";
  }
  EXPECT_EQ(engine::ReadRecordingFile(path).status().code(), StatusCode::kInvalidArgument);
  // Truncated in the middle of a chunk.
  EventGenerator g;
  auto w = engine::RecordingWriter::Create(path);
  for (const auto& c : Recording(SampleBatches(g))) ASSERT_TRUE((*w)->Write(c).ok());
  ASSERT_TRUE((*w)->Close().ok());
  std::string whole;
  {
    std::ifstream in(path, std::ios::binary);
    whole.assign(std::istreambuf_iterator<char>(in), {});
  }
  {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << whole.substr(0, whole.size() - 7);
  }
  EXPECT_EQ(engine::ReadRecordingFile(path).status().code(), StatusCode::kDataLoss);
  unlink(path.c_str());

  // A newer format, a missing header, a record cut in half.
  auto chunks = Recording(SampleBatches(g));
  chunks[0].mutable_header()->set_format_version(99);
  EXPECT_EQ(engine::ValidateRecording(chunks).code(), StatusCode::kFailedPrecondition);
  chunks = Recording(SampleBatches(g));
  chunks.erase(chunks.begin());
  EXPECT_EQ(engine::ValidateRecording(chunks).code(), StatusCode::kInvalidArgument);
  chunks = Recording(SampleBatches(g));
  chunks[1].set_records(chunks[1].records().substr(0, 30));
  EXPECT_EQ(engine::ValidateRecording(chunks).code(), StatusCode::kDataLoss);
}

TEST(ReplaySessionTest, RebuildsTheModelAndReplaysEvents) {
  EventGenerator g;
  auto session = engine::ReplaySession::Create("rec:1", Recording(SampleBatches(g)));
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  v1::Snapshot snap = (*session)->snapshot();
  EXPECT_TRUE(snap.final());
  EXPECT_EQ(snap.ended_by(), v1::TRACE_END_EXITED);
  ASSERT_EQ(snap.threads_size(), 3);
  const v1::Thread& worker = snap.threads(1);
  EXPECT_EQ(worker.native_tid(), 1001);
  EXPECT_EQ(worker.state(), v1::THREAD_STATE_DONE);
  EXPECT_TRUE(worker.has_joined() && worker.joined());
  EXPECT_EQ(worker.joined_by(), 1000);
  EXPECT_TRUE(worker.returned());
  EXPECT_TRUE(snap.threads(2).start_failed());
  EXPECT_EQ(snap.target().stats().records(), 15u);

  // A watcher that asks for history gets every change in order, then the end.
  v1::WatchEventsRequest req;
  req.set_from_start(true);
  auto sub = (*session)->Watch(req);
  std::vector<v1::ThreadChange> changes;
  v1::WatchEventsResponse r;
  while (sub->Next(&r, std::chrono::milliseconds(100)) ==
         engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kItem) {
    if (r.has_target_finished()) break;
    changes.push_back(r.thread_event().change());
  }
  EXPECT_TRUE(r.has_target_finished());
  std::vector<v1::ThreadChange> expected = {
      v1::THREAD_CHANGE_DISCOVERED,     v1::THREAD_CHANGE_STARTING,
      v1::THREAD_CHANGE_RUNNING,        v1::THREAD_CHANGE_JOIN_WAIT_BEGIN,
      v1::THREAD_CHANGE_DONE,           v1::THREAD_CHANGE_JOIN_WAIT_END,
      v1::THREAD_CHANGE_JOINED,         v1::THREAD_CHANGE_STARTING,
      v1::THREAD_CHANGE_START_FAILED,   v1::THREAD_CHANGE_DONE};
  EXPECT_EQ(changes, expected);

  // Streaming it out again yields the same records (a recording of a recording).
  auto rec = (*session)->StreamRecording();
  ASSERT_TRUE(rec.ok());
  std::string records;
  v1::RecordingChunk c;
  bool trailer = false;
  while ((*rec)->Next(&c, std::chrono::milliseconds(100)) ==
         engine::BoundedQueue<v1::RecordingChunk>::PopResult::kItem) {
    if (c.has_records()) records += c.records();
    trailer |= c.has_trailer();
  }
  EXPECT_TRUE(trailer);
  EventGenerator again;
  EXPECT_EQ(records, Batch(SampleBatches(again)));
}

TEST(BoundedQueueTest, DropsWhenFullAndSaysHowMany) {
  engine::BoundedQueue<int> q(2);
  EXPECT_TRUE(q.Push(1));
  EXPECT_TRUE(q.Push(2));
  EXPECT_FALSE(q.Push(3));
  EXPECT_EQ(q.TakeDropped(), 1u);
  EXPECT_EQ(q.TakeDropped(), 0u);
  int v;
  EXPECT_EQ(q.Pop(&v, std::chrono::milliseconds(1)), engine::BoundedQueue<int>::PopResult::kItem);
  EXPECT_EQ(v, 1);
  q.Close();
  EXPECT_EQ(q.Pop(&v, std::chrono::milliseconds(1)), engine::BoundedQueue<int>::PopResult::kItem);
  EXPECT_EQ(q.Pop(&v, std::chrono::milliseconds(1)),
            engine::BoundedQueue<int>::PopResult::kClosed);
}

TEST(BoundedQueueTest, BoundedInBytesToo) {
  engine::BoundedQueue<std::string> q(100, 10);
  EXPECT_TRUE(q.Push("aaaa", 4));
  EXPECT_TRUE(q.Push("bbbbbb", 6));
  EXPECT_FALSE(q.Push("c", 1));  // 11 bytes would be over
  EXPECT_EQ(q.TakeDropped(), 1u);
  std::string v;
  ASSERT_EQ(q.Pop(&v, std::chrono::milliseconds(1)),
            engine::BoundedQueue<std::string>::PopResult::kItem);
  EXPECT_TRUE(q.Push("dddd", 4));  // room again once the reader took some
}

// A session fed by hand, standing in for a live one.
class FedSession : public engine::Session {
 public:
  using Session::Session;
  using Session::Finish;
  using Session::IngestRecords;
  using Session::set_raw_log_budget;
  Status Detach() override { return OkStatus(); }
  void Ingest(const std::string& records) {
    IngestRecords(reinterpret_cast<const uint8_t*>(records.data()), records.size());
  }
};

// One thread started and finished per call.
std::string ThreadRound(EventGenerator& g, uint32_t tid) {
  uint64_t boot = 0xb000 + tid, ident = 0x7f000000 + tid;
  return Batch({g.StartBegin(1000, boot), g.Clone(1000, tid), g.StartEnd(1000, boot, true, ident),
                g.Bootstrap(tid, boot), g.BodyDone(tid), g.Exit(tid)});
}

// The history is only referenced under the session lock; the reader replays it while records
// keep coming in, and sees every change once, in order: history, then live.
TEST(SessionTest, WatchFromStartWhileRecordsArrive) {
  EventGenerator g;
  FedSession session("pid:1:1", SampleTarget());
  for (uint32_t t = 0; t < 200; ++t) session.Ingest(ThreadRound(g, 2000 + t));
  v1::WatchEventsRequest req;
  req.set_from_start(true);
  auto sub = session.Watch(req);
  std::thread feeder([&] {
    for (uint32_t t = 200; t < 400; ++t) session.Ingest(ThreadRound(g, 2000 + t));
    session.Finish(v1::TARGET_STATE_EXITED);
  });
  std::vector<int32_t> running;
  v1::WatchEventsResponse r;
  while (sub->Next(&r, std::chrono::seconds(5)) ==
         engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kItem) {
    ASSERT_FALSE(r.has_lost_events()) << r.DebugString();
    if (r.has_target_finished()) break;
    if (r.thread_event().change() == v1::THREAD_CHANGE_RUNNING) {
      running.push_back(r.thread_event().thread().native_tid());
    }
  }
  feeder.join();
  EXPECT_TRUE(r.has_target_finished());
  ASSERT_EQ(running.size(), 400u);
  for (size_t i = 0; i < running.size(); ++i) EXPECT_EQ(running[i], static_cast<int32_t>(2000 + i));
}

// When the oldest history no longer fits the budget, a from-start watcher is told so first,
// and a recording (which must be whole) is refused with the reason.
TEST(SessionTest, TruncatedHistoryIsSaidInBand) {
  EventGenerator g;
  FedSession session("pid:1:1", SampleTarget());
  session.set_raw_log_budget(128 << 10);
  for (uint32_t t = 0; t < 3000; ++t) session.Ingest(ThreadRound(g, 5000 + t));
  v1::WatchEventsRequest req;
  req.set_from_start(true);
  auto sub = session.Watch(req);
  v1::WatchEventsResponse r;
  ASSERT_EQ(sub->Next(&r, std::chrono::milliseconds(100)),
            engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kItem);
  ASSERT_TRUE(r.has_lost_events());
  EXPECT_EQ(r.lost_events().source(), v1::LostEvents::SOURCE_HISTORY_TRUNCATED);
  EXPECT_GT(r.lost_events().count(), 0u);
  ASSERT_EQ(sub->Next(&r, std::chrono::milliseconds(100)),
            engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kItem);
  EXPECT_TRUE(r.has_thread_event());
  EXPECT_EQ(session.StreamRecording().status().code(), StatusCode::kOutOfRange);
  EXPECT_LE(session.raw_log_bytes(), (128u << 10) + (64u << 10));
}

// The service over a real gRPC channel (in-process transport), with no kernel involved.
class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = service::InProcessEngine::Start();
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value();
    stub_ = v1::ThreadscopeService::NewStub(engine_->channel());
  }
  std::unique_ptr<service::InProcessEngine> engine_;
  std::unique_ptr<v1::ThreadscopeService::Stub> stub_;
};

TEST_F(ServiceTest, MalformedRequestsGetClearStatuses) {
  {
    grpc::ClientContext ctx;
    v1::AttachRequest req;
    req.set_pid(-5);
    v1::AttachResponse resp;
    grpc::Status s = stub_->Attach(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("positive"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    v1::AttachRequest req;
    req.set_pid(0x3fffffff);
    v1::AttachResponse resp;
    EXPECT_EQ(stub_->Attach(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::AttachRequest req;
    req.set_pid(getpid());  // a live process that is not CPython
    v1::AttachResponse resp;
    grpc::Status s = stub_->Attach(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
    EXPECT_NE(s.error_message().find("not CPython"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    v1::AttachRequest req;
    req.set_pid(getpid());
    req.mutable_options()->set_ring_buffer_bytes(12345);
    v1::AttachResponse resp;
    EXPECT_EQ(stub_->Attach(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::GetSnapshotResponse resp;
    EXPECT_EQ(stub_->GetSnapshot(&ctx, v1::GetSnapshotRequest(), &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::GetSnapshotRequest req;
    req.set_target_id("pid:123456789");
    v1::GetSnapshotResponse resp;
    EXPECT_EQ(stub_->GetSnapshot(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::LoadRecordingResponse resp;
    auto w = stub_->LoadRecording(&ctx, &resp);
    v1::RecordingChunk junk;
    junk.set_records("not records at all");
    w->Write(junk);
    w->WritesDone();
    EXPECT_EQ(w->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    EventGenerator g;
    auto chunks = Recording(SampleBatches(g));
    grpc::ClientContext ctx;
    v1::LoadRecordingResponse loaded;
    auto w = stub_->LoadRecording(&ctx, &loaded);
    for (const auto& c : chunks) w->Write(c);
    w->WritesDone();
    ASSERT_TRUE(w->Finish().ok());
    grpc::ClientContext ctx2;
    v1::WatchEventsRequest bad;
    bad.set_target_id(loaded.target().target_id());
    bad.add_changes(static_cast<v1::ThreadChange>(77));
    auto reader = stub_->WatchEvents(&ctx2, bad);
    v1::WatchEventsResponse r;
    EXPECT_FALSE(reader->Read(&r));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  // After all that, the engine still serves.
  grpc::ClientContext ctx;
  v1::GetStatusResponse status;
  ASSERT_TRUE(stub_->GetStatus(&ctx, v1::GetStatusRequest(), &status).ok());
  EXPECT_EQ(status.mode(), "in-process");
  EXPECT_EQ(status.targets_size(), 1);
}

TEST_F(ServiceTest, RecordingLoadedThroughTheApiGivesTheSnapshot) {
  EventGenerator g;
  grpc::ClientContext ctx;
  v1::LoadRecordingResponse loaded;
  auto w = stub_->LoadRecording(&ctx, &loaded);
  for (const auto& c : Recording(SampleBatches(g))) w->Write(c);
  w->WritesDone();
  ASSERT_TRUE(w->Finish().ok());
  EXPECT_EQ(loaded.target().state(), v1::TARGET_STATE_RECORDING);
  grpc::ClientContext ctx2;
  v1::GetSnapshotRequest req;
  req.set_target_id(loaded.target().target_id());
  v1::GetSnapshotResponse snap;
  ASSERT_TRUE(stub_->GetSnapshot(&ctx2, req, &snap).ok());
  EXPECT_EQ(snap.snapshot().threads_size(), 3);
  grpc::ClientContext ctx3;
  v1::DetachRequest det;
  det.set_target_id(loaded.target().target_id());
  v1::DetachResponse detached;
  ASSERT_TRUE(stub_->Detach(&ctx3, det, &detached).ok());
  EXPECT_EQ(detached.snapshot().threads_size(), 3);
}

}  // namespace
}  // namespace threadscope
