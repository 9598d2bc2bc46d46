#include "daemon/daemon_main.h"

#include <CLI/CLI.hpp>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <thread>

#include "daemon/autoattach/config.h"
#include "daemon/common/labels.h"
#include "daemon/common/text.h"
#include "daemon/common/version.h"
#include "daemon/loader/calibrate.h"
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
  std::string config_file;
  app.add_option("--config", config_file,
                 "config file: auto-attach rules with their trace options and labels, metrics "
                 "settings (deploy/systemd/threadscoped.conf); flags given too win");
  std::vector<std::string> auto_attach;
  app.add_option("--auto-attach", auto_attach,
                 "trace every CPython process matching KEY=PATTERN[,KEY=PATTERN...] (keys: exe "
                 "glob, cmdline regex, cgroup glob, user), running or started later (repeatable)");
  std::optional<size_t> auto_attach_limit;
  app.add_option("--auto-attach-limit", auto_attach_limit,
                 "auto-attached targets at once (default 32); past it, matches are refused");
  std::string budget_calibration = "measure";
  app.add_option("--budget-calibration", budget_calibration,
                 "the overhead budget's per-hit probe costs: measure them at start-up (tens of "
                 "ms; the defaults if that fails) or use the defaults")
      ->check(CLI::IsMember({"measure", "defaults"}))
      ->capture_default_str();
  std::string retain;
  app.add_option("--metrics-retention", retain,
                 "how long an exited target's last values stay on /metrics (default 60s, at least "
                 "2 scrape intervals; 0s: not at all)");
  std::optional<size_t> retain_targets;
  app.add_option("--metrics-retention-targets", retain_targets,
                 "ended targets kept on /metrics at most (default 256; the oldest go first)");
  bool check_config = false;
  app.add_flag("--check-config", check_config,
               "check the flags and --config, print the rules (or every problem), and exit "
               "(0: fine, 2: a flag, 4: the config file)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  // Every problem with the configuration, one line each, before anything starts.
  std::vector<std::string> errors;
  autoattach::Config config;
  if (!config_file.empty()) {
    auto loaded = autoattach::LoadConfigFile(config_file);
    if (!loaded.errors.empty()) {
      // One line, the first problem; --check-config lists them all. A config file that does not
      // parse has an exit code of its own (4), so a unit or a pod says which input is wrong.
      if (check_config) {
        for (const auto& e : loaded.errors) {
          std::fprintf(stderr, "threadscoped: %s\n", Printable(e).c_str());
        }
      } else {
        std::string more = loaded.errors.size() > 1
                               ? " (and " + std::to_string(loaded.errors.size() - 1) +
                                     " more: threadscoped --config FILE --check-config lists them)"
                               : "";
        std::fprintf(stderr, "threadscoped: %s%s\n", Printable(loaded.errors[0]).c_str(),
                     more.c_str());
      }
      return 4;
    }
    config = std::move(loaded.config);
  }
  options.auto_attach = config.auto_attach;
  if (config.metrics.retain_seconds) options.metrics.retain_seconds = *config.metrics.retain_seconds;
  if (config.metrics.retain_max_targets) {
    options.metrics.retain_max_targets = *config.metrics.retain_max_targets;
  }
  options.metrics.labels = config.metrics.labels;
  if (!retain.empty()) {
    auto ns = autoattach::ParseDuration(retain);
    if (!ns || *ns > 86400'000'000'000ull) {
      errors.push_back("--metrics-retention: '" + retain.substr(0, 32) +
                       "' is not a duration of at most 24h (60s, 2m, 0)");
    } else {
      options.metrics.retain_seconds = static_cast<int>(*ns / 1'000'000'000ull);
    }
  }
  if (retain_targets) options.metrics.retain_max_targets = *retain_targets;
  if (auto_attach_limit) options.auto_attach.max_targets = *auto_attach_limit;
  std::set<std::string> rule_names;
  for (const auto& r : options.auto_attach.rules) rule_names.insert(r.name);
  for (size_t i = 0; i < auto_attach.size(); ++i) {
    auto m = autoattach::Matcher::Parse(auto_attach[i]);
    if (!m.ok()) {
      errors.push_back("--auto-attach '" + Printable(auto_attach[i].substr(0, 64)) +
                       "': " + m.status().message());
      continue;
    }
    autoattach::Rule rule;
    rule.name = "flag-" + std::to_string(i + 1);
    rule.match = std::move(*m);
    if (!rule_names.insert(rule.name).second) {
      errors.push_back("--auto-attach: rule name " + rule.name + " is taken by --config's rules");
    }
    options.auto_attach.rules.push_back(std::move(rule));
  }
  for (const auto& l : labels) {
    auto label = ParseLabel(l);
    if (!label.ok()) {
      errors.push_back("--label: " + label.status().message());
      continue;
    }
    options.metrics.labels[label->first] = label->second;
  }
  if (Status s = ValidateLabels(options.metrics.labels); !s.ok()) {
    errors.push_back("--label: " + s.message());
  }
  if (!errors.empty()) {
    for (const auto& e : errors) std::fprintf(stderr, "threadscoped: %s\n", Printable(e).c_str());
    return 2;
  }
  if (check_config) {
    std::printf("threadscoped: the configuration is valid: %zu auto-attach rule(s), at most %zu "
                "targets\n",
                options.auto_attach.rules.size(), options.auto_attach.max_targets);
    for (const auto& r : options.auto_attach.rules) {
      std::printf("  %s: %s\n", r.name.c_str(), Printable(r.match.ToString()).c_str());
    }
    return 0;
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

  // What a probe hit costs here, for every target's --overhead-budget estimate. Never fatal.
  if (budget_calibration == "measure") {
    options.engine.live.calibration = loader::CalibrateAtStartup();
  } else {
    options.engine.live.calibration.source =
        "defaults (docs/PERFORMANCE.md; --budget-calibration=defaults)";
  }

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
