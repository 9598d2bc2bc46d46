// ThreadscopeService.Dump: authorizes the caller as for Attach (it may ptrace the target),
// lends the dump the owners this engine already knows exactly (a session of the same process
// traced with locks = "all"), and calls daemon/dump. Kept apart from the other handlers.
#include <spdlog/spdlog.h>

#include "daemon/dump/dump.h"
#include "daemon/dump/to_proto.h"
#include "daemon/engine/live_session.h"
#include "daemon/target/process_handle.h"
#include "daemon/service/threadscope_service.h"

namespace threadscope::service {

namespace {

grpc::Status DumpFailure(const Status& status) {
  v1::DumpError error;
  error.set_kind(dump::ErrorKindOf(status));
  error.set_message(status.message());
  // The library's codes name causes (daemon/dump/dump.h); on the wire, gRPC's meaning.
  grpc::StatusCode code = static_cast<grpc::StatusCode>(status.code());
  if (status.code() == StatusCode::kUnavailable) code = grpc::StatusCode::NOT_FOUND;
  if (status.code() == StatusCode::kOutOfRange) code = grpc::StatusCode::FAILED_PRECONDITION;
  return grpc::Status(code, status.message(), error.SerializeAsString());
}

}  // namespace

grpc::Status ThreadscopeServiceImpl::Dump(grpc::ServerContext* ctx, const v1::DumpRequest* req,
                                          v1::DumpResponse* resp) {
  auto caller = Caller(ctx);
  if (!caller.ok()) return DumpFailure(caller.status());
  const bool core = !req->core_path().empty();
  if (core == (req->pid() > 0)) {
    return DumpFailure(InvalidArgumentError("give a positive pid or a core file, not both"));
  }
  dump::DumpOptions options;
  options.native = req->native();
  options.locals = req->locals();
  options.nonblocking = req->nonblocking();
  StatusOr<dump::DumpReport> report = InternalError("not run");
  if (core) {
    // The in-process engine only: there the CLI reads the file with its own rights. A daemon
    // would read it with root's, for anyone (a TCP operator included).
    if (caller->client != "in-process") {
      return DumpFailure(PermissionDeniedError(
          "a daemon does not read core files for clients (it would read them with its own "
          "rights): threadscope dump --core runs in-process"));
    }
    report = dump::DumpCoreFile(req->core_path(), req->executable_path(), options);
  } else {
    // As for Attach: the pid is the caller's, the process is pinned before the check, and what
    // was checked is what gets read (it must still be alive afterwards).
    auto host_pid = ResolveTargetPid(*caller, req->pid(), manager_.proc());
    if (!host_pid.ok()) return DumpFailure(host_pid.status());
    auto process = target::ProcessHandle::Open(*host_pid, manager_.proc());
    if (!process.ok()) return DumpFailure(process.status());
    if (Status s = CheckMayTrace(*caller, *host_pid, manager_.proc()); !s.ok()) {
      return DumpFailure(s);
    }
    if (!(*process)->Alive()) {
      return DumpFailure(NotFoundError("process " + std::to_string(req->pid()) + " has exited"));
    }
    for (const auto& session : manager_.List()) {
      // Exact owners from a trace of the same process, if the caller may see that trace.
      if (session->pid() != *host_pid || session->finished() ||
          session->target().lock_mode() != "all" || !MayView(*caller, *session)) {
        continue;
      }
      const auto* live = dynamic_cast<const engine::LiveSession*>(session.get());
      if (!live || live->process()->start_ticks() != (*process)->start_ticks()) continue;
      // Kept in a local: a range-for over snapshot().locks() would read a destroyed temporary.
      const v1::Snapshot snapshot = session->snapshot();
      for (const auto& lock : snapshot.locks()) {
        if (lock.address() && lock.owner_exact() && lock.has_owner_native_tid()) {
          options.trace_owners[lock.address()] = lock.owner_native_tid();
        }
      }
    }
    report = dump::DumpProcess(*host_pid, options);
    if (report.ok() && !(*process)->Alive()) {
      report = AbortedError("process " + std::to_string(req->pid()) + " exited while dumping");
    }
  }
  if (!report.ok()) {
    spdlog::info("dump {} refused: {}", core ? req->core_path() : std::to_string(req->pid()),
                 report.status().ToString());
    return DumpFailure(report.status());
  }
  *resp->mutable_dump() = dump::ToProto(*report);
  return grpc::Status::OK;
}

}  // namespace threadscope::service
