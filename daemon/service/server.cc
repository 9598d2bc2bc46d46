#include "daemon/service/server.h"

#include <fcntl.h>
#include <grp.h>
#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <optional>

#include <cerrno>
#include <cstring>

#include "daemon/common/text.h"
#include "daemon/loader/calibrate.h"
#include "daemon/loader/exec_watch.h"
#include "grpc/health/v1/health.pb.h"

namespace threadscope::service {

namespace {

Status MakeParentDirs(const std::string& path) {
  for (size_t pos = 1; (pos = path.find('/', pos)) != std::string::npos; ++pos) {
    std::string dir = path.substr(0, pos);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoToStatus(errno, "cannot create " + dir);
    }
  }
  return OkStatus();
}

StatusOr<int> ListenUnix(const std::string& path, const std::string& group_name) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return InvalidArgumentError("socket path is longer than " +
                                std::to_string(sizeof(addr.sun_path) - 1) + " bytes: " + path);
  }
  std::strcpy(addr.sun_path, path.c_str());
  TS_RETURN_IF_ERROR(MakeParentDirs(path));
  // The directory must not let anyone else swap files under us (rename, symlinks).
  std::string parent = path.substr(0, path.rfind('/'));
  if (parent.empty()) parent = "/";
  struct stat dir_st;
  if (lstat(parent.c_str(), &dir_st) != 0 || !S_ISDIR(dir_st.st_mode)) {
    return FailedPreconditionError(parent + " is not a directory");
  }
  if ((dir_st.st_uid != 0 && dir_st.st_uid != geteuid()) ||
      ((dir_st.st_mode & (S_IWGRP | S_IWOTH)) && !(dir_st.st_mode & S_ISVTX))) {
    return FailedPreconditionError(parent +
                                   " is writable by others (or not owned by root): the socket "
                                   "must live in a directory only root can change");
  }
  // A leftover socket file: refuse if a daemon still answers on it, else replace it.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return FailedPreconditionError(path + " exists and is not a socket; remove it or pick "
                                            "another --socket");
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = probe >= 0 &&
                connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    if (probe >= 0) close(probe);
    if (live) {
      return AlreadyExistsError("another threadscoped is already listening on " + path);
    }
    unlink(path.c_str());
  }
  // Bound under a temporary name, given its group and mode, then renamed into place: the socket
  // appears at `path` only once its permissions are final.
  uint64_t nonce = 0;
  if (int r = open("/dev/urandom", O_RDONLY | O_CLOEXEC); r >= 0) {
    (void)!read(r, &nonce, sizeof(nonce));
    close(r);
  }
  char suffix[40];
  std::snprintf(suffix, sizeof(suffix), ".new.%d.%016llx", static_cast<int>(getpid()),
                static_cast<unsigned long long>(nonce));
  std::string staging = path + suffix;
  sockaddr_un staged{};
  staged.sun_family = AF_UNIX;
  if (staging.size() >= sizeof(staged.sun_path)) {
    return InvalidArgumentError("socket path is too long: " + path);
  }
  std::strcpy(staged.sun_path, staging.c_str());
  unlink(staging.c_str());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoToStatus(errno, "socket");
  std::optional<gid_t> group;
  if (!group_name.empty()) {
    if (struct group* g = getgrnam(group_name.c_str())) {
      group = g->gr_gid;
    } else {
      spdlog::warn("group '{}' does not exist: socket {} is root-only (0600)", group_name, path);
    }
  }
  // The socket's mode comes from the umask at bind: owner only until its group is set, so
  // there is no moment where others could connect, and no chmod on a path (no symlink games).
  mode_t old = umask(0177);
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&staged), sizeof(staged));
  umask(old);
  if (rc != 0) {
    int err = errno;
    close(fd);
    return ErrnoToStatus(err, "cannot bind " + path);
  }
  if (group && fchownat(AT_FDCWD, staging.c_str(), 0, *group, AT_SYMLINK_NOFOLLOW) == 0) {
    // Group may use it: widen 0600 to 0660 on the very socket we bound (it is ours: a symlink
    // at this random name would have made bind fail).
    struct stat sst;
    if (lstat(staging.c_str(), &sst) == 0 && S_ISSOCK(sst.st_mode)) chmod(staging.c_str(), 0660);
  }
  if (listen(fd, 128) != 0) {
    int err = errno;
    close(fd);
    unlink(staging.c_str());
    return ErrnoToStatus(err, "cannot listen on " + path);
  }
  if (rename(staging.c_str(), path.c_str()) != 0) {
    int err = errno;
    close(fd);
    unlink(staging.c_str());
    return ErrnoToStatus(err, "cannot create " + path);
  }
  return fd;
}

// Socket activation (sd_listen_fds(3)): LISTEN_PID is us and LISTEN_FDS >= 1 put a listening
// socket at fd 3. Returns it and its path, nothing when not activated, an error when what was
// passed is not a listening Unix stream socket.
StatusOr<std::optional<std::pair<int, std::string>>> SocketFromSystemd() {
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  if (!pid || !fds || std::atoi(pid) != getpid() || std::atoi(fds) < 1) {
    return std::optional<std::pair<int, std::string>>();
  }
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  constexpr int kFd = 3;  // SD_LISTEN_FDS_START
  int listening = 0;
  socklen_t len = sizeof(listening);
  sockaddr_un addr{};
  socklen_t alen = sizeof(addr);
  if (getsockopt(kFd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening ||
      getsockname(kFd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0 ||
      addr.sun_family != AF_UNIX) {
    return FailedPreconditionError(
        "LISTEN_FDS is set but fd 3 is not a listening Unix socket (check threadscoped.socket)");
  }
  fcntl(kFd, F_SETFD, FD_CLOEXEC);
  return std::optional<std::pair<int, std::string>>(std::make_pair(kFd, std::string(addr.sun_path)));
}

std::unique_ptr<grpc::ServerBuilder> NewBuilder() {
  // Link health.proto's descriptor so reflection can describe grpc.health.v1 too.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto builder = std::make_unique<grpc::ServerBuilder>();
  builder->SetMaxReceiveMessageSize(64 << 20);
  builder->SetMaxSendMessageSize(64 << 20);
  // Every open stream holds a server thread: bound them, so a client opening thousands of
  // streams gets RESOURCE_EXHAUSTED instead of exhausting the daemon's threads.
  grpc::ResourceQuota quota("threadscoped");
  quota.SetMaxThreads(512);
  builder->SetResourceQuota(quota);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 64);
  return builder;
}

// Auto-attach's view of the kernel's exec events: the daemon's own BPF watcher.
class BpfExecSource : public autoattach::ExecSource {
 public:
  explicit BpfExecSource(std::unique_ptr<loader::ExecWatch> watch) : watch_(std::move(watch)) {}
  StatusOr<size_t> Poll(int timeout_ms, const std::function<void(pid_t)>& callback) override {
    return watch_->Poll(timeout_ms, [&](pid_t pid, uint64_t) { callback(pid); });
  }
  uint64_t Lost() const override { return watch_->Lost(); }
  std::string Name() const override { return "raw_tp/sched_process_exec"; }

 private:
  std::unique_ptr<loader::ExecWatch> watch_;
};

metrics::AutoAttachMetrics ToMetrics(const autoattach::AutoAttacher::Counters& c) {
  metrics::AutoAttachMetrics m;
  m.targets = c.targets;
  m.max_targets = c.max_targets;
  m.execs_seen = c.execs_seen;
  m.execs_lost = c.execs_lost;
  for (const auto& r : c.rules) {
    m.rules.push_back({r.name, r.matches, r.attaches, r.refusals, r.failures});
  }
  return m;
}

}  // namespace

StatusOr<std::unique_ptr<DaemonServer>> DaemonServer::Start(const DaemonOptions& options) {
  // Each traced process holds tens of descriptors (programs, maps, links): raise the soft limit
  // to the hard one.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  std::unique_ptr<DaemonServer> d(new DaemonServer());
  d->options_ = options;
  TS_ASSIGN_OR_RETURN(auto attacher, engine::BpfAttacher());
  d->manager_ = engine::SessionManager::Create(options.engine, std::move(attacher));
  d->service_ = std::make_unique<ThreadscopeServiceImpl>(*d->manager_, &d->peers_,
                                                         ServiceInfo{"daemon", {}});
  auto builder = NewBuilder();
  builder->RegisterService(d->service_.get());
  int tcp_port = 0;
  if (!options.tcp.address.empty()) {
    TS_ASSIGN_OR_RETURN(auto creds, TcpServerCredentials(options.tcp));
    builder->AddListeningPort(options.tcp.address, creds, &tcp_port);
  }
  d->server_ = builder->BuildAndStart();
  if (!d->server_) return InternalError("cannot start the gRPC server");
  if (!options.tcp.address.empty()) {
    if (tcp_port == 0) {
      return UnavailableError("cannot listen on " + options.tcp.address + " (in use?)");
    }
    // The port bound (the kernel's choice for port 0), which tests read instead of guessing.
    std::string bound = options.tcp.address.substr(0, options.tcp.address.rfind(':') + 1) +
                        std::to_string(tcp_port);
    spdlog::info("threadscoped listening on {} (TLS, bearer token)", bound);
  }
  d->server_->GetHealthCheckService()->SetServingStatus(kServiceName, true);
  if (!options.metrics_addr.empty()) {
    TS_ASSIGN_OR_RETURN(d->metrics_, metrics::MetricsServer::Start(options.metrics_addr,
                                                                   *d->manager_, options.metrics));
  }
  TS_ASSIGN_OR_RETURN(auto inherited, SocketFromSystemd());
  if (inherited) {
    // systemd (threadscoped.socket) made the socket, with its path, group and mode: use it and
    // leave the file to systemd.
    d->listen_fd_ = inherited->first;
    d->socket_activated_ = true;
    d->options_.socket_path = inherited->second;
  } else {
    TS_ASSIGN_OR_RETURN(d->listen_fd_, ListenUnix(options.socket_path, options.socket_group));
  }
  d->wake_fd_ = eventfd(0, EFD_CLOEXEC);
  d->acceptor_ = std::thread([raw = d.get()] { raw->AcceptLoop(); });
  if (!options.auto_attach.rules.empty()) {
    // One exec watcher for the whole host, loaded once: new processes are seen as they exec,
    // not by polling /proc. Without it auto-attach would miss every process started later, so
    // the daemon does not start.
    auto watch = loader::ExecWatch::Start();
    if (!watch.ok()) {
      return Status(watch.status().code(),
                    "auto-attach: cannot watch execs: " + watch.status().message());
    }
    autoattach::AutoAttacherOptions aa;
    aa.config = options.auto_attach;
    d->auto_attach_ = autoattach::AutoAttacher::Start(
        std::move(aa), *d->manager_, std::make_unique<BpfExecSource>(std::move(*watch)));
    d->service_->SetAutoAttach(d->auto_attach_.get());
    if (d->metrics_) {
      d->metrics_->SetAutoAttachSource([raw = d->auto_attach_.get()] {
        return std::optional<metrics::AutoAttachMetrics>(ToMetrics(raw->GetCounters()));
      });
    }
    std::string rules;
    for (const auto& r : options.auto_attach.rules) {
      rules += (rules.empty() ? "" : "; ") + r.name + ": " + r.match.ToString();
    }
    spdlog::info("auto-attach: {} rule(s), at most {} targets, execs from "
                 "raw_tp/sched_process_exec: {}",
                 options.auto_attach.rules.size(), options.auto_attach.max_targets,
                 Printable(rules));
  }
  spdlog::info("threadscoped listening on unix:{}{}", d->options_.socket_path,
               d->socket_activated_ ? " (socket from systemd)" : "");
  return d;
}

void DaemonServer::AcceptLoop() {
  // When the daemon runs out of file descriptors, a pending connection keeps the listening
  // socket readable: without a spare descriptor to accept-and-close it with, poll() would spin.
  int spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
  uint64_t accepted = 0;
  auto last_prune = std::chrono::steady_clock::now();
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int n = poll(fds, 2, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("accept loop: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents) break;
    // Connections that closed end their clients' leases.
    if (std::chrono::steady_clock::now() - last_prune > std::chrono::seconds(1)) {
      last_prune = std::chrono::steady_clock::now();
      for (const auto& client : peers_.Prune()) manager_->ReleaseClient(client);
    }
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if ((errno == EMFILE || errno == ENFILE) && spare >= 0) {
        close(spare);
        int victim = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (victim >= 0) close(victim);
        spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
        spdlog::warn("out of file descriptors: refused a connection");
      } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      continue;
    }
    std::string client = "fd:" + std::to_string(fd) + "#" + std::to_string(++accepted);
    auto peer = IdentifyPeer(fd, manager_->proc(), client);
    if (!peer.ok()) {
      spdlog::warn("refused a connection: {}", peer.status().ToString());
      close(fd);
      continue;
    }
    // The fd number is the key gRPC's peer string carries ("fd:<n>"); the registry also keeps
    // the socket's inode, so a reused number is never taken for the connection it replaces.
    auto replaced = peers_.Add(fd, std::move(*peer));
    grpc::AddInsecureChannelFromFd(server_.get(), fd);
    if (replaced) manager_->ReleaseClient(*replaced);
  }
  if (spare >= 0) close(spare);
}

void DaemonServer::Wait() { server_->Wait(); }

void DaemonServer::Shutdown() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  if (server_) {
    server_->GetHealthCheckService()->SetServingStatus(kServiceName, false);
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
}

DaemonServer::~DaemonServer() {
  Shutdown();
  if (acceptor_.joinable()) acceptor_.join();
  metrics_.reset();  // stop scraping before the sessions go
  if (service_) service_->SetAutoAttach(nullptr);
  auto_attach_.reset();  // no new attaches while everything is detached
  if (manager_) manager_->DetachAll();
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    if (!socket_activated_) unlink(options_.socket_path.c_str());
  }
  if (wake_fd_ >= 0) close(wake_fd_);
}

StatusOr<std::unique_ptr<InProcessEngine>> InProcessEngine::Start() {
  std::unique_ptr<InProcessEngine> e(new InProcessEngine());
  TS_ASSIGN_OR_RETURN(auto attacher, engine::BpfAttacher());
  engine::SessionManagerOptions options;
  options.calibrate_on_first_budget = loader::CalibrateAtStartup;
  e->manager_ = engine::SessionManager::Create(options, std::move(attacher));
  e->service_ = std::make_unique<ThreadscopeServiceImpl>(*e->manager_, nullptr,
                                                         ServiceInfo{"in-process", {}});
  auto builder = NewBuilder();
  builder->RegisterService(e->service_.get());
  e->server_ = builder->BuildAndStart();
  if (!e->server_) return InternalError("cannot start the in-process engine");
  return e;
}

InProcessEngine::~InProcessEngine() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  if (manager_) manager_->DetachAll();
}

std::shared_ptr<grpc::Channel> InProcessEngine::channel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return server_->InProcessChannel(args);
}

}  // namespace threadscope::service
