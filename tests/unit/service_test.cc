// The service over a real gRPC channel (in-process transport), with no kernel involved: what
// a client sees of malformed requests and of recordings loaded through the API. Links the
// daemon's whole service (the BPF attacher too); the engine's own tests do not.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "daemon/service/server.h"
#include "daemon/service/threadscope_service.h"
#include "tests/unit/event_generator.h"
#include "tests/unit/sample_recording.h"

namespace threadscope {
namespace {

using testing::EventGenerator;
using testing::Recording;
using testing::SampleBatches;

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
