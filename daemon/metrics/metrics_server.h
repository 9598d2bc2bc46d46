// The daemon's Prometheus endpoint (--metrics-addr): text exposition of every live target,
// built from snapshots at scrape time, so a scrape costs nothing between scrapes.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <mutex>
#include <string>

#include "daemon/common/status.h"
#include "daemon/engine/session_manager.h"
#include "daemon/metrics/snapshot_metrics.h"

namespace prometheus {
class Exposer;
}

namespace threadscope::metrics {

class MetricsServer {
 public:
  // addr: "HOST:PORT", or "PORT" / ":PORT" for the loopback address; port 0 lets the kernel
  // choose (address() then names the port it chose). Ended targets stay on /metrics for
  // options.retain_seconds (retained.h).
  static StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& addr,
                                                        engine::SessionManager& manager,
                                                        MetricsOptions options);
  ~MetricsServer();
  // "HOST:PORT" as bound (the kernel's port when asked for 0).
  const std::string& address() const { return address_; }
  // Where auto-attach's counters come from (threadscoped with rules); unset: no such series.
  void SetAutoAttachSource(std::function<std::optional<AutoAttachMetrics>()> source);

 private:
  class Collector;
  MetricsServer() = default;
  engine::SessionManager* manager_ = nullptr;
  int listener_ = 0;
  std::string address_;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// "9464" / ":9464" -> "127.0.0.1:9464"; "0.0.0.0:9464" stays; nullopt when malformed.
std::optional<std::string> NormalizeListenAddress(const std::string& addr);

}  // namespace threadscope::metrics
