#include "daemon/daemon_main.h"

#include <CLI/CLI.hpp>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>
#include <vector>
#include <thread>

#include "daemon/common/labels.h"
#include "daemon/common/version.h"
#include "daemon/service/server.h"

namespace threadscope {

int DaemonMain(int argc, char** argv) {
  service::DaemonOptions options;
  std::string log_level = "info";
  CLI::App app{"threadscoped: traces CPython threads with eBPF and serves threadscope.v1 over gRPC"};
  app.set_version_flag("--version", kThreadscopeVersion);
  app.add_option("--socket", options.socket_path, "Unix socket to listen on")
      ->capture_default_str();
  app.add_option("--socket-group", options.socket_group,
                 "group that may use the socket (mode 0660); root-only if it does not exist")
      ->capture_default_str();
  std::vector<std::string> labels;
  app.add_option("--listen-tcp", options.tcp.address,
                 "also serve gRPC on HOST:PORT, only with TLS and a bearer token (off by default); "
                 "port 0: any free port, logged");
  app.add_option("--tls-cert", options.tcp.cert_file, "server certificate chain (PEM) for TCP");
  app.add_option("--tls-key", options.tcp.key_file, "its private key (PEM)");
  app.add_option("--tls-client-ca", options.tcp.client_ca,
                 "require client certificates signed by this CA (mTLS)");
  app.add_option("--token-file", options.tcp.token_file,
                 "file holding the bearer token TCP clients must send");
  app.add_option("--metrics-addr", options.metrics_addr,
                 "serve Prometheus metrics on HOST:PORT (PORT alone: loopback), e.g. 9464; port "
                 "0: any free port, logged");
  app.add_option("--label", labels, "NAME=VALUE added to every metric series (repeatable)");
  app.add_option("--metrics-top-locks", options.metrics.top_locks,
                 "locks per target with series of their own; the rest fold into lock=\"other\"")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  for (const auto& l : labels) {
    auto label = ParseLabel(l);
    if (!label.ok()) {
      std::fprintf(stderr, "threadscoped: --label: %s\n", label.status().message().c_str());
      return 2;
    }
    options.metrics.labels[label->first] = label->second;
  }
  if (Status s = ValidateLabels(options.metrics.labels); !s.ok()) {
    std::fprintf(stderr, "threadscoped: --label: %s\n", s.message().c_str());
    return 2;
  }

  // A root service: no terminal may stop it (SIGTSTP/SIGTTIN/SIGTTOU) or hang it up, and a
  // client closing its end mid-write must not kill it (SIGPIPE).
  for (int sig : {SIGHUP, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE}) signal(sig, SIG_IGN);
  // Signals are taken synchronously by one thread so shutdown runs outside a handler.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto server = service::DaemonServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "threadscoped: %s\n", server.status().message().c_str());
    // Bad flags or files given are usage errors; anything else is the environment.
    return server.status().code() == StatusCode::kInvalidArgument ||
                   server.status().code() == StatusCode::kNotFound
               ? 2
               : 3;
  }
  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    spdlog::info("signal {}: detaching every target and stopping", sig);
    (*server)->Shutdown();
  });
  (*server)->Wait();
  signals.detach();
  return 0;
}

}  // namespace threadscope
