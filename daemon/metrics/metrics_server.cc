#include "daemon/metrics/metrics_server.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

namespace threadscope::metrics {

class MetricsServer::Collector : public prometheus::Collectable {
 public:
  Collector(engine::SessionManager& manager, MetricsOptions options)
      : manager_(manager), options_(std::move(options)) {}

  // Runs on a civetweb thread: nothing may escape it (an exception there ends the daemon).
  std::vector<prometheus::MetricFamily> Collect() const override {
    try {
      std::vector<v1::Snapshot> snapshots;
      for (const auto& session : manager_.List()) {
        v1::Snapshot s = session->snapshot();
        // Recordings loaded for offline reports are not running processes.
        if (s.target().state() == v1::TARGET_STATE_RECORDING) continue;
        snapshots.push_back(std::move(s));
      }
      std::lock_guard<std::mutex> lock(mu_);
      return BuildMetrics(snapshots, options_, &lock_series_);
    } catch (const std::exception& e) {
      spdlog::error("metrics scrape failed: {}", e.what());
      return {};
    }
  }

 private:
  engine::SessionManager& manager_;
  MetricsOptions options_;
  mutable std::mutex mu_;
  mutable LockSeries lock_series_;
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

MetricsServer::~MetricsServer() {
  if (exposer_ && collector_) exposer_->RemoveCollectable(collector_);
}

}  // namespace threadscope::metrics
