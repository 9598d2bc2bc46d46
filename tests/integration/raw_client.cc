// A bare gRPC client of threadscoped for the security tests: it sends exactly the requests a
// hostile or careless client could, prints one line with the gRPC status code name, and exits 0
// when the call got any answer (the test decides whether the answer was the right one).
//
//   raw_client SOCKET|fd:N attach PID [--label-name-bytes N] [--ring N] [--lease S] [--hold S]
//                                      (--hold: keep the connection open S seconds, idle)
//   raw_client SOCKET|fd:N snapshot TARGET_ID
//   raw_client SOCKET|fd:N list
//   raw_client SOCKET|fd:N stall TARGET_ID SECONDS    (WatchEvents from the start with GIL
//                                                       events + StreamRecording, read one
//                                                       message each, then never read again)
//   raw_client SOCKET|fd:N hold SECONDS              (an idle connection)
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "threadscope/v1/threadscope.grpc.pb.h"

namespace {

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::INTERNAL: return "INTERNAL";
    default: return "OTHER";
  }
}

int Report(const grpc::Status& s, const std::string& extra = "") {
  std::printf("%s %s%s\n", CodeName(s.error_code()), s.error_message().c_str(), extra.c_str());
  std::fflush(stdout);
  return s.error_code() == grpc::UNAVAILABLE ? 1 : 0;
}

std::shared_ptr<grpc::Channel> Connect(const std::string& where) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  if (where.rfind("fd:", 0) == 0) {
    return grpc::CreateCustomInsecureChannelFromFd("threadscoped", std::atoi(where.c_str() + 3),
                                                   args);
  }
  return grpc::CreateCustomChannel("unix:" + where, grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: raw_client SOCKET|fd:N COMMAND ...\n");
    return 2;
  }
  auto stub = threadscope::v1::ThreadscopeService::NewStub(Connect(argv[1]));
  std::string cmd = argv[2];
  namespace v1 = threadscope::v1;
  if (cmd == "attach" && argc >= 4) {
    v1::AttachRequest req;
    req.set_pid(std::atoi(argv[3]));
    int hold = 0;
    for (int i = 4; i + 1 < argc; i += 2) {
      std::string opt = argv[i];
      long long v = std::atoll(argv[i + 1]);
      if (opt == "--label-name-bytes") {
        (*req.mutable_options()->mutable_labels())[std::string(static_cast<size_t>(v), 'a')] = "x";
      } else if (opt == "--ring") {
        req.mutable_options()->set_ring_buffer_bytes(static_cast<uint32_t>(v));
      } else if (opt == "--lease") {
        req.mutable_options()->set_lease_seconds(static_cast<uint32_t>(v));
      } else if (opt == "--hold") {
        hold = static_cast<int>(v);
      }
    }
    v1::AttachResponse resp;
    auto ctx = Ctx();
    grpc::Status s = stub->Attach(ctx.get(), req, &resp);
    int code = Report(s, s.ok() ? " target_id=" + resp.target().target_id() : "");
    if (hold > 0) std::this_thread::sleep_for(std::chrono::seconds(hold));
    return code;
  }
  if (cmd == "snapshot" && argc >= 4) {
    v1::GetSnapshotRequest req;
    req.set_target_id(argv[3]);
    v1::GetSnapshotResponse resp;
    auto ctx = Ctx();
    grpc::Status s = stub->GetSnapshot(ctx.get(), req, &resp);
    return Report(s, s.ok() ? " records=" + std::to_string(resp.snapshot().target().stats().records())
                            : "");
  }
  if (cmd == "list") {
    v1::ListTargetsResponse resp;
    auto ctx = Ctx();
    grpc::Status s = stub->ListTargets(ctx.get(), v1::ListTargetsRequest(), &resp);
    std::string ids;
    for (const auto& t : resp.targets()) ids += " " + t.target_id();
    return Report(s, " targets=" + std::to_string(resp.targets_size()) + ids);
  }
  if (cmd == "stall" && argc >= 5) {
    int seconds = std::atoi(argv[4]);
    grpc::ClientContext watch_ctx, rec_ctx;
    v1::WatchEventsRequest wreq;
    wreq.set_target_id(argv[3]);
    wreq.set_from_start(true);
    wreq.set_gil_events(true);
    auto watch = stub->WatchEvents(&watch_ctx, wreq);
    v1::WatchEventsResponse w;
    bool got_event = watch->Read(&w);
    v1::StreamRecordingRequest rreq;
    rreq.set_target_id(argv[3]);
    auto rec = stub->StreamRecording(&rec_ctx, rreq);
    v1::RecordingChunk c;
    bool got_chunk = rec->Read(&c);
    std::printf("READING %d %d\n", got_event, got_chunk);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(seconds));  // and never read again
    watch_ctx.TryCancel();
    rec_ctx.TryCancel();
    return 0;
  }
  if (cmd == "hold" && argc >= 4) {
    v1::ListTargetsResponse resp;
    auto ctx = Ctx();
    grpc::Status s = stub->ListTargets(ctx.get(), v1::ListTargetsRequest(), &resp);
    Report(s);
    std::this_thread::sleep_for(std::chrono::seconds(std::atoi(argv[3])));
    return 0;
  }
  std::fprintf(stderr, "raw_client: unknown command %s\n", cmd.c_str());
  return 2;
}
