#include "client/connection.h"

#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "daemon/common/paths.h"

namespace threadscope::client {

std::string NormalizeServerAddress(const std::string& server) {
  if (server.empty()) return std::string("unix:") + kDefaultSocketPath;
  if (server.rfind("unix:", 0) == 0) {
    std::string path = server.substr(5);
    while (path.rfind("//", 0) == 0) path = path.substr(1);
    return "unix:" + path;
  }
  if (server[0] == '/' || server[0] == '.') return "unix:" + server;
  if (server.rfind("tcp://", 0) == 0) return server.substr(6);
  return server;
}

namespace {

StatusOr<std::string> ReadSmallFile(const std::string& path, const std::string& flag) {
  std::ifstream in(path);
  if (!in) return InvalidArgumentError(flag + ": cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// TLS, plus the token as "authorization: Bearer ..." on every call.
StatusOr<std::shared_ptr<grpc::ChannelCredentials>> TcpCredentials(const ConnectOptions& o) {
  if (o.token_file.empty()) {
    return InvalidArgumentError(
        "a TCP server needs --token-file (and --tls-ca unless its certificate is signed by a "
        "system CA): threadscoped serves TCP only with TLS and a bearer token");
  }
  TS_ASSIGN_OR_RETURN(std::string token, ReadSmallFile(o.token_file, "--token-file"));
  auto b = token.find_first_not_of(" \t\r\n");
  auto e = token.find_last_not_of(" \t\r\n");
  token = b == std::string::npos ? "" : token.substr(b, e - b + 1);
  grpc::SslCredentialsOptions ssl;
  if (!o.tls_ca.empty()) {
    TS_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadSmallFile(o.tls_ca, "--tls-ca"));
  }
  return grpc::CompositeChannelCredentials(grpc::SslCredentials(ssl),
                                           grpc::AccessTokenCredentials(token));
}

}  // namespace

Connection::~Connection() {
  stub_.reset();
  channel_.reset();
  engine_.reset();
}

StatusOr<std::unique_ptr<Connection>> Connection::Open(const ConnectOptions& options) {
  std::unique_ptr<Connection> c(new Connection());
  if (!options.no_daemon) {
    std::string address = NormalizeServerAddress(options.server);
    bool is_unix = address.rfind("unix:", 0) == 0;
    struct stat st;
    bool socket_exists = !is_unix || stat(address.substr(5).c_str(), &st) == 0;
    if (socket_exists || options.server_explicit) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(64 << 20);
      std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
      if (!is_unix) {
        TS_ASSIGN_OR_RETURN(creds, TcpCredentials(options));
        if (!options.tls_server_name.empty()) {
          args.SetSslTargetNameOverride(options.tls_server_name);
        }
      }
      auto channel = grpc::CreateCustomChannel(address, creds, args);
      bool up = channel->WaitForConnected(std::chrono::system_clock::now() +
                                          std::chrono::seconds(2));
      if (up) {
        c->channel_ = channel;
        c->stub_ = v1::ThreadscopeService::NewStub(channel);
        c->description_ = "threadscoped at " + address;
        return c;
      }
      if (options.server_explicit) {
        return UnavailableError("no threadscoped is listening at " + address +
                                ": start it (threadscoped --socket " +
                                (is_unix ? address.substr(5) : address) +
                                "), or drop --server to trace in-process");
      }
    }
  }
  if (!options.local_engine) {
    return UnavailableError("no threadscoped is listening at " +
                            NormalizeServerAddress(options.server) +
                            ", and this threadscope has no in-process engine: start threadscoped");
  }
  TS_ASSIGN_OR_RETURN(c->engine_, options.local_engine());
  c->channel_ = c->engine_->channel();
  c->stub_ = v1::ThreadscopeService::NewStub(c->channel_);
  c->description_ = "in-process engine";
  return c;
}

}  // namespace threadscope::client
