// ThreadscopeService: a thin adapter from gRPC to the SessionManager. It validates requests,
// authorizes the caller against the target, converts Status to grpc::Status, and streams.
// No tracing logic lives here.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/autoattach/auto_attacher.h"
#include "daemon/engine/session_manager.h"
#include "daemon/service/peer_auth.h"
#include "threadscope/v1/threadscope.grpc.pb.h"

namespace threadscope::service {

grpc::Status ToGrpcStatus(const Status& status);

struct ServiceLimits {
  uint64_t max_recording_bytes = 1ull << 30;              // one LoadRecording, operators
  uint64_t max_recording_bytes_unprivileged = 64ull << 20;
  size_t max_concurrent_loads = 2;                        // daemon-wide
  size_t max_streams_per_uid = 16;                        // open WatchEvents/StreamRecording
  size_t max_filter_entries = 256;                        // native_tids, lock_ids, changes
};

struct ServiceInfo {
  std::string mode = "daemon";  // or "in-process"
  ServiceLimits limits;
};

class ThreadscopeServiceImpl final : public v1::ThreadscopeService::Service {
 public:
  // `peers` null = every caller is this process (in-process engine).
  ThreadscopeServiceImpl(engine::SessionManager& manager, const PeerRegistry* peers,
                         ServiceInfo info);

  // The daemon's auto-attacher, for GetStatus (null: none). Set before it starts attaching and
  // cleared before it goes.
  void SetAutoAttach(const autoattach::AutoAttacher* auto_attach) { auto_attach_ = auto_attach; }

  grpc::Status Attach(grpc::ServerContext* ctx, const v1::AttachRequest* req,
                      v1::AttachResponse* resp) override;
  grpc::Status Detach(grpc::ServerContext* ctx, const v1::DetachRequest* req,
                      v1::DetachResponse* resp) override;
  grpc::Status ListTargets(grpc::ServerContext* ctx, const v1::ListTargetsRequest* req,
                           v1::ListTargetsResponse* resp) override;
  grpc::Status GetSnapshot(grpc::ServerContext* ctx, const v1::GetSnapshotRequest* req,
                           v1::GetSnapshotResponse* resp) override;
  grpc::Status WatchEvents(grpc::ServerContext* ctx, const v1::WatchEventsRequest* req,
                           grpc::ServerWriter<v1::WatchEventsResponse>* writer) override;
  grpc::Status GetStatus(grpc::ServerContext* ctx, const v1::GetStatusRequest* req,
                         v1::GetStatusResponse* resp) override;
  grpc::Status StreamRecording(grpc::ServerContext* ctx, const v1::StreamRecordingRequest* req,
                               grpc::ServerWriter<v1::RecordingChunk>* writer) override;
  grpc::Status LoadRecording(grpc::ServerContext* ctx,
                             grpc::ServerReader<v1::RecordingChunk>* reader,
                             v1::LoadRecordingResponse* resp) override;
  // dump_handler.cc: one call into daemon/dump, authorized as Attach.
  grpc::Status Dump(grpc::ServerContext* ctx, const v1::DumpRequest* req,
                    v1::DumpResponse* resp) override;

 private:
  StatusOr<PeerCredentials> Caller(grpc::ServerContext* ctx) const;
  static engine::Client ClientOf(const PeerCredentials& caller);
  // The session, if the caller may see it; using it renews the caller's leases on it.
  StatusOr<std::shared_ptr<engine::Session>> Authorized(grpc::ServerContext* ctx,
                                                        const std::string& target_id,
                                                        PeerCredentials* caller_out = nullptr);
  bool MayView(const PeerCredentials& caller, const engine::Session& session) const;

  // Counts a caller's open streams; refuses past the limit.
  class StreamSlot;
  StatusOr<std::unique_ptr<StreamSlot>> OpenStream(const PeerCredentials& caller);

  engine::SessionManager& manager_;
  const PeerRegistry* peers_;
  ServiceInfo info_;
  uint64_t started_ns_;
  std::mutex streams_mu_;
  std::map<uid_t, size_t> streams_by_uid_;
  std::atomic<size_t> loads_in_flight_{0};
  std::atomic<const autoattach::AutoAttacher*> auto_attach_{nullptr};
};

}  // namespace threadscope::service
