// Talks to a running threadscoped over its Unix socket (THREADSCOPE_SOCKET) the way any gRPC
// client would: health checking, server reflection, and requests a careless client might send.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <set>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "threadscope/v1/threadscope.grpc.pb.h"

namespace threadscope {
namespace {

std::shared_ptr<grpc::Channel> Channel() {
  const char* socket = std::getenv("THREADSCOPE_SOCKET");
  EXPECT_NE(socket, nullptr) << "set THREADSCOPE_SOCKET";
  return grpc::CreateChannel(std::string("unix:") + (socket ? socket : ""),
                             grpc::InsecureChannelCredentials());
}

TEST(DaemonApi, HealthCheck) {
  auto stub = grpc::health::v1::Health::NewStub(Channel());
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("threadscope.v1.ThreadscopeService");
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  grpc::ClientContext ctx2;
  req.set_service("no.such.Service");
  EXPECT_EQ(stub->Check(&ctx2, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(DaemonApi, ReflectionListsTheServices) {
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(Channel());
  grpc::ClientContext ctx;
  auto stream = stub->ServerReflectionInfo(&ctx);
  grpc::reflection::v1alpha::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(stream->Write(req));
  grpc::reflection::v1alpha::ServerReflectionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  std::set<std::string> names;
  for (const auto& s : resp.list_services_response().service()) names.insert(s.name());
  EXPECT_TRUE(names.count("threadscope.v1.ThreadscopeService"));
  EXPECT_TRUE(names.count("grpc.health.v1.Health"));
  // And it can describe our API (the proto file itself).
  req.set_file_containing_symbol("threadscope.v1.ThreadscopeService");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_GT(resp.file_descriptor_response().file_descriptor_proto_size(), 0);
  stream->WritesDone();
  stream->Finish();
}

TEST(DaemonApi, MalformedRequestsLeaveTheDaemonServing) {
  auto stub = v1::ThreadscopeService::NewStub(Channel());
  {
    grpc::ClientContext ctx;
    v1::AttachRequest req;
    req.set_pid(-1);
    v1::AttachResponse resp;
    EXPECT_EQ(stub->Attach(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::AttachRequest req;
    req.set_pid(getpid());
    // Proto3 enums are open: a number no version defines arrives as it was sent.
    req.mutable_options()->set_locks(static_cast<v1::LockTracing>(77));
    v1::AttachResponse resp;
    grpc::Status s = stub->Attach(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("77 is not one of contended, all, off"), std::string::npos)
        << s.error_message();
  }
  {
    grpc::ClientContext ctx;
    v1::GetSnapshotResponse resp;
    EXPECT_EQ(stub->GetSnapshot(&ctx, v1::GetSnapshotRequest(), &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::DetachRequest req;
    req.set_target_id("pid:999999");
    v1::DetachResponse resp;
    EXPECT_EQ(stub->Detach(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::LoadRecordingResponse resp;
    auto w = stub->LoadRecording(&ctx, &resp);
    v1::RecordingChunk junk;
    junk.set_records("\x01\x02\x03");
    w->Write(junk);
    w->WritesDone();
    EXPECT_EQ(w->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  grpc::ClientContext ctx;
  v1::GetStatusResponse status;
  ASSERT_TRUE(stub->GetStatus(&ctx, v1::GetStatusRequest(), &status).ok());
  EXPECT_EQ(status.mode(), "daemon");
}

}  // namespace
}  // namespace threadscope
