#include "daemon/service/threadscope_service.h"

#include <spdlog/spdlog.h>
#include <sys/utsname.h>

#include <chrono>

#include "daemon/common/text.h"
#include "daemon/common/version.h"
#include "daemon/engine/live_session.h"
#include "daemon/service/remote_auth.h"

namespace threadscope::service {

grpc::Status ToGrpcStatus(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

ThreadscopeServiceImpl::ThreadscopeServiceImpl(engine::SessionManager& manager,
                                               const PeerRegistry* peers, ServiceInfo info)
    : manager_(manager), peers_(peers), info_(std::move(info)),
      started_ns_(manager.clock().MonotonicNowNs()) {}

StatusOr<PeerCredentials> ThreadscopeServiceImpl::Caller(grpc::ServerContext* ctx) const {
  if (!peers_) {
    PeerCredentials self;
    self.trusted = true;
    self.client = "in-process";
    return self;
  }
  if (auto creds = peers_->Lookup(ctx->peer())) return *creds;
  if (HasVerifiedToken(*ctx)) {
    // Over TCP (TLS + token): the token holder operates the daemon; there are no peer
    // credentials to narrow it down. Its leases belong to its connection's address.
    PeerCredentials remote;
    remote.trusted = true;
    remote.client = ctx->peer();
    return remote;
  }
  return PermissionDeniedError("cannot identify the caller; connect through the daemon's Unix "
                               "socket");
}

engine::Client ThreadscopeServiceImpl::ClientOf(const PeerCredentials& caller) {
  return engine::Client{caller.client, caller.uid, caller.MayTraceAnything()};
}

bool ThreadscopeServiceImpl::MayView(const PeerCredentials& caller,
                                     const engine::Session& session) const {
  if (caller.MayTraceAnything()) return true;
  // Whoever attached it (or loaded the recording) passed the check then, for this session
  // object: a later session of a reused pid is a different object with its own grants.
  if (session.IsViewer(caller.uid)) return true;
  // Anyone who could attach to the same process now may look at its trace.
  const auto* live = dynamic_cast<const engine::LiveSession*>(&session);
  if (!live || session.finished() || !live->process()->Alive()) return false;
  return CheckMayTrace(caller, live->process()->pid(), manager_.proc()).ok() &&
         live->process()->Alive();
}

StatusOr<std::shared_ptr<engine::Session>> ThreadscopeServiceImpl::Authorized(
    grpc::ServerContext* ctx, const std::string& target_id, PeerCredentials* caller_out) {
  if (target_id.empty()) return InvalidArgumentError("target_id is required");
  TS_ASSIGN_OR_RETURN(PeerCredentials caller, Caller(ctx));
  engine::Client client = ClientOf(caller);
  TS_ASSIGN_OR_RETURN(auto session, manager_.Get(target_id, &client));
  if (!MayView(caller, *session)) {
    // The same answer as for a target that does not exist: no oracle for other users' targets.
    return NotFoundError("no target " + target_id.substr(0, 64) +
                         " that uid " + std::to_string(caller.uid) + " may read");
  }
  if (caller_out) *caller_out = std::move(caller);
  return session;
}

class ThreadscopeServiceImpl::StreamSlot {
 public:
  StreamSlot(ThreadscopeServiceImpl& svc, uid_t uid) : svc_(svc), uid_(uid) {}
  ~StreamSlot() {
    std::lock_guard<std::mutex> lock(svc_.streams_mu_);
    if (--svc_.streams_by_uid_[uid_] == 0) svc_.streams_by_uid_.erase(uid_);
  }

 private:
  ThreadscopeServiceImpl& svc_;
  uid_t uid_;
};

StatusOr<std::unique_ptr<ThreadscopeServiceImpl::StreamSlot>> ThreadscopeServiceImpl::OpenStream(
    const PeerCredentials& caller) {
  std::lock_guard<std::mutex> lock(streams_mu_);
  size_t& open = streams_by_uid_[caller.uid];
  if (!caller.MayTraceAnything() && open >= info_.limits.max_streams_per_uid) {
    if (open == 0) streams_by_uid_.erase(caller.uid);
    return ResourceExhaustedError("uid " + std::to_string(caller.uid) + " has " +
                                  std::to_string(open) + " streams open already (the limit)");
  }
  ++open;
  return std::make_unique<StreamSlot>(*this, caller.uid);
}

grpc::Status ThreadscopeServiceImpl::Attach(grpc::ServerContext* ctx, const v1::AttachRequest* req,
                                            v1::AttachResponse* resp) {
  auto caller = Caller(ctx);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  // The pid is the caller's: a client in another pid namespace names targets in its own.
  auto host_pid = ResolveTargetPid(*caller, req->pid(), manager_.proc());
  if (!host_pid.ok()) return ToGrpcStatus(host_pid.status());
  // Pin the process first, then check: what was checked is what gets attached to.
  auto process = target::ProcessHandle::Open(*host_pid, manager_.proc());
  if (!process.ok()) return ToGrpcStatus(process.status());
  if (Status s = CheckMayTrace(*caller, *host_pid, manager_.proc()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  if (!(*process)->Alive()) {
    return ToGrpcStatus(NotFoundError("process " + std::to_string(req->pid()) + " has exited"));
  }
  auto result = manager_.Attach(*process, req->options(), ClientOf(*caller));
  if (!result.ok()) {
    spdlog::info("attach pid {} by uid {} refused: {}", *host_pid, caller->uid,
                 Printable(result.status().ToString()));
    return ToGrpcStatus(result.status());
  }
  result->session->AddViewer(caller->uid);
  *resp->mutable_target() = result->session->target();
  resp->set_newly_attached(result->newly_attached);
  resp->set_lease_id(result->lease_id);
  resp->set_notice(result->notice);
  return grpc::Status::OK;
}

grpc::Status ThreadscopeServiceImpl::Detach(grpc::ServerContext* ctx, const v1::DetachRequest* req,
                                            v1::DetachResponse* resp) {
  PeerCredentials caller;
  auto session = Authorized(ctx, req->target_id(), &caller);
  if (!session.ok()) return ToGrpcStatus(session.status());
  auto r = manager_.Detach(req->target_id(), ClientOf(caller), req->lease_id(), req->force());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp->mutable_snapshot() = std::move(r->snapshot);
  resp->set_ended(r->ended);
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
  size_t cap = info_.limits.max_filter_entries;
  if (static_cast<size_t>(req->changes_size()) > cap ||
      static_cast<size_t>(req->native_tids_size()) > cap ||
      static_cast<size_t>(req->lock_ids_size()) > cap) {
    return ToGrpcStatus(InvalidArgumentError("at most " + std::to_string(cap) +
                                             " entries per filter (changes, native_tids, "
                                             "lock_ids)"));
  }
  for (int c : req->changes()) {
    if (!v1::ThreadChange_IsValid(c) || c == v1::THREAD_CHANGE_UNSPECIFIED) {
      return ToGrpcStatus(InvalidArgumentError("unknown change kind " + std::to_string(c)));
    }
  }
  PeerCredentials caller;
  auto session = Authorized(ctx, req->target_id(), &caller);
  if (!session.ok()) return ToGrpcStatus(session.status());
  auto slot = OpenStream(caller);
  if (!slot.ok()) return ToGrpcStatus(slot.status());
  engine::Client client = ClientOf(caller);
  auto sub = (*session)->Watch(*req, caller.client);
  while (!ctx->IsCancelled()) {
    v1::WatchEventsResponse r;
    auto res = sub->Next(&r, std::chrono::milliseconds(200));
    (void)manager_.Get(req->target_id(), &client);  // an open stream holds the lease
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
  resp->set_uptime_ns(manager_.clock().MonotonicNowNs() - started_ns_);
  resp->set_mode(info_.mode);
  utsname u;
  if (uname(&u) == 0) resp->set_kernel_release(u.release);
  for (const auto& s : manager_.List()) {
    if (MayView(*caller, *s)) *resp->add_targets() = s->target();
  }
  // Rules and counters for everyone who may use the daemon; which targets they attached only
  // for callers who may see every target.
  if (const autoattach::AutoAttacher* aa = auto_attach_.load()) {
    *resp->mutable_auto_attach() = aa->Status(caller->MayTraceAnything());
  }
  return grpc::Status::OK;
}

grpc::Status ThreadscopeServiceImpl::StreamRecording(grpc::ServerContext* ctx,
                                                     const v1::StreamRecordingRequest* req,
                                                     grpc::ServerWriter<v1::RecordingChunk>* writer) {
  PeerCredentials caller;
  auto session = Authorized(ctx, req->target_id(), &caller);
  if (!session.ok()) return ToGrpcStatus(session.status());
  auto slot = OpenStream(caller);
  if (!slot.ok()) return ToGrpcStatus(slot.status());
  engine::Client client = ClientOf(caller);
  auto sub = (*session)->StreamRecording(caller.client);
  if (!sub.ok()) return ToGrpcStatus(sub.status());
  while (!ctx->IsCancelled()) {
    v1::RecordingChunk chunk;
    auto res = (*sub)->Next(&chunk, std::chrono::milliseconds(200));
    (void)manager_.Get(req->target_id(), &client);
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
  // A replay holds the whole recording in memory: few at a time, each bounded.
  if (loads_in_flight_.fetch_add(1) >= info_.limits.max_concurrent_loads) {
    loads_in_flight_.fetch_sub(1);
    return ToGrpcStatus(UnavailableError(
        "the daemon is loading other recordings; retry, or replay in-process "
        "(threadscope report --no-daemon)"));
  }
  struct Release {
    std::atomic<size_t>& n;
    ~Release() { n.fetch_sub(1); }
  } release{loads_in_flight_};
  uint64_t max = caller->MayTraceAnything() ? info_.limits.max_recording_bytes
                                            : info_.limits.max_recording_bytes_unprivileged;
  std::vector<v1::RecordingChunk> chunks;
  uint64_t bytes = 0;
  v1::RecordingChunk chunk;
  while (reader->Read(&chunk)) {
    bytes += chunk.ByteSizeLong();
    if (bytes > max) {
      return ToGrpcStatus(ResourceExhaustedError(
          "recording is larger than " + std::to_string(max >> 20) +
          " MiB; replay it with the in-process engine (threadscope report --no-daemon)"));
    }
    chunks.push_back(std::move(chunk));
  }
  auto session = manager_.LoadRecording(chunks, ClientOf(*caller));
  if (!session.ok()) return ToGrpcStatus(session.status());
  *resp->mutable_target() = (*session)->target();
  return grpc::Status::OK;
}

}  // namespace threadscope::service
