#include "client/connection.h"

#include <sys/stat.h>

#include <chrono>

#include "daemon/service/server.h"

namespace threadscope::client {

std::string NormalizeServerAddress(const std::string& server) {
  if (server.empty()) return std::string("unix:") + service::kDefaultSocketPath;
  if (server.rfind("unix:", 0) == 0) {
    std::string path = server.substr(5);
    while (path.rfind("//", 0) == 0) path = path.substr(1);
    return "unix:" + path;
  }
  if (server[0] == '/' || server[0] == '.') return "unix:" + server;
  return server;
}

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
      auto channel =
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
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
  TS_ASSIGN_OR_RETURN(c->engine_, service::InProcessEngine::Start());
  c->channel_ = c->engine_->channel();
  c->stub_ = v1::ThreadscopeService::NewStub(c->channel_);
  c->description_ = "in-process engine";
  return c;
}

}  // namespace threadscope::client
