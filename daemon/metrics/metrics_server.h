// The daemon's Prometheus endpoint (--metrics-addr): text exposition of every live target,
// built from snapshots at scrape time, so a scrape costs nothing between scrapes.
#pragma once

#include <memory>
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
  // choose (address() then names the port it chose).
  static StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& addr,
                                                        engine::SessionManager& manager,
                                                        MetricsOptions options);
  ~MetricsServer();
  const std::string& address() const { return address_; }

 private:
  class Collector;
  MetricsServer() = default;
  std::string address_;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// "9464" / ":9464" -> "127.0.0.1:9464"; "0.0.0.0:9464" stays; nullopt when malformed.
std::optional<std::string> NormalizeListenAddress(const std::string& addr);

}  // namespace threadscope::metrics
