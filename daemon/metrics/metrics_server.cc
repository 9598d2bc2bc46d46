#include "daemon/metrics/metrics_server.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <spdlog/spdlog.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <set>

#include "daemon/common/version.h"
#include "daemon/metrics/retained.h"
#include "daemon/target/procfs.h"

namespace threadscope::metrics {

namespace {

double DaemonCpuSeconds() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double DaemonResidentBytes() {
  auto statm = target::ReadFileToString("/proc/self/statm");
  if (!statm.ok()) return 0;
  unsigned long long size = 0, resident = 0;
  if (std::sscanf(statm->c_str(), "%llu %llu", &size, &resident) != 2) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

const char* StateName(v1::TargetState s) {
  switch (s) {
    case v1::TARGET_STATE_ATTACHED: return "attached";
    case v1::TARGET_STATE_EXITED: return "exited";
    case v1::TARGET_STATE_DETACHED: return "detached";
    case v1::TARGET_STATE_EXECED: return "execed";
    default: return nullptr;
  }
}

}  // namespace

class MetricsServer::Collector : public prometheus::Collectable {
 public:
  Collector(engine::SessionManager& manager, MetricsOptions options)
      : manager_(manager),
        options_(std::move(options)),
        retained_(static_cast<uint64_t>(std::max(0, options_.retain_seconds)) * 1000000000ull,
                  options_.retain_max_targets),
        start_time_(static_cast<double>(std::time(nullptr))) {}

  // Runs on a civetweb thread: nothing may escape it (an exception there ends the daemon).
  std::vector<prometheus::MetricFamily> Collect() const override {
    try {
      std::vector<v1::Snapshot> snapshots;
      DaemonState state;
      state.version = kThreadscopeVersion;
      std::set<int> live_pids;
      for (const auto& session : manager_.List()) {
        v1::Snapshot s = session->snapshot();
        // Recordings loaded for offline reports are not running processes.
        if (s.target().state() == v1::TARGET_STATE_RECORDING) continue;
        if (const char* name = StateName(s.target().state())) ++state.targets_by_state[name];
        live_pids.insert(s.target().pid());
        snapshots.push_back(std::move(s));
      }
      state.cpu_seconds = DaemonCpuSeconds();
      state.resident_bytes = DaemonResidentBytes();
      state.start_time_seconds = start_time_;
      std::lock_guard<std::mutex> lock(mu_);
      if (auto_attach_) state.auto_attach = auto_attach_();
      auto retained = retained_.Collect(manager_.clock().MonotonicNowNs(), live_pids);
      state.targets_by_state["retained"] = retained_.size();
      return BuildMetrics(snapshots, options_, &lock_series_, &state, &retained);
    } catch (const std::exception& e) {
      spdlog::error("metrics scrape failed: {}", e.what());
      return {};
    }
  }

  // A target left the manager: keep its last values for a while.
  void Ended(const std::shared_ptr<engine::Session>& session) {
    v1::Snapshot s = session->snapshot();
    if (s.target().state() == v1::TARGET_STATE_RECORDING) return;
    std::lock_guard<std::mutex> lock(mu_);
    std::set<std::string> own = lock_series_[s.target().target_id()];
    auto families = TargetFamilies(s, options_, &own);
    lock_series_.erase(s.target().target_id());
    retained_.Add(s.target().target_id(), s.target().pid(), std::move(families),
                  manager_.clock().MonotonicNowNs());
  }

  void SetAutoAttach(std::function<std::optional<AutoAttachMetrics>()> source) {
    std::lock_guard<std::mutex> lock(mu_);
    auto_attach_ = std::move(source);
  }

 private:
  engine::SessionManager& manager_;
  MetricsOptions options_;
  mutable std::mutex mu_;
  mutable LockSeries lock_series_;
  mutable RetainedTargets retained_;
  std::function<std::optional<AutoAttachMetrics>()> auto_attach_;
  const double start_time_;
};

std::optional<std::string> NormalizeListenAddress(const std::string& addr) {
  std::string host = "127.0.0.1", port = addr;
  auto colon = addr.rfind(':');
  if (colon != std::string::npos) {
    if (colon > 0) host = addr.substr(0, colon);
    port = addr.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::atoi(port.c_str()) > 65535) {
    return std::nullopt;
  }
  return host + ":" + port;
}

StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& addr,
                                                              engine::SessionManager& manager,
                                                              MetricsOptions options) {
  auto normalized = NormalizeListenAddress(addr);
  if (!normalized) {
    return InvalidArgumentError("--metrics-addr '" + addr +
                                "' is not HOST:PORT or PORT (e.g. 127.0.0.1:9464)");
  }
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->address_ = *normalized;
  try {
    // Several workers: one idle connection must not stall every scrape (and the readiness
    // probe). civetweb closes connections that send nothing within its request timeout.
    server->exposer_ = std::make_unique<prometheus::Exposer>(*normalized, 4);
  } catch (const std::exception& e) {
    return UnavailableError("cannot serve metrics on " + *normalized + ": " + e.what());
  }
  server->collector_ = std::make_shared<Collector>(manager, std::move(options));
  server->exposer_->RegisterCollectable(server->collector_);
  server->manager_ = &manager;
  std::weak_ptr<Collector> weak = server->collector_;
  server->listener_ = manager.AddEndedListener([weak](const std::shared_ptr<engine::Session>& s) {
    if (auto c = weak.lock()) c->Ended(s);
  });
  // Port 0 asks the kernel for a free one: say which it gave (tests bind ":0" and read this line
  // instead of guessing a free port).
  auto ports = server->exposer_->GetListeningPorts();
  if (!ports.empty()) {
    server->address_ =
        normalized->substr(0, normalized->rfind(':') + 1) + std::to_string(ports[0]);
  }
  spdlog::info("metrics on http://{}/metrics", server->address_);
  return server;
}

void MetricsServer::SetAutoAttachSource(
    std::function<std::optional<AutoAttachMetrics>()> source) {
  collector_->SetAutoAttach(std::move(source));
}

MetricsServer::~MetricsServer() {
  if (manager_) manager_->RemoveEndedListener(listener_);
  if (exposer_ && collector_) exposer_->RemoveCollectable(collector_);
}

}  // namespace threadscope::metrics
