#include "client/commands.h"

#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>
#include <variant>

#include "client/exit_codes.h"
#include "client/launcher.h"
#include "client/profile.h"
#include "client/timeline.h"
#include "daemon/common/text.h"
#include "daemon/engine/recording.h"

namespace threadscope::client {

SignalWatch::SignalWatch() {
  sigemptyset(&set_);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&set_, sig);
  pthread_sigmask(SIG_BLOCK, &set_, &old_);
  fd_ = signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK);
}

SignalWatch::~SignalWatch() {
  if (fd_ >= 0) close(fd_);
  pthread_sigmask(SIG_SETMASK, &old_, nullptr);
}

int SignalWatch::Wait(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return 0;
  signalfd_siginfo info{};
  if (read(fd_, &info, sizeof(info)) != sizeof(info)) return 0;
  return static_cast<int>(info.ssi_signo);
}

namespace {

// Messages can quote the target (paths, names): never let them reach the terminal raw.
void Error(const std::string& message) {
  std::fprintf(stderr, "threadscope: %s\n", Printable(message).c_str());
}

int Fail(const grpc::Status& s, const std::string& what) {
  Error(what + ": " + s.error_message());
  return ExitCodeFor(s);
}

std::unique_ptr<grpc::ClientContext> Unary(double seconds = 30) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return ctx;
}

int TerminalRows() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 8) return ws.ws_row;
  return 40;
}

Status WriteTextFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return ErrnoToStatus(errno, "cannot write " + path);
  out << content;
  out.close();
  if (!out) return ErrnoToStatus(errno, "cannot write " + path);
  return OkStatus();
}

// Streams one target's recording into a file, on its own thread.
class Recorder {
 public:
  Recorder(v1::ThreadscopeService::Stub& stub, std::string target_id, std::string path)
      : path_(std::move(path)) {
    thread_ = std::thread([this, &stub, target_id] { Run(stub, target_id); });
  }
  ~Recorder() { Stop(); }
  Status Finish() {
    if (thread_.joinable()) thread_.join();
    return status_;
  }
  void Stop() {
    ctx_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run(v1::ThreadscopeService::Stub& stub, const std::string& target_id) {
    auto writer = engine::RecordingWriter::Create(path_);
    if (!writer.ok()) {
      status_ = writer.status();
      return;
    }
    v1::StreamRecordingRequest req;
    req.set_target_id(target_id);
    auto reader = stub.StreamRecording(&ctx_, req);
    v1::RecordingChunk chunk;
    bool saw_trailer = false;
    while (reader->Read(&chunk)) {
      if (Status s = (*writer)->Write(chunk); !s.ok()) {
        status_ = s;
        ctx_.TryCancel();
        break;
      }
      saw_trailer |= chunk.has_trailer();
    }
    grpc::Status rs = reader->Finish();
    if (status_.ok() && !rs.ok() && rs.error_code() != grpc::StatusCode::CANCELLED) {
      status_ = Status(static_cast<StatusCode>(rs.error_code()), rs.error_message());
    }
    Status closed = (*writer)->Close();
    if (status_.ok()) status_ = closed;
    if (status_.ok() && !saw_trailer) {
      status_ = DataLossError("the recording stream ended without a trailer");
    }
  }

  std::string path_;
  grpc::ClientContext ctx_;
  std::thread thread_;
  Status status_;
};

// Prints model events (JSON Lines or text lines), on its own thread.
class EventPrinter {
 public:
  EventPrinter(v1::ThreadscopeService::Stub& stub, std::string target_id, bool json,
               std::FILE* out, uint64_t base_ns, bool gil_events)
      : json_(json), out_(out), base_ns_(base_ns), gil_events_(gil_events) {
    thread_ = std::thread([this, &stub, target_id] { Run(stub, target_id); });
  }
  ~EventPrinter() { Stop(); }
  void Finish() {
    if (thread_.joinable()) thread_.join();
  }
  void Stop() {
    ctx_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run(v1::ThreadscopeService::Stub& stub, const std::string& target_id) {
    v1::WatchEventsRequest req;
    req.set_target_id(target_id);
    req.set_from_start(true);
    req.set_gil_events(gil_events_);
    auto reader = stub.WatchEvents(&ctx_, req);
    v1::WatchEventsResponse r;
    while (reader->Read(&r)) {
      std::string line = json_ ? EventJson(r).dump() : EventLine(r, base_ns_);
      std::fprintf(out_, "%s\n", line.c_str());
      std::fflush(out_);
      if (r.has_target_finished()) break;
    }
    reader->Finish();
  }

  bool json_;
  std::FILE* out_;
  uint64_t base_ns_;
  bool gil_events_;
  grpc::ClientContext ctx_;
  std::thread thread_;
};

// Every event of a target from its start, GIL and hold events included, until it finishes (or
// the context is cancelled), handed to `sink` as it arrives: what timelines and profiles are
// built from.
template <typename Sink>
size_t StreamEvents(v1::ThreadscopeService::Stub& stub, const std::string& target_id,
                    grpc::ClientContext* ctx, Sink&& sink) {
  v1::WatchEventsRequest req;
  req.set_target_id(target_id);
  req.set_from_start(true);
  req.set_gil_events(true);
  req.set_hold_events(true);
  auto reader = stub.WatchEvents(ctx, req);
  size_t n = 0;
  v1::WatchEventsResponse r;
  while (reader->Read(&r)) {
    bool done = r.has_target_finished();
    sink(r);
    ++n;
    if (done) break;
  }
  reader->Finish();
  return n;
}

Status WriteTimeline(const std::string& path, const std::string& format,
                     const v1::Snapshot& final, const std::vector<v1::WatchEventsResponse>& events) {
  timeline::Timeline t = timeline::Build(final, events);
  std::string body = format == "chrome" ? timeline::ToChrome(t).dump() + "\n"
                                        : timeline::ToPerfetto(t);
  return WriteTextFile(path, body);
}

// format: "pprof" (gzipped profile.proto) or "collapsed" (folded stacks, nanoseconds).
Status WriteProfile(const std::string& path, const std::string& format,
                    const profile::Profile& p) {
  if (format == "collapsed") return WriteTextFile(path, profile::ToCollapsed(p));
  std::string gz = profile::Gzip(profile::ToPprof(p));
  if (gz.empty()) return InternalError("gzip failed for " + path);
  return WriteTextFile(path, gz);
}

// Follows a live target's events on its own thread, for --perfetto-out, --pprof-out and
// --collapsed-out: keeps them for a timeline, aggregates them for a profile.
class EventCollector {
 public:
  EventCollector(v1::ThreadscopeService::Stub& stub, std::string target_id, bool keep,
                 bool profile)
      : keep_(keep), profile_(profile) {
    thread_ = std::thread([this, &stub, target_id] {
      StreamEvents(stub, target_id, &ctx_, [this](const v1::WatchEventsResponse& r) {
        if (profile_) builder_.Apply(r);
        if (keep_) events_.push_back(r);
      });
    });
  }
  ~EventCollector() {
    ctx_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }
  // After the target finished or was detached: the stream ends with it.
  void Finish() {
    if (thread_.joinable()) thread_.join();
  }
  const std::vector<v1::WatchEventsResponse>& events() const { return events_; }
  profile::Builder& builder() { return builder_; }

 private:
  bool keep_, profile_;
  grpc::ClientContext ctx_;
  std::thread thread_;
  std::vector<v1::WatchEventsResponse> events_;
  profile::Builder builder_;
};

// What attach and run share: everything after the probes are in.
class TraceRun {
 public:
  TraceRun(Connection& conn, const v1::AttachResponse& attached, const TraceOptions& options,
           bool run_mode)
      : conn_(conn),
        target_(attached.target()),
        lease_id_(attached.lease_id()),
        options_(options),
        run_mode_(run_mode) {}

  Status Start() {
    if (!options_.record_file.empty()) {
      recorder_ = std::make_unique<Recorder>(conn_.stub(), target_.target_id(),
                                             options_.record_file);
    }
    bool profile = !options_.pprof_file.empty() || !options_.collapsed_file.empty();
    if (!options_.timeline_file.empty() || profile) {
      collector_ = std::make_unique<EventCollector>(conn_.stub(), target_.target_id(),
                                                    !options_.timeline_file.empty(), profile);
    }
    bool jsonl = options_.output == OutputFormat::kJsonl;
    if (!options_.events_file.empty()) {
      events_out_ = std::fopen(options_.events_file.c_str(), "w");
      if (!events_out_) return ErrnoToStatus(errno, "cannot write " + options_.events_file);
      events_ = std::make_unique<EventPrinter>(conn_.stub(), target_.target_id(), true,
                                               events_out_, target_.attached_ns(),
                                               options_.gil_events);
    } else if (jsonl || (options_.output == OutputFormat::kText && !ShowLiveView() && !run_mode_)) {
      events_ = std::make_unique<EventPrinter>(conn_.stub(), target_.target_id(), jsonl, stdout,
                                               target_.attached_ns(), options_.gil_events);
    }
    return OkStatus();
  }

  bool ShowLiveView() const {
    return options_.live_view && options_.output == OutputFormat::kText &&
           isatty(STDOUT_FILENO);
  }

  // One refresh. Returns false when the target is gone (its snapshot is final).
  StatusOr<bool> Refresh() {
    v1::GetSnapshotRequest req;
    req.set_target_id(target_.target_id());
    v1::GetSnapshotResponse resp;
    auto ctx = Unary(10);
    grpc::Status s = conn_.stub().GetSnapshot(ctx.get(), req, &resp);
    if (!s.ok()) return Status(static_cast<StatusCode>(s.error_code()), s.error_message());
    if (ShowLiveView()) {
      std::string view = client::LiveView(resp.snapshot(), TerminalRows() - 6, options_.style);
      std::fprintf(stdout, "\x1b[H\x1b[2J%s", view.c_str());
      std::fflush(stdout);
    }
    return !resp.snapshot().final();
  }

  // Detaches (ends this client's lease: a trace other clients share goes on for them),
  // collects the snapshot, finishes the side streams and writes the outputs.
  int Finish() {
    v1::DetachRequest req;
    req.set_target_id(target_.target_id());
    req.set_lease_id(lease_id_);
    v1::DetachResponse resp;
    auto ctx = Unary(30);
    grpc::Status s = conn_.stub().Detach(ctx.get(), req, &resp);
    if (!s.ok()) {
      if (recorder_) recorder_->Stop();
      if (events_) events_->Stop();
      collector_.reset();
      return Fail(s, "detach");
    }
    int code = kExitOk;
    if (events_) events_->Finish();
    if (events_out_) std::fclose(events_out_);
    if (recorder_) {
      Status rs = recorder_->Finish();
      if (!rs.ok()) {
        Error("recording " + options_.record_file + ": " + rs.message());
        code = kExitInternal;
      }
    }
    const v1::Snapshot& snap = resp.snapshot();
    if (collector_) {
      collector_->Finish();
      if (!options_.timeline_file.empty()) {
        Status ts = WriteTimeline(options_.timeline_file, options_.timeline_format, snap,
                                  collector_->events());
        if (!ts.ok()) {
          Error("timeline " + options_.timeline_file + ": " + ts.message());
          code = kExitInternal;
        }
      }
      if (!options_.pprof_file.empty() || !options_.collapsed_file.empty()) {
        profile::Profile p = collector_->builder().Finish(snap);
        for (const auto& [path, format] : {std::pair{options_.pprof_file, "pprof"},
                                           std::pair{options_.collapsed_file, "collapsed"}}) {
          if (path.empty()) continue;
          if (Status ps = WriteProfile(path, format, p); !ps.ok()) {
            Error("profile " + path + ": " + ps.message());
            code = kExitInternal;
          }
        }
      }
    }
    nlohmann::json report = ReportJson(snap);
    if (!options_.report_file.empty()) {
      if (Status ws = WriteTextFile(options_.report_file, report.dump(2) + "\n"); !ws.ok()) {
        Error(ws.message());
        code = kExitInternal;
      }
    }
    if (options_.output == OutputFormat::kJson) {
      std::fprintf(stdout, "%s\n", report.dump(2).c_str());
    } else if (options_.output == OutputFormat::kText) {
      std::string summary = SummaryText(snap, options_.style);
      std::fprintf(run_mode_ ? stderr : stdout, "%s", summary.c_str());
    }
    std::fflush(stdout);
    return code;
  }

 private:
  Connection& conn_;
  v1::Target target_;
  std::string lease_id_;
  TraceOptions options_;
  bool run_mode_;
  std::unique_ptr<Recorder> recorder_;
  std::unique_ptr<EventPrinter> events_;
  std::unique_ptr<EventCollector> collector_;
  std::FILE* events_out_ = nullptr;
};

StatusOr<v1::AttachResponse> DoAttach(Connection& conn, pid_t pid,
                                      const TraceOptions& options) {
  v1::AttachRequest req;
  req.set_pid(pid);
  *req.mutable_options() = options.attach;
  v1::AttachResponse resp;
  auto ctx = Unary(60);
  grpc::Status s = conn.stub().Attach(ctx.get(), req, &resp);
  if (!s.ok()) return Status(static_cast<StatusCode>(s.error_code()), s.error_message());
  if (!resp.notice().empty()) Error("note: " + resp.notice());
  return resp;
}

int ExitFor(const Status& s) {
  return ExitCodeFor(grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message()));
}

}  // namespace

int AttachCommand(Connection& conn, SignalWatch& signals, pid_t pid,
                  const TraceOptions& options) {
  auto attached = DoAttach(conn, pid, options);
  if (!attached.ok()) {
    Error("cannot attach to pid " + std::to_string(pid) + ": " + attached.status().message());
    return ExitFor(attached.status());
  }
  std::fprintf(stderr, "%s\n", AttachBanner(attached->target(), conn.description()).c_str());
  TraceRun run(conn, *attached, options, /*run_mode=*/false);
  if (Status s = run.Start(); !s.ok()) {
    Error(s.message());
    run.Finish();
    return kExitInternal;
  }
  auto start = std::chrono::steady_clock::now();
  while (true) {
    auto refreshed = run.Refresh();
    if (!refreshed.ok()) {
      Error("lost the target: " + refreshed.status().message());
      return ExitFor(refreshed.status());
    }
    if (!*refreshed) break;  // the target exited
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (options.duration_s > 0 && elapsed >= options.duration_s) break;
    double wait = options.interval_s;
    if (options.duration_s > 0) wait = std::min(wait, options.duration_s - elapsed);
    int sig = signals.Wait(static_cast<int>(wait * 1000));
    if (sig != 0 && sig != SIGCHLD) break;
  }
  return run.Finish();
}

int RunCommand(Connection& conn, SignalWatch& signals, const std::vector<std::string>& argv,
               const TraceOptions& options) {
  auto launched = LaunchedProcess::Start(argv);
  if (!launched.ok()) {
    Error(launched.status().message());
    return launched.status().code() == StatusCode::kNotFound ? kExitCommandNotFound
                                                             : kExitNotPython;
  }
  LaunchedProcess child = std::move(*launched);
  auto attached = DoAttach(conn, child.pid(), options);
  if (!attached.ok()) {
    Error("cannot trace " + argv[0] + " (pid " + std::to_string(child.pid()) +
          "): " + attached.status().message());
    child.Kill();
    return ExitFor(attached.status());
  }
  std::fprintf(stderr, "%s\n", AttachBanner(attached->target(), conn.description()).c_str());
  TraceRun run(conn, *attached, options, /*run_mode=*/true);
  Status started = run.Start();
  if (Status s = child.Resume(); !s.ok() || !started.ok()) {
    Error(!started.ok() ? started.message() : s.message());
    child.Kill();
    run.Finish();
    return kExitInternal;
  }
  auto start = std::chrono::steady_clock::now();
  int status = -1;
  bool detached_early = false;
  while ((status = child.Poll()) < 0) {
    int sig = signals.Wait(static_cast<int>(options.interval_s * 1000));
    // SIGINT reaches the command from the terminal itself; others are passed on.
    if (sig == SIGTERM || sig == SIGHUP) kill(child.pid(), sig);
    auto refreshed = run.Refresh();
    if (!refreshed.ok()) {
      Error("lost the target: " + refreshed.status().message());
      break;
    }
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (options.duration_s > 0 && elapsed >= options.duration_s) {
      detached_early = true;  // stop tracing; the command keeps running to completion
      break;
    }
  }
  if (!detached_early && status >= 0) {
    // The exit records are already in the ring; give the engine a moment to see the exit
    // itself so the trace ends as "exited" rather than "detached".
    for (int i = 0; i < 40; ++i) {
      auto refreshed = run.Refresh();
      if (!refreshed.ok() || !*refreshed) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  int code = run.Finish();
  if (status < 0) status = child.Wait();
  return code != kExitOk ? code : status;
}

namespace {

// Loads a recording file into the engine; the target id, or the exit code for the failure.
std::variant<std::string, int> LoadRecording(Connection& conn, const std::string& file) {
  auto chunks = engine::ReadRecordingFile(file);
  if (!chunks.ok()) {
    Error(chunks.status().message());
    return kExitBadRecording;
  }
  grpc::ClientContext ctx;
  v1::LoadRecordingResponse loaded;
  auto writer = conn.stub().LoadRecording(&ctx, &loaded);
  for (const auto& chunk : *chunks) {
    if (!writer->Write(chunk)) break;
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) {
    Error("cannot load " + file + ": " + s.error_message());
    return s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
                   s.error_code() == grpc::StatusCode::DATA_LOSS ||
                   s.error_code() == grpc::StatusCode::FAILED_PRECONDITION
               ? kExitBadRecording
               : ExitCodeFor(s);
  }
  return loaded.target().target_id();
}

}  // namespace

int ExportCommand(Connection& conn, const std::string& file, const std::string& out,
                  const std::string& format) {
  auto loaded = LoadRecording(conn, file);
  if (auto* code = std::get_if<int>(&loaded)) return *code;
  const std::string& id = std::get<std::string>(loaded);
  bool profile = format == "pprof" || format == "collapsed";
  // Profiles aggregate as the events arrive; timelines need them all.
  std::vector<v1::WatchEventsResponse> events;
  profile::Builder builder;
  grpc::ClientContext ctx;
  size_t n = StreamEvents(conn.stub(), id, &ctx, [&](const v1::WatchEventsResponse& r) {
    if (profile) {
      builder.Apply(r);
    } else {
      events.push_back(r);
    }
  });
  v1::GetSnapshotRequest req;
  req.set_target_id(id);
  v1::GetSnapshotResponse resp;
  auto ctx2 = Unary();
  grpc::Status s = conn.stub().GetSnapshot(ctx2.get(), req, &resp);
  if (!s.ok()) return Fail(s, "snapshot");
  if (profile) {
    profile::Profile p = builder.Finish(resp.snapshot());
    if (Status ws = WriteProfile(out, format, p); !ws.ok()) {
      Error(ws.message());
      return kExitInternal;
    }
    std::fprintf(stderr,
                 "threadscope: wrote %s profile %s (%zu stacks from %zu events; lock waits %.3f s, "
                 "GIL waits %.3f s%s)\n",
                 format.c_str(), out.c_str(), p.samples.size(), n,
                 static_cast<double>(p.Total("delay")) / 1e9,
                 static_cast<double>(p.Total("gil-delay")) / 1e9,
                 format == "collapsed" ? "; values are nanoseconds waited" : "");
    return kExitOk;
  }
  if (Status ws = WriteTimeline(out, format, resp.snapshot(), events); !ws.ok()) {
    Error(ws.message());
    return kExitInternal;
  }
  std::fprintf(stderr, "threadscope: wrote %s timeline %s (%zu events)\n", format.c_str(),
               out.c_str(), n);
  return kExitOk;
}

int ReportCommand(Connection& conn, const std::string& file, OutputFormat output,
                  const std::string& report_file, const TextStyle& style) {
  auto loaded = LoadRecording(conn, file);
  if (auto* code = std::get_if<int>(&loaded)) return *code;
  v1::GetSnapshotRequest req;
  req.set_target_id(std::get<std::string>(loaded));
  v1::GetSnapshotResponse resp;
  auto ctx2 = Unary();
  grpc::Status s = conn.stub().GetSnapshot(ctx2.get(), req, &resp);
  if (!s.ok()) return Fail(s, "snapshot");
  nlohmann::json report = ReportJson(resp.snapshot());
  if (!report_file.empty()) {
    if (Status ws = WriteTextFile(report_file, report.dump(2) + "\n"); !ws.ok()) {
      Error(ws.message());
      return kExitInternal;
    }
  }
  if (output == OutputFormat::kText) {
    std::fprintf(stdout, "%s", LiveView(resp.snapshot(), 1 << 20, style).c_str());
    std::fprintf(stdout, "%s", SummaryText(resp.snapshot(), style).c_str());
  } else {
    std::fprintf(stdout, "%s\n", report.dump(2).c_str());
  }
  return kExitOk;
}

namespace {

nlohmann::json AutoAttachJson(const v1::AutoAttachStatus& a) {
  nlohmann::json rules = nlohmann::json::array();
  for (const auto& r : a.rules()) {
    rules.push_back(
        {{"name", r.name()},
         {"match", r.match()},
         {"matches", r.matches()},
         {"attaches", r.attaches()},
         {"refusals", r.refusals()},
         {"failures", r.failures()},
         {"refusals_by_reason", std::map<std::string, uint64_t>(r.refusals_by_reason().begin(),
                                                                r.refusals_by_reason().end())},
         {"failures_by_reason", std::map<std::string, uint64_t>(r.failures_by_reason().begin(),
                                                                r.failures_by_reason().end())},
         {"target_ids", std::vector<std::string>(r.target_ids().begin(), r.target_ids().end())}});
  }
  return {{"exec_source", a.exec_source()}, {"targets", a.targets()},
          {"max_targets", a.max_targets()}, {"execs_seen", a.execs_seen()},
          {"execs_lost", a.execs_lost()},   {"processes_scanned", a.processes_scanned()},
          {"rules", rules}};
}

std::string AutoAttachText(const v1::AutoAttachStatus& a) {
  std::string out = "auto-attach: " + std::to_string(a.targets()) + "/" +
                    std::to_string(a.max_targets()) + " targets, execs from " +
                    Printable(a.exec_source()) + " (" + std::to_string(a.execs_seen()) +
                    " seen, " + std::to_string(a.execs_lost()) + " lost)\n";
  for (const auto& r : a.rules()) {
    out += "  rule " + Printable(r.name()) + " (" + Printable(r.match()) + "): " +
           std::to_string(r.matches()) + " matched, " + std::to_string(r.attaches()) +
           " attached, " + std::to_string(r.refusals()) + " refused, " +
           std::to_string(r.failures()) + " failed";
    std::string why;
    for (const auto& [k, v] : r.refusals_by_reason()) {
      why += (why.empty() ? "" : ", ") + Printable(k) + " " + std::to_string(v);
    }
    for (const auto& [k, v] : r.failures_by_reason()) {
      why += (why.empty() ? "" : ", ") + Printable(k) + " " + std::to_string(v);
    }
    if (!why.empty()) out += " (" + why + ")";
    out += "\n";
  }
  return out;
}

}  // namespace

int StatusCommand(Connection& conn, OutputFormat output) {
  v1::GetStatusResponse resp;
  auto ctx = Unary();
  grpc::Status s = conn.stub().GetStatus(ctx.get(), v1::GetStatusRequest(), &resp);
  if (!s.ok()) return Fail(s, "status");
  if (output != OutputFormat::kText) {
    nlohmann::json targets = nlohmann::json::array();
    for (const auto& t : resp.targets()) {
      int attached = 0;
      for (const auto& p : t.probes()) attached += p.attached();
      targets.push_back({{"target_id", t.target_id()},
                         {"pid", t.pid()},
                         {"python_version", t.python_version()},
                         {"probes_attached", attached},
                         {"probes", t.probes_size()},
                         {"records", t.stats().records()},
                         {"drops", t.stats().drops()},
                         {"labels", std::map<std::string, std::string>(t.labels().begin(),
                                                                       t.labels().end())}});
    }
    nlohmann::json out = {{"version", resp.version()},
                          {"mode", resp.mode()},
                          {"uptime_ns", resp.uptime_ns()},
                          {"kernel_release", resp.kernel_release()},
                          {"targets", targets}};
    if (resp.auto_attach().enabled()) out["auto_attach"] = AutoAttachJson(resp.auto_attach());
    std::fprintf(stdout, "%s\n", out.dump(2).c_str());
    return kExitOk;
  }
  std::fprintf(stdout, "threadscope %s (%s via %s), up %.1f s, kernel %s\n",
               resp.version().c_str(), resp.mode().c_str(), conn.description().c_str(),
               static_cast<double>(resp.uptime_ns()) / 1e9, resp.kernel_release().c_str());
  if (resp.targets().empty()) std::fprintf(stdout, "no targets attached\n");
  for (const auto& t : resp.targets()) {
    int attached = 0;
    for (const auto& p : t.probes()) attached += p.attached();
    std::fprintf(stdout, "  %-12s pid %-7d CPython %-8s probes %d/%d  records %llu  drops %llu\n",
                 t.target_id().c_str(), t.pid(), t.python_version().c_str(), attached,
                 t.probes_size(), static_cast<unsigned long long>(t.stats().records()),
                 static_cast<unsigned long long>(t.stats().drops()));
  }
  if (resp.auto_attach().enabled()) std::fprintf(stdout, "%s", AutoAttachText(resp.auto_attach()).c_str());
  return kExitOk;
}

}  // namespace threadscope::client
