#include "daemon/service/threadscope_service.h"

#include "daemon/service/remote_auth.h"

#include <spdlog/spdlog.h>
#include <sys/utsname.h>

#include <chrono>

#include "daemon/common/version.h"
#include "daemon/target/procfs.h"

namespace threadscope::service {

grpc::Status ToGrpcStatus(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

ThreadscopeServiceImpl::ThreadscopeServiceImpl(engine::SessionManager& manager,
                                               const PeerRegistry* peers, ServiceInfo info)
    : manager_(manager), peers_(peers), info_(std::move(info)),
      started_ns_(target::MonotonicNowNs()) {}

StatusOr<PeerCredentials> ThreadscopeServiceImpl::Caller(grpc::ServerContext* ctx) const {
  if (!peers_) {
    PeerCredentials self;
    self.trusted = true;
    return self;
  }
  if (auto creds = peers_->Lookup(ctx->peer())) return *creds;
  if (HasVerifiedToken(*ctx)) {
    // Over TCP (TLS + token): the token holder operates the daemon; there are no peer
    // credentials to narrow it down.
    PeerCredentials remote;
    remote.trusted = true;
    return remote;
  }
  return PermissionDeniedError("cannot identify the caller (" + ctx->peer() +
                               "); connect through the daemon's Unix socket");
}

void ThreadscopeServiceImpl::AddViewer(const std::string& target_id, uid_t uid) {
  std::lock_guard<std::mutex> lock(viewers_mu_);
  viewers_[target_id].insert(uid);
}

bool ThreadscopeServiceImpl::IsViewer(const std::string& target_id, uid_t uid) const {
  std::lock_guard<std::mutex> lock(viewers_mu_);
  auto it = viewers_.find(target_id);
  return it != viewers_.end() && it->second.count(uid) > 0;
}

bool ThreadscopeServiceImpl::MayView(const PeerCredentials& caller,
                                     const engine::Session& session) const {
  if (caller.trusted || caller.uid == 0) return true;
  // Whoever attached it (or loaded the recording) passed the check then; the process may have
  // exited since, leaving nothing in /proc to check against. Others are checked as it is now.
  if (IsViewer(session.id(), caller.uid)) return true;
  return session.id().rfind("pid:", 0) == 0 && !session.finished() &&
         CheckMayTrace(caller, session.pid(), manager_.proc()).ok();
}

StatusOr<std::shared_ptr<engine::Session>> ThreadscopeServiceImpl::Authorized(
    grpc::ServerContext* ctx, const std::string& target_id) {
  if (target_id.empty()) return InvalidArgumentError("target_id is required");
  TS_ASSIGN_OR_RETURN(PeerCredentials caller, Caller(ctx));
  TS_ASSIGN_OR_RETURN(auto session, manager_.Get(target_id));
  if (!MayView(caller, *session)) {
    return PermissionDeniedError("uid " + std::to_string(caller.uid) + " may not read target " +
                                 target_id);
  }
  return session;
}

grpc::Status ThreadscopeServiceImpl::Attach(grpc::ServerContext* ctx, const v1::AttachRequest* req,
                                            v1::AttachResponse* resp) {
  auto caller = Caller(ctx);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (req->pid() <= 0) {
    return ToGrpcStatus(InvalidArgumentError("pid must be a positive integer, got " +
                                             std::to_string(req->pid())));
  }
  if (Status s = CheckMayTrace(*caller, req->pid(), manager_.proc()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  auto result = manager_.Attach(req->pid(), req->options());
  if (!result.ok()) {
    spdlog::info("attach pid {} refused: {}", req->pid(), result.status().ToString());
    return ToGrpcStatus(result.status());
  }
  AddViewer(result->session->id(), caller->uid);
  *resp->mutable_target() = result->session->target();
  resp->set_newly_attached(result->newly_attached);
  return grpc::Status::OK;
}

grpc::Status ThreadscopeServiceImpl::Detach(grpc::ServerContext* ctx, const v1::DetachRequest* req,
                                            v1::DetachResponse* resp) {
  auto session = Authorized(ctx, req->target_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  auto snap = manager_.Detach(req->target_id());
  if (!snap.ok()) return ToGrpcStatus(snap.status());
  {
    std::lock_guard<std::mutex> lock(viewers_mu_);
    viewers_.erase(req->target_id());
  }
  *resp->mutable_snapshot() = std::move(*snap);
  return grpc::Status::OK;
}

grpc::Status ThreadscopeServiceImpl::ListTargets(grpc::ServerContext* ctx,
                                                 const v1::ListTargetsRequest*,
                                                 v1::ListTargetsResponse* resp) {
  auto caller = Caller(ctx);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  for (const auto& s : manager_.List()) {
    if (MayView(*caller, *s)) *resp->add_targets() = s->target();
  }
  return grpc::Status::OK;
}

grpc::Status ThreadscopeServiceImpl::GetSnapshot(grpc::ServerContext* ctx,
                                                 const v1::GetSnapshotRequest* req,
                                                 v1::GetSnapshotResponse* resp) {
  auto session = Authorized(ctx, req->target_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  *resp->mutable_snapshot() = (*session)->snapshot();
  return grpc::Status::OK;
}

grpc::Status ThreadscopeServiceImpl::WatchEvents(
    grpc::ServerContext* ctx, const v1::WatchEventsRequest* req,
    grpc::ServerWriter<v1::WatchEventsResponse>* writer) {
  for (int c : req->changes()) {
    if (!v1::ThreadChange_IsValid(c) || c == v1::THREAD_CHANGE_UNSPECIFIED) {
      return ToGrpcStatus(InvalidArgumentError("unknown change kind " + std::to_string(c)));
    }
  }
  auto session = Authorized(ctx, req->target_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  auto sub = (*session)->Watch(*req);
  while (!ctx->IsCancelled()) {
    v1::WatchEventsResponse r;
    auto res = sub->Next(&r, std::chrono::milliseconds(200));
    (*session)->Touch();  // an open stream holds the lease
    if (res == engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kClosed) break;
    if (res != engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kItem) continue;
    if (!writer->Write(r)) break;
    if (r.has_target_finished()) break;
  }
  (*session)->Unwatch(sub);
  return grpc::Status::OK;
}

grpc::Status ThreadscopeServiceImpl::GetStatus(grpc::ServerContext* ctx,
                                               const v1::GetStatusRequest*,
                                               v1::GetStatusResponse* resp) {
  auto caller = Caller(ctx);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  resp->set_version(kThreadscopeVersion);
  resp->set_uptime_ns(target::MonotonicNowNs() - started_ns_);
  resp->set_mode(info_.mode);
  utsname u;
  if (uname(&u) == 0) resp->set_kernel_release(u.release);
  for (const auto& s : manager_.List()) {
    if (MayView(*caller, *s)) *resp->add_targets() = s->target();
  }
  return grpc::Status::OK;
}

grpc::Status ThreadscopeServiceImpl::StreamRecording(grpc::ServerContext* ctx,
                                                     const v1::StreamRecordingRequest* req,
                                                     grpc::ServerWriter<v1::RecordingChunk>* writer) {
  auto session = Authorized(ctx, req->target_id());
  if (!session.ok()) return ToGrpcStatus(session.status());
  auto sub = (*session)->StreamRecording();
  if (!sub.ok()) return ToGrpcStatus(sub.status());
  while (!ctx->IsCancelled()) {
    v1::RecordingChunk chunk;
    auto res = (*sub)->queue().Pop(&chunk, std::chrono::milliseconds(200));
    (*session)->Touch();
    if (res == engine::BoundedQueue<v1::RecordingChunk>::PopResult::kClosed) break;
    if (res != engine::BoundedQueue<v1::RecordingChunk>::PopResult::kItem) continue;
    if (!writer->Write(chunk)) break;
    if (chunk.has_trailer()) break;
  }
  (*session)->Unstream(*sub);
  return grpc::Status::OK;
}

grpc::Status ThreadscopeServiceImpl::LoadRecording(grpc::ServerContext* ctx,
                                                   grpc::ServerReader<v1::RecordingChunk>* reader,
                                                   v1::LoadRecordingResponse* resp) {
  auto caller = Caller(ctx);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  std::vector<v1::RecordingChunk> chunks;
  uint64_t bytes = 0;
  v1::RecordingChunk chunk;
  while (reader->Read(&chunk)) {
    bytes += chunk.ByteSizeLong();
    if (bytes > info_.max_recording_bytes) {
      return ToGrpcStatus(ResourceExhaustedError(
          "recording is larger than " + std::to_string(info_.max_recording_bytes >> 20) +
          " MiB; replay it with the in-process engine (threadscope report --no-daemon)"));
    }
    chunks.push_back(std::move(chunk));
  }
  auto session = manager_.LoadRecording(chunks);
  if (!session.ok()) return ToGrpcStatus(session.status());
  AddViewer((*session)->id(), caller->uid);
  *resp->mutable_target() = (*session)->target();
  return grpc::Status::OK;
}

}  // namespace threadscope::service
