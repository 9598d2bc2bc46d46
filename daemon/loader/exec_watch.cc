#include "daemon/loader/exec_watch.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "daemon/loader/bpf_tracer.h"
#include "probes/exec_watch_bpf.skel.h"
#include "probes/exec_watch_events.h"

namespace threadscope::loader {

StatusOr<std::unique_ptr<ExecWatch>> ExecWatch::Start() {
  RouteLibbpfLogs();
  std::unique_ptr<ExecWatch> w(new ExecWatch());
  w->skel_ = exec_watch_bpf__open_and_load();
  if (!w->skel_) return BpfError(errno, "cannot load the exec watcher");
  if (int err = exec_watch_bpf__attach(w->skel_)) {
    return BpfError(err, "cannot attach the exec watcher to sched_process_exec");
  }
  w->ring_ = ring_buffer__new(
      bpf_map__fd(w->skel_->maps.exec_events),
      [](void* ctx, void* data, size_t size) -> int {
        auto* self = static_cast<ExecWatch*>(ctx);
        if (self->current_ && size >= sizeof(ts_exec_record)) {
          ts_exec_record r;
          std::memcpy(&r, data, sizeof(r));
          (*self->current_)(static_cast<pid_t>(r.tgid), r.ts_ns);
        }
        return 0;
      },
      w.get(), nullptr);
  if (!w->ring_) return BpfError(errno, "cannot map the exec watcher's ring buffer");
  return w;
}

ExecWatch::~ExecWatch() {
  if (ring_) ring_buffer__free(ring_);
  if (skel_) exec_watch_bpf__destroy(skel_);
}

StatusOr<size_t> ExecWatch::Poll(int timeout_ms, const Callback& callback) {
  current_ = &callback;
  int n = ring_buffer__poll(ring_, timeout_ms);
  current_ = nullptr;
  if (n < 0 && n != -EINTR) return BpfError(n, "exec watcher ring buffer");
  return static_cast<size_t>(n > 0 ? n : 0);
}

uint64_t ExecWatch::Lost() const {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return 0;
  std::vector<uint64_t> values(static_cast<size_t>(cpus));
  uint32_t zero = 0;
  if (bpf_map__lookup_elem(skel_->maps.exec_lost, &zero, sizeof(zero), values.data(),
                           values.size() * sizeof(uint64_t), 0) != 0) {
    return 0;
  }
  uint64_t total = 0;
  for (uint64_t v : values) total += v;
  return total;
}

}  // namespace threadscope::loader
