#include "daemon/loader/calibrate.h"

#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "daemon/loader/bpf_tracer.h"
#include "probes/calibrate_bpf.skel.h"
#include "probes/threadscope_events.h"

// The functions the calibration probes: their first instruction decides how the kernel runs a
// uprobe there (daemon/target/disasm.cc ClassifyUprobeSite): `push %rbp` is emulated in the
// trap, `mov %rdi,%rax` is single-stepped out of line. Assembly, so no compiler changes them.
// ts_calib_plain is the same body, never probed: the cost of the call itself.
asm(R"(
  .text
  .p2align 4
  .hidden ts_calib_plain
  .type ts_calib_plain,@function
ts_calib_plain:
  push %rbp
  pop %rbp
  ret
  .size ts_calib_plain, .-ts_calib_plain
  .p2align 4
  .hidden ts_calib_emulated
  .type ts_calib_emulated,@function
ts_calib_emulated:
  push %rbp
  pop %rbp
  ret
  .size ts_calib_emulated, .-ts_calib_emulated
  .p2align 4
  .hidden ts_calib_stepped
  .type ts_calib_stepped,@function
ts_calib_stepped:
  mov %rdi, %rax
  ret
  .size ts_calib_stepped, .-ts_calib_stepped
  .p2align 4
  .hidden ts_calib_returning
  .type ts_calib_returning,@function
ts_calib_returning:
  push %rbp
  pop %rbp
  ret
  .size ts_calib_returning, .-ts_calib_returning
)");

extern "C" {
void ts_calib_plain();
void ts_calib_emulated();
void ts_calib_stepped();
void ts_calib_returning();
}

namespace threadscope::loader {

namespace {

// Bounds: each figure gets ~4 ms of calls a round (at most 2,000 calls, at least 100), 5
// rounds, so a single-step of ~20 us in a VM costs as little time as a 0.5 us trap; a figure
// outside [50 ns, 100 us] is a broken measurement, not a machine.
constexpr int kWarmupCalls = 200;
constexpr double kRoundNs = 4e6;
constexpr int kMinCalls = 100, kMaxCalls = 2000;
constexpr int kRounds = 5;
constexpr double kMinNs = 50, kMaxNs = 100000;
// A raw tracepoint's program runs inline in the syscall path: it can cost tens of ns.
constexpr double kMinTracepointNs = 5;

uint64_t ThreadCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000000 + uint64_t(ts.tv_nsec);
}

// Per call, in this thread's CPU time: a probe's cost is charged to the thread it traps in,
// and CPU time leaves out whatever else runs on the core meanwhile.
double NsPerCall(void (*fn)(), int calls) {
  void (*volatile call)() = fn;  // a call the compiler cannot see through or hoist
  uint64_t t0 = ThreadCpuNs();
  for (int i = 0; i < calls; ++i) call();
  return double(ThreadCpuNs() - t0) / calls;
}

// A syscall that does nothing but enter and leave the kernel.
void Syscall() {
  syscall(SYS_getppid);
}

int CallsPerRound(double warm_ns_per_call) {
  return static_cast<int>(
      std::clamp(kRoundNs / std::max(warm_ns_per_call, 1.0), double(kMinCalls), double(kMaxCalls)));
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Where a function of this process lives in its file, from /proc/self/maps.
StatusOr<std::pair<std::string, uint64_t>> FileOffset(const void* fn) {
  std::ifstream maps("/proc/self/maps");
  if (!maps) return UnavailableError("cannot read /proc/self/maps");
  const uint64_t addr = reinterpret_cast<uint64_t>(fn);
  std::string line;
  while (std::getline(maps, line)) {
    uint64_t start = 0, end = 0, offset = 0;
    char perms[8] = {};
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %*s %*s %n", &start,
                    &end, perms, &offset, &path_at) < 4) {
      continue;
    }
    if (addr < start || addr >= end || perms[2] != 'x' || path_at <= 0) continue;
    std::string path = line.substr(static_cast<size_t>(path_at));
    if (path.empty() || path[0] != '/' || path.find(" (deleted)") != std::string::npos) {
      return FailedPreconditionError("the daemon's code is not in a file it can probe (" + path +
                                     ")");
    }
    return std::make_pair(path, addr - start + offset);
  }
  return NotFoundError("the calibration functions are not in /proc/self/maps");
}

class CalibrationProbes {
 public:
  ~CalibrationProbes() {
    for (bpf_link* l : links_) bpf_link__destroy(l);
    if (skel_) calibrate_bpf__destroy(skel_);
  }
  Status Load() {
    RouteLibbpfLogs();
    skel_ = calibrate_bpf__open();
    if (!skel_) return BpfError(errno, "cannot open the calibration BPF object");
    skel_->rodata->targ_tgid = static_cast<__u32>(getpid());
    if (int err = calibrate_bpf__load(skel_)) {
      return BpfError(err, "cannot load the calibration BPF programs");
    }
    return OkStatus();
  }
  Status AttachTracepoint() {
    bpf_link* link = bpf_program__attach_raw_tracepoint(skel_->progs.ts_calib_tp, "sys_enter");
    if (!link) return BpfError(errno, "attach the calibration raw tracepoint sys_enter");
    links_.push_back(link);
    return OkStatus();
  }
  Status Attach(void (*fn)(), bool retprobe, uint64_t cookie) {
    TS_ASSIGN_OR_RETURN(auto where, FileOffset(reinterpret_cast<const void*>(fn)));
    LIBBPF_OPTS(bpf_uprobe_opts, opts);
    opts.retprobe = retprobe;
    opts.bpf_cookie = cookie;
    bpf_link* link = bpf_program__attach_uprobe_opts(
        retprobe ? skel_->progs.ts_calib_ret : skel_->progs.ts_calib, getpid(), where.first.c_str(),
        where.second, &opts);
    if (!link) return BpfError(errno, "attach the calibration probe in " + where.first);
    links_.push_back(link);
    return OkStatus();
  }
  StatusOr<uint64_t> Hits(uint32_t kind) const {
    int cpus = libbpf_num_possible_cpus();
    if (cpus <= 0) return InternalError("cannot count the possible CPUs");
    std::vector<uint64_t> values(static_cast<size_t>(cpus));
    if (int err = bpf_map__lookup_elem(skel_->maps.hits, &kind, sizeof(kind), values.data(),
                                       values.size() * sizeof(uint64_t), 0)) {
      return BpfError(err, "read the calibration counters");
    }
    uint64_t total = 0;
    for (uint64_t v : values) total += v;
    return total;
  }

 private:
  calibrate_bpf* skel_ = nullptr;
  std::vector<bpf_link*> links_;
};

std::string Figure(double ns) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f ns", ns);
  return buf;
}

// Removing a perf-event uprobe waits for the kernel (~0.1 s each here, one at a time): the
// probes go on a thread of their own, off the start-up path, joined at exit. They sit on
// functions nothing else calls, so until then they cost nothing.
class Teardown {
 public:
  ~Teardown() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  void Later(std::unique_ptr<CalibrationProbes> probes) {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      threads_.emplace_back([p = std::move(probes)]() mutable { p.reset(); });
    } catch (const std::system_error&) {
      // No thread: the lambda (and the probes) were destroyed right here instead.
    }
  }

 private:
  std::mutex mu_;
  std::vector<std::thread> threads_;
};

Teardown& Teardowns() {
  static Teardown t;
  return t;
}

}  // namespace

StatusOr<CalibrationFigures> MeasureProbeCosts() {
  const auto t0 = std::chrono::steady_clock::now();
  CalibrationFigures f;
  {
    auto owned = std::make_unique<CalibrationProbes>();
    CalibrationProbes& probes = *owned;
    struct Handoff {
      std::unique_ptr<CalibrationProbes>& p;
      ~Handoff() { Teardowns().Later(std::move(p)); }
    } handoff{owned};
    TS_RETURN_IF_ERROR(probes.Load());
    TS_RETURN_IF_ERROR(probes.Attach(ts_calib_emulated, false, 0));
    TS_RETURN_IF_ERROR(probes.Attach(ts_calib_stepped, false, TS_COOKIE_SINGLE_STEP));
    TS_RETURN_IF_ERROR(probes.Attach(ts_calib_returning, true, 0));
    // Syscalls without, then with the raw tracepoint (attaching it is machine-wide: last, and
    // only for a few ms).
    std::vector<double> syscall_plain, syscall_traced;
    const int syscalls = CallsPerRound(NsPerCall(Syscall, kWarmupCalls));
    for (int round = 0; round < kRounds; ++round) {
      syscall_plain.push_back(NsPerCall(Syscall, syscalls));
    }
    TS_RETURN_IF_ERROR(probes.AttachTracepoint());
    NsPerCall(Syscall, kWarmupCalls);
    for (int round = 0; round < kRounds; ++round) {
      syscall_traced.push_back(NsPerCall(Syscall, syscalls));
    }
    TS_ASSIGN_OR_RETURN(uint64_t tp_hits, probes.Hits(TS_HIT_TRACEPOINT));
    if (tp_hits < uint64_t(kRounds) * syscalls) {
      return FailedPreconditionError("calibration raw tracepoint ran " + std::to_string(tp_hits) +
                                     " times for " + std::to_string(uint64_t(kRounds) * syscalls) +
                                     " syscalls");
    }
    f.tracepoint_ns = Median(syscall_traced) - Median(syscall_plain);
    const auto t_attached = std::chrono::steady_clock::now();
    // A warm-up (the first hit maps the kernel's out-of-line area), which also sizes the rounds.
    void (*fns[])() = {ts_calib_plain, ts_calib_emulated, ts_calib_stepped, ts_calib_returning};
    int calls[4];
    uint64_t total[4] = {};
    for (int k = 0; k < 4; ++k) {
      calls[k] = CallsPerRound(NsPerCall(fns[k], kWarmupCalls));
      total[k] = kWarmupCalls;
    }
    std::vector<double> per_call[4];
    for (int round = 0; round < kRounds; ++round) {
      for (int k = 0; k < 4; ++k) {
        per_call[k].push_back(NsPerCall(fns[k], calls[k]));
        total[k] += calls[k];
      }
    }
    std::vector<double> emulated, stepped, ret;
    for (int round = 0; round < kRounds; ++round) {
      emulated.push_back(per_call[1][round] - per_call[0][round]);
      stepped.push_back(per_call[2][round] - per_call[0][round]);
      ret.push_back(per_call[3][round] - per_call[0][round]);
    }
    // Every call must have run its program: otherwise the difference is not a probe's cost.
    const std::pair<uint32_t, uint64_t> want[] = {{TS_HIT_UPROBE, total[1]},
                                                  {TS_HIT_UPROBE_SINGLE_STEP, total[2]},
                                                  {TS_HIT_URETPROBE, total[3]}};
    for (auto [kind, n] : want) {
      TS_ASSIGN_OR_RETURN(uint64_t hits, probes.Hits(kind));
      if (hits != n) {
        return FailedPreconditionError("calibration probe kind " + std::to_string(kind) + " ran " +
                                       std::to_string(hits) + " times for " + std::to_string(n) +
                                       " calls");
      }
    }
    spdlog::debug(
        "calibration: load and attach {:.1f} ms, calls {:.1f} ms",
        std::chrono::duration<double, std::milli>(t_attached - t0).count(),
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_attached)
            .count());
    f.emulated_ns = Median(emulated);
    f.single_step_ns = Median(stepped);
    f.uretprobe_ns = Median(ret);
  }  // the probes are removed in the background
  f.elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  for (auto [name, ns] : {std::pair<const char*, double>{"emulated uprobe", f.emulated_ns},
                          {"single-stepped uprobe", f.single_step_ns},
                          {"uretprobe", f.uretprobe_ns}}) {
    if (!(ns >= kMinNs && ns <= kMaxNs)) {
      return FailedPreconditionError(std::string(name) + " measured " + Figure(ns) +
                                     ", outside the sane range 50 ns..100 us");
    }
  }
  if (!(f.tracepoint_ns >= kMinTracepointNs && f.tracepoint_ns <= kMaxNs)) {
    return FailedPreconditionError("raw tracepoint measured " + Figure(f.tracepoint_ns) +
                                   ", outside the sane range 5 ns..100 us");
  }
  return f;
}

budget::Calibration CalibrationFrom(const StatusOr<CalibrationFigures>& figures) {
  budget::Calibration c;
  if (!figures.ok()) {
    c.source = "defaults (docs/PERFORMANCE.md; the start-up measurement failed: " +
               std::string(figures.status().message()) + ")";
    return c;
  }
  c.ns_per_hit[static_cast<int>(budget::HitKind::kUprobe)] = figures->emulated_ns;
  c.ns_per_hit[static_cast<int>(budget::HitKind::kUprobeSingleStep)] = figures->single_step_ns;
  c.ns_per_hit[static_cast<int>(budget::HitKind::kUretprobe)] = figures->uretprobe_ns;
  c.ns_per_hit[static_cast<int>(budget::HitKind::kTracepoint)] = figures->tracepoint_ns;
  c.measured = true;
  c.source = "measured at start-up: emulated uprobe " + Figure(figures->emulated_ns) +
             ", single-stepped uprobe " + Figure(figures->single_step_ns) + ", uretprobe " +
             Figure(figures->uretprobe_ns) + ", raw tracepoint (a syscall through sys_enter) " +
             Figure(figures->tracepoint_ns);
  return c;
}

budget::Calibration CalibrateAtStartup() {
  auto figures = MeasureProbeCosts();
  budget::Calibration c = CalibrationFrom(figures);
  if (figures.ok()) {
    spdlog::info("overhead budget: probe costs {} (calibration took {:.0f} ms)", c.source,
                 figures->elapsed_ms);
  } else {
    spdlog::warn("overhead budget: {}", c.source);
  }
  return c;
}

}  // namespace threadscope::loader
