// The daemon's own exec watcher (probes/exec_watch.bpf.c): one raw tracepoint on
// sched_process_exec for the whole host, reporting every process that exec'd a new program.
// Auto-attach reads it instead of polling /proc. RAII: destroying it detaches the program.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "daemon/common/status.h"

struct exec_watch_bpf;
struct ring_buffer;

namespace threadscope::loader {

class ExecWatch {
 public:
  // Loads and attaches the program. PermissionDenied without CAP_BPF and CAP_PERFMON.
  static StatusOr<std::unique_ptr<ExecWatch>> Start();
  ~ExecWatch();
  ExecWatch(const ExecWatch&) = delete;
  ExecWatch& operator=(const ExecWatch&) = delete;

  using Callback = std::function<void(pid_t pid, uint64_t ts_ns)>;
  // Waits up to timeout_ms for execs, then delivers every one waiting. Returns how many.
  StatusOr<size_t> Poll(int timeout_ms, const Callback& callback);
  // Execs the ring had no room for (the daemon fell behind), summed over CPUs.
  uint64_t Lost() const;

 private:
  ExecWatch() = default;
  exec_watch_bpf* skel_ = nullptr;
  ring_buffer* ring_ = nullptr;
  const Callback* current_ = nullptr;
};

}  // namespace threadscope::loader
