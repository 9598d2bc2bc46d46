// Recordings and sessions without a kernel: records come from the EventGenerator. No libbpf,
// no gRPC: the engine:session target alone.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "recording/recording.h"
#include "daemon/engine/session.h"
#include "tests/unit/event_generator.h"
#include "tests/unit/fake_clock.h"
#include "tests/unit/sample_recording.h"
#include "tests/unit/test_env.h"

namespace threadscope {
namespace {

using testing::Batch;
using testing::EventGenerator;
using testing::Recording;
using testing::SampleBatches;
using testing::SampleTarget;

std::string TempPath(const char* name) { return testing::TestDir("engine_test") + "/" + name; }

TEST(RecordingTest, FileRoundTrip) {
  EventGenerator g;
  auto chunks = Recording(SampleBatches(g));
  std::string path = TempPath("roundtrip.tsrec");
  auto w = recording::RecordingWriter::Create(path);
  ASSERT_TRUE(w.ok());
  for (const auto& c : chunks) ASSERT_TRUE((*w)->Write(c).ok());
  ASSERT_TRUE((*w)->Close().ok());
  auto read = recording::ReadRecordingFile(path);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ASSERT_EQ(read->size(), chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ((*read)[i].SerializeAsString(), chunks[i].SerializeAsString());
  }
  unlink(path.c_str());
}

TEST(RecordingTest, BadFilesAreRejectedWithReasons) {
  EXPECT_EQ(recording::ReadRecordingFile("/nonexistent.tsrec").status().code(), StatusCode::kNotFound);
  std::string path = TempPath("bad.tsrec");
  {
    std::ofstream(path) << "#!/bin/sh\n";
  }
  EXPECT_EQ(recording::ReadRecordingFile(path).status().code(), StatusCode::kInvalidArgument);
  // Truncated in the middle of a chunk.
  EventGenerator g;
  auto w = recording::RecordingWriter::Create(path);
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
  EXPECT_EQ(recording::ReadRecordingFile(path).status().code(), StatusCode::kDataLoss);
  unlink(path.c_str());

  // A newer format, a missing header, a record cut in half.
  auto chunks = Recording(SampleBatches(g));
  chunks[0].mutable_header()->set_format_version(99);
  EXPECT_EQ(recording::ValidateRecording(chunks).code(), StatusCode::kFailedPrecondition);
  chunks = Recording(SampleBatches(g));
  chunks.erase(chunks.begin());
  EXPECT_EQ(recording::ValidateRecording(chunks).code(), StatusCode::kInvalidArgument);
  chunks = Recording(SampleBatches(g));
  chunks[1].set_records(chunks[1].records().substr(0, 30));
  EXPECT_EQ(recording::ValidateRecording(chunks).code(), StatusCode::kDataLoss);
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

// DESIGN §7: a slow client never stalls tracing. Clients that never read hold bounded queues;
// ingest goes on without waiting for them, and what they missed is told in-band when they read.
TEST(SessionTest, ClientsThatNeverReadNeverStallIngest) {
  EventGenerator g;
  FedSession session("pid:1:1", SampleTarget());
  auto watcher = session.Watch(v1::WatchEventsRequest(), "", engine::StreamLimits{16, 1 << 20});
  auto recorder = session.StreamRecording("", engine::StreamLimits{4, 1 << 20});
  ASSERT_TRUE(recorder.ok());
  for (uint32_t t = 0; t < 500; ++t) session.Ingest(ThreadRound(g, 3000 + t));
  EXPECT_EQ(session.target().stats().records(), 500u * 6);

  v1::WatchEventsResponse r;
  size_t items = 0;
  uint64_t lost = 0;
  while (watcher->Next(&r, std::chrono::milliseconds(10)) ==
         engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kItem) {
    ++items;
    if (r.has_lost_events()) {
      EXPECT_EQ(r.lost_events().source(), v1::LostEvents::SOURCE_CLIENT_QUEUE);
      lost += r.lost_events().count();
    }
  }
  EXPECT_EQ(items, 17u);  // the 16 it had room for, then how many it missed
  EXPECT_EQ(lost, 500u * 3 - 16);  // STARTING, RUNNING, DONE per thread

  // The recorder's next chunk after the ones it had room for starts with a ts_lost record.
  v1::RecordingChunk chunk;
  size_t chunks = 0;
  while ((*recorder)->Next(&chunk, std::chrono::milliseconds(10)) ==
         engine::BoundedQueue<v1::RecordingChunk>::PopResult::kItem) {
    ++chunks;
  }
  EXPECT_EQ(chunks, 1u + 4u);  // the header, then the 4 it had room for
  session.Ingest(ThreadRound(g, 9000));
  ASSERT_EQ((*recorder)->Next(&chunk, std::chrono::milliseconds(100)),
            engine::BoundedQueue<v1::RecordingChunk>::PopResult::kItem);
  ts_lost missed;
  ASSERT_GE(chunk.records().size(), sizeof(missed));
  std::memcpy(&missed, chunk.records().data(), sizeof(missed));
  EXPECT_EQ(missed.h.type, TS_EV_LOST);
  EXPECT_EQ(missed.source, uint32_t{TS_LOST_CONSUMER});
  EXPECT_EQ(missed.count, (500u - 4) * 6);
  session.Unwatch(watcher);
  session.Unstream(*recorder);
}

// A batch whose framing breaks (never from the ring; a recording is validated first): what could
// be read is applied, the rest is one decode error, and watchers still hear what happened.
TEST(SessionTest, ABadFrameInABatchIsOneDecodeError) {
  EventGenerator g;
  FedSession session("pid:1:1", SampleTarget());
  auto sub = session.Watch(v1::WatchEventsRequest());
  std::string good = ThreadRound(g, 2000);
  std::string bad = g.Clone(1000, 2001);
  ts_header h;
  std::memcpy(&h, bad.data(), sizeof(h));
  h.size = 1u << 20;  // claims more than the batch holds
  std::memcpy(bad.data(), &h, sizeof(h));
  session.Ingest(good + bad + ThreadRound(g, 2002));
  v1::TraceStats stats = session.target().stats();
  EXPECT_EQ(stats.records(), 6u);
  EXPECT_EQ(stats.decode_errors(), 1u);
  v1::WatchEventsResponse r;
  ASSERT_EQ(sub->Next(&r, std::chrono::milliseconds(100)),
            engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kItem);
  EXPECT_EQ(r.thread_event().change(), v1::THREAD_CHANGE_STARTING);
  session.Unwatch(sub);
}

// A snapshot of a running trace describes the session's clock's now.
TEST(SessionTest, SnapshotNowIsTheClocks) {
  testing::FakeClock clock(42'000'000'000);
  FedSession session("pid:1:1", SampleTarget(), clock);
  EXPECT_EQ(session.snapshot().now_ns(), 42'000'000'000u);
  clock.Advance(5);
  EXPECT_EQ(session.snapshot().now_ns(), 42'000'000'005u);
  session.Finish(v1::TARGET_STATE_EXITED);
  clock.Advance(5);
  EXPECT_TRUE(session.snapshot().final());
}

}  // namespace
}  // namespace threadscope
