// How the CLI reaches an engine: threadscoped's socket when one answers, otherwise the same
// service started inside the CLI (an in-process gRPC channel, when the binary links one:
// client/in_process.h). Either way the CLI holds a ThreadscopeService stub and uses nothing else.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "daemon/common/status.h"
#include "threadscope/v1/threadscope.grpc.pb.h"

namespace threadscope::client {

// An engine serving the API inside this process (client/in_process.h makes one).
class LocalEngine {
 public:
  virtual ~LocalEngine() = default;
  virtual std::shared_ptr<grpc::Channel> channel() = 0;
};
using LocalEngineFactory = std::function<StatusOr<std::unique_ptr<LocalEngine>>()>;

struct ConnectOptions {
  std::string server;            // "unix:/path", a socket path; empty = default socket
  bool server_explicit = false;  // --server / THREADSCOPE_SERVER was given: never fall back
  bool no_daemon = false;        // always trace in-process
  // TCP servers (HOST:PORT, tcp://HOST:PORT): always TLS, with a bearer token.
  std::string tls_ca;           // CA that signed the server's certificate (default: system roots)
  std::string token_file;       // required for TCP
  std::string tls_server_name;  // the name to check the certificate against, if not the host
  // Starts the in-process engine when no daemon answers; empty: this binary has none.
  LocalEngineFactory local_engine;
};

class Connection {
 public:
  static StatusOr<std::unique_ptr<Connection>> Open(const ConnectOptions& options);
  ~Connection();

  v1::ThreadscopeService::Stub& stub() { return *stub_; }
  // "threadscoped at unix:/run/threadscope/threadscope.sock" or "in-process engine".
  const std::string& description() const { return description_; }
  bool in_process() const { return engine_ != nullptr; }

 private:
  Connection() = default;
  std::unique_ptr<LocalEngine> engine_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ThreadscopeService::Stub> stub_;
  std::string description_;
};

// "unix:/x", "unix:///x", "/x" -> "unix:/x".
std::string NormalizeServerAddress(const std::string& server);

}  // namespace threadscope::client
