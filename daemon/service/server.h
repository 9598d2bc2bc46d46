// The two ways the API is served:
//   - DaemonServer: threadscoped on a Unix socket (owner/group only), accepting connections
//     itself to learn each client's credentials, with health checking and reflection;
//   - InProcessEngine: the same service inside the CLI when no daemon runs, reached through a
//     gRPC in-process channel, so the CLI speaks the public API either way.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "daemon/autoattach/auto_attacher.h"
#include "daemon/autoattach/config.h"
#include "daemon/common/paths.h"
#include "daemon/common/status.h"
#include "daemon/engine/live_attach.h"
#include "daemon/engine/session_manager.h"
#include "daemon/metrics/metrics_server.h"
#include "daemon/service/peer_auth.h"
#include "daemon/service/remote_auth.h"
#include "daemon/service/threadscope_service.h"

namespace threadscope::service {

using ::threadscope::kDefaultSocketPath;
inline constexpr char kServiceName[] = "threadscope.v1.ThreadscopeService";

struct DaemonOptions {
  std::string socket_path = kDefaultSocketPath;
  // Group allowed to use the socket (mode 0660); empty or missing group = root only (0600).
  std::string socket_group = "threadscope";
  engine::SessionManagerOptions engine;
  std::string metrics_addr;  // empty: no metrics endpoint
  TcpOptions tcp;            // tcp.address empty: Unix socket only
  metrics::MetricsOptions metrics;
  // Rules empty: no auto-attach (and no exec watcher loaded).
  autoattach::AutoAttachConfig auto_attach;
};

class DaemonServer {
 public:
  static StatusOr<std::unique_ptr<DaemonServer>> Start(const DaemonOptions& options);
  ~DaemonServer();
  // Blocks until Shutdown() (from another thread or a signal handler thread).
  void Wait();
  void Shutdown();
  const std::string& socket_path() const { return options_.socket_path; }

 private:
  DaemonServer() = default;
  void AcceptLoop();

  DaemonOptions options_;
  std::unique_ptr<engine::SessionManager> manager_;
  PeerRegistry peers_;
  std::unique_ptr<ThreadscopeServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<metrics::MetricsServer> metrics_;
  std::unique_ptr<autoattach::AutoAttacher> auto_attach_;
  int listen_fd_ = -1;
  bool socket_activated_ = false;  // the socket came from systemd: not ours to remove
  int wake_fd_ = -1;  // eventfd that stops the accept loop
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
};

class InProcessEngine {
 public:
  static StatusOr<std::unique_ptr<InProcessEngine>> Start();
  ~InProcessEngine();
  std::shared_ptr<grpc::Channel> channel();

 private:
  InProcessEngine() = default;
  std::unique_ptr<engine::SessionManager> manager_;
  std::unique_ptr<ThreadscopeServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace threadscope::service
