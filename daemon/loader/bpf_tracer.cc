#include "daemon/loader/bpf_tracer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <string_view>
#include <map>
#include <chrono>
#include <mutex>
#include <system_error>
#include <thread>

#include "probes/threadscope_bpf.skel.h"
#include "probes/threadscope_events.h"

namespace threadscope::loader {

namespace {

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  // The verifier's log comes as one message: big enough to show where it refused.
  static thread_local char buf[1 << 16];
  vsnprintf(buf, sizeof(buf), format, args);
  size_t n = strlen(buf);
  while (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
  if (level == LIBBPF_WARN) {
    spdlog::debug("libbpf: {}", buf);  // attach failures are reported per probe, not here
  } else {
    spdlog::trace("libbpf: {}", buf);
  }
  return 0;
}

}  // namespace

void RouteLibbpfLogs() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(LibbpfPrint); });
}

Status BpfError(int err, const std::string& what) {
  err = err < 0 ? -err : err;
  if ((err == EPERM || err == EACCES) && geteuid() == 0) {
    // As root this is the kernel refusing (lockdown, a program type it does not allow, or the
    // verifier), not missing privileges.
    return FailedPreconditionError(what + ": " + std::strerror(err) +
                                   " (the kernel refused it although we run as root; "
                                   "--log-level debug shows libbpf's reason)");
  }
  if (err == EPERM || err == EACCES) {
    return PermissionDeniedError(what + ": " + std::strerror(err) +
                                 " (loading BPF needs root, or CAP_BPF and CAP_PERFMON; run "
                                 "threadscope as root or use threadscoped)");
  }
  return ErrnoToStatus(err, what);
}

namespace {

bool IsPowerOfTwo(uint32_t v) { return v && !(v & (v - 1)); }

// uprobe_multi (Linux 6.6) postdates Debian 12's UAPI headers and libbpf 1.1: the attach type
// value and the link_create layout below are the kernel's (checked against this kernel's BTF).
constexpr uint32_t kBpfTraceUprobeMulti = 48;
constexpr uint32_t kBpfFUprobeMultiReturn = 1;

struct UprobeMultiLinkAttr {
  uint32_t prog_fd;
  uint32_t target_fd;
  uint32_t attach_type;
  uint32_t flags;
  uint64_t path;
  uint64_t offsets;
  uint64_t ref_ctr_offsets;
  uint64_t cookies;
  uint32_t cnt;
  uint32_t multi_flags;
  uint32_t pid;
  uint32_t pad;
};
static_assert(sizeof(UprobeMultiLinkAttr) == 64);

int CreateUprobeMultiLink(int prog_fd, const char* path, const uint64_t* offsets,
                          const uint64_t* cookies, uint32_t count, bool retprobe, pid_t pid) {
  UprobeMultiLinkAttr attr{};
  attr.prog_fd = static_cast<uint32_t>(prog_fd);
  attr.attach_type = kBpfTraceUprobeMulti;
  attr.path = reinterpret_cast<uint64_t>(path);
  attr.offsets = reinterpret_cast<uint64_t>(offsets);
  attr.cookies = reinterpret_cast<uint64_t>(cookies);
  attr.cnt = count;
  attr.multi_flags = retprobe ? kBpfFUprobeMultiReturn : 0;
  attr.pid = static_cast<uint32_t>(pid);
  return static_cast<int>(syscall(__NR_bpf, BPF_LINK_CREATE, &attr, sizeof(attr)));
}

// libbpf's own probe: a uprobe_multi link on "/" fails with EBADF only where the kernel knows
// the attach type.
bool KernelHasUprobeMulti() {
  struct bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  LIBBPF_OPTS(bpf_prog_load_opts, opts);
  opts.expected_attach_type = static_cast<enum bpf_attach_type>(kBpfTraceUprobeMulti);
  int prog = bpf_prog_load(BPF_PROG_TYPE_KPROBE, nullptr, "GPL", insns, 2, &opts);
  if (prog < 0) return false;
  uint64_t offset = 0;
  int link = CreateUprobeMultiLink(prog, "/", &offset, nullptr, 1, false, 0);
  int err = errno;
  if (link >= 0) close(link);
  close(prog);
  return link < 0 && err == EBADF;
}

// The one mapping from the catalogue's programs to the skeleton's: a program the BPF object
// does not have is a compile error here.
bpf_program* Program(threadscope_bpf* skel, BpfProgram program) {
  switch (program) {
#define TS_BPF_PROGRAM_FIELD(id, name) \
  case BpfProgram::id: return skel->progs.name;
    TS_BPF_PROGRAMS(TS_BPF_PROGRAM_FIELD)
#undef TS_BPF_PROGRAM_FIELD
  }
  return nullptr;
}

// A site's cookie: the probe's, plus whether the kernel single-steps the probed instruction
// (the budget counts those hits apart: they cost several times an emulated one).
uint64_t SiteCookie(const PlannedProbe& probe, const ProbeSite& site) {
  if (probe.kind == ProbeKind::kUprobe &&
      site.site_kind == target::UprobeSiteKind::kSingleStepped) {
    return probe.cookie | TS_COOKIE_SINGLE_STEP;
  }
  return probe.cookie;
}

bool IsUprobeProgram(bpf_program* prog) {
  const char* sec = bpf_program__section_name(prog);
  return sec && (std::strncmp(sec, "uprobe", 6) == 0 || std::strncmp(sec, "uretprobe", 9) == 0);
}

}  // namespace

StatusOr<std::unique_ptr<BpfTracer>> BpfTracer::Load(const BpfTracerOptions& options) {
  RouteLibbpfLogs();
  if (options.ring_buffer_bytes < (64u << 10) || !IsPowerOfTwo(options.ring_buffer_bytes)) {
    return InvalidArgumentError("ring buffer size must be a power of two of at least 64 KiB, got " +
                                std::to_string(options.ring_buffer_bytes));
  }
  std::unique_ptr<BpfTracer> t(new BpfTracer());
  t->options_ = options;
  t->skel_ = threadscope_bpf__open();
  if (!t->skel_) return BpfError(errno, "cannot open the BPF object");
  t->skel_->rodata->targ_tgid = static_cast<__u32>(options.tgid);
  // Wake the consumer early once a quarter of a small ring is used (a threshold above the
  // ring's size would never fire and the ring would overflow between timed drains).
  t->skel_->rodata->wakeup_bytes =
      std::min<uint64_t>(options.wakeup_bytes, options.ring_buffer_bytes / 4);
  t->skel_->rodata->trace_all_sems = options.trace_all_sems ? 1 : 0;
  t->skel_->rodata->lockobject_lock_offset = options.lockobject_lock_offset;
  t->skel_->rodata->py_true = options.py_true;
  t->skel_->rodata->py_false = options.py_false;
  t->skel_->rodata->gil_lock_addr = options.gil_lock_addr;
  t->skel_->rodata->gil_locked_addr = options.gil_locked_addr;
  t->skel_->rodata->sem_kinds = options.sem_kinds;
  t->skel_->rodata->lock_mutex_off = options.lock_mutex_off;
  t->skel_->rodata->ob_type_off = options.ob_type_off;
  t->skel_->rodata->ob_mutex_off = options.ob_mutex_off;
  t->skel_->rodata->free_threaded = options.free_threaded ? 1 : 0;
  t->skel_->rodata->rlock_owner_off = options.rlock_owner_off;
  t->skel_->rodata->rlock_depth_off = options.rlock_depth_off;
  t->skel_->rodata->rlock_depth_is_level = options.rlock_depth_is_level ? 1 : 0;
  t->uprobe_multi_ = KernelHasUprobeMulti();
  if (t->uprobe_multi_) {
    bpf_program* prog;
    bpf_object__for_each_program(prog, t->skel_->obj) {
      if (IsUprobeProgram(prog)) {
        bpf_program__set_expected_attach_type(
            prog, static_cast<enum bpf_attach_type>(kBpfTraceUprobeMulti));
      }
    }
  }
  std::memcpy(const_cast<ts_py_layout*>(&t->skel_->rodata->py_layout), &options.py_layout,
              sizeof(ts_py_layout));
  t->skel_->rodata->stack_frames = options.stack_frames;
  t->skel_->rodata->stack_frames_acquire = options.stack_frames_acquire;
  t->skel_->rodata->gil_stack_frames = options.gil_stack_frames;
  t->skel_->rodata->gil_stack_threshold_ns = options.gil_stack_threshold_ns;
  if (int err = bpf_map__set_max_entries(t->skel_->maps.events, options.ring_buffer_bytes)) {
    return BpfError(err, "cannot size the ring buffer");
  }
  if (int err = threadscope_bpf__load(t->skel_)) {
    return BpfError(err, "cannot load the BPF programs");
  }
  t->ring_ = ring_buffer__new(
      bpf_map__fd(t->skel_->maps.events),
      [](void* ctx, void* data, size_t size) -> int {
        auto* self = static_cast<BpfTracer*>(ctx);
        if (self->current_callback_) {
          (*self->current_callback_)(static_cast<const uint8_t*>(data), size);
        }
        return 0;
      },
      t.get(), nullptr);
  if (!t->ring_) return BpfError(errno, "cannot map the ring buffer");
  return t;
}

BpfTracer::~BpfTracer() {
  DetachAll();
  if (ring_) ring_buffer__free(ring_);
  if (skel_) threadscope_bpf__destroy(skel_);
}

void BpfTracer::DetachAll() {
  CloseLinks(std::move(links_));
  links_.clear();
}

void BpfTracer::CloseLinks(std::vector<Link> links) {
  // Each link's teardown waits for an SRCU grace period. Closed from parallel threads, the waits
  // of uprobe_multi links overlap: a default trace's 19 take 42-66 ms instead of 0.6-0.7 s one
  // after another. Perf-event uprobes (kernels before 6.6) are torn down one at a time in the
  // kernel whatever we do: 53 links, 3.9-4.1 s in parallel, 4.5 s serially (docs/DESIGN.md §5,
  // kernel 6.18).
  auto t0 = std::chrono::steady_clock::now();
  size_t n = links.size();
  std::vector<std::thread> workers;
  std::atomic<size_t> next{0};
  size_t threads = std::min<size_t>(n, 32);
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      if (links[i].link) bpf_link__destroy(links[i].link);
      if (links[i].fd >= 0) close(links[i].fd);
    }
  };
  for (size_t w = 0; w < threads; ++w) {
    try {
      workers.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // out of threads (a client holding many streams): the rest is done right here
    }
  }
  work();
  for (auto& t : workers) t.join();
  if (n) {
    spdlog::debug("detached {} links in {} ms", n,
                  std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count());
  }
}

Status BpfTracer::CheckProgramNames() {
  RouteLibbpfLogs();
  threadscope_bpf* skel = threadscope_bpf__open();
  if (!skel) return BpfError(errno, "cannot open the BPF object");
  Status s = OkStatus();
  for (BpfProgram program : kAllBpfPrograms) {
    const char* want = BpfProgramName(program);
    bpf_program* prog = Program(skel, program);
    if (!prog || std::string_view(bpf_program__name(prog)) != want) {
      s = InternalError(std::string("the skeleton's program for ") + want + " is " +
                        (prog ? bpf_program__name(prog) : "missing"));
      break;
    }
  }
  threadscope_bpf__destroy(skel);
  return s;
}

Status BpfTracer::SetAcquireStacks(bool on) {
  if (!skel_ || !skel_->bss) return FailedPreconditionError("not loaded");
  skel_->bss->budget_skip_acquire_stacks = on ? 0 : 1;
  return OkStatus();
}

StatusOr<BpfTracer::Link> BpfTracer::AttachSite(const PlannedProbe& probe,
                                                const ProbeSite* site) {
  bpf_program* prog = Program(skel_, probe.program);
  if (!prog) return InternalError(std::string("no BPF program for ") + std::string(probe.name()));
  bpf_link* link = nullptr;
  if (probe.kind == ProbeKind::kRawTracepoint) {
    link = bpf_program__attach_raw_tracepoint(prog, std::string(probe.tracepoint()).c_str());
  } else {
    LIBBPF_OPTS(bpf_uprobe_opts, opts);
    opts.retprobe = probe.kind == ProbeKind::kUretprobe;
    opts.bpf_cookie = SiteCookie(probe, *site);
    link = bpf_program__attach_uprobe_opts(prog, options_.tgid, site->host_path.c_str(),
                                           site->file_offset, &opts);
  }
  if (!link) {
    int err = errno;
    return BpfError(err, "attach " + std::string(probe.name()) +
                             (site ? " at " + site->location
                                   : " to " + std::string(probe.tracepoint())));
  }
  return Link{link, -1, probe.id};
}

StatusOr<BpfTracer::Link> BpfTracer::AttachMulti(const PlannedProbe& probe, const std::string& path,
                                                 const std::vector<uint64_t>& offsets,
                                                 const std::vector<const ProbeSite*>& sites) {
  bpf_program* prog = Program(skel_, probe.program);
  if (!prog) return InternalError(std::string("no BPF program for ") + std::string(probe.name()));
  std::vector<uint64_t> cookies;
  for (const ProbeSite* site : sites) cookies.push_back(SiteCookie(probe, *site));
  int fd = CreateUprobeMultiLink(bpf_program__fd(prog), path.c_str(), offsets.data(),
                                 cookies.data(), static_cast<uint32_t>(offsets.size()),
                                 probe.kind == ProbeKind::kUretprobe, options_.tgid);
  if (fd < 0) return BpfError(errno, "attach " + std::string(probe.name()) + " in " + path);
  return Link{nullptr, fd, probe.id};
}

Status BpfTracer::AttachUprobes(const PlannedProbe& probe, ProbeAttachResult* r) {
  std::string first_error;
  if (uprobe_multi_) {
    // One link per binary: all of a probe's sites register and unregister together.
    std::map<std::string, std::vector<uint64_t>> by_binary;
    std::map<std::string, std::vector<const ProbeSite*>> sites_by_binary;
    for (const auto& site : probe.sites) {
      by_binary[site.host_path].push_back(site.file_offset);
      sites_by_binary[site.host_path].push_back(&site);
    }
    for (const auto& [path, offsets] : by_binary) {
      auto link = AttachMulti(probe, path, offsets, sites_by_binary[path]);
      if (link.ok()) {
        links_.push_back(*link);
        r->sites_attached += offsets.size();
      } else if (first_error.empty()) {
        first_error = link.status().message();
      }
    }
  } else {
    for (const auto& site : probe.sites) {
      auto link = AttachSite(probe, &site);
      if (link.ok()) {
        links_.push_back(*link);
        ++r->sites_attached;
      } else if (first_error.empty()) {
        first_error = link.status().message();
      }
    }
  }
  r->attached = r->sites_attached > 0;
  if (!r->attached) {
    r->reason = first_error.empty() ? "no site" : first_error;
  } else if (r->sites_attached < probe.sites.size()) {
    r->reason = std::to_string(r->sites_attached) + " of " + std::to_string(probe.sites.size()) +
                " sites attached; first failure: " + first_error;
  } else {
    r->reason = probe.sites.size() == 1 ? probe.sites[0].Describe()
                                        : std::to_string(probe.sites.size()) + " sites, first: " +
                                              probe.sites[0].Describe();
  }
  return OkStatus();
}

StatusOr<std::vector<ProbeAttachResult>> BpfTracer::Attach(const ProbePlan& plan) {
  KeepForDutyCycle(plan);  // while the plan's binaries are open (bpf_duty_cycle.cc)
  std::vector<ProbeAttachResult> results;
  for (const auto& probe : plan.probes) {
    ProbeAttachResult r;
    r.id = probe.id;
    if (!probe.unavailable.empty()) {
      r.reason = probe.unavailable;
    } else if (probe.kind == ProbeKind::kRawTracepoint) {
      auto link = AttachSite(probe, nullptr);
      if (link.ok()) {
        links_.push_back(*link);
        r.attached = true;
        r.sites_attached = 1;
        r.reason = "raw tracepoint " + std::string(probe.tracepoint());
      } else {
        r.reason = link.status().message();
      }
    } else {
      TS_RETURN_IF_ERROR(AttachUprobes(probe, &r));
    }
    if (probe.required() && !r.attached) {
      DetachAll();
      std::string what = "required probe " + std::string(probe.name()) + " failed: " + r.reason;
      if (r.reason.find("Permission denied") != std::string::npos ||
          r.reason.find("Operation not permitted") != std::string::npos) {
        return PermissionDeniedError(what);
      }
      return FailedPreconditionError(what);
    }
    results.push_back(std::move(r));
  }
  return results;
}

StatusOr<size_t> BpfTracer::Poll(int timeout_ms, const RecordCallback& callback) {
  current_callback_ = &callback;
  int n = ring_buffer__poll(ring_, timeout_ms);
  // With BPF_RB_NO_WAKEUP records arrive without an epoll event: drain regardless.
  int m = n >= 0 || n == -EINTR ? ring_buffer__consume(ring_) : n;
  current_callback_ = nullptr;
  if (m < 0 && m != -EINTR) return BpfError(m, "ring buffer");
  return static_cast<size_t>((n > 0 ? n : 0) + (m > 0 ? m : 0));
}

StatusOr<size_t> BpfTracer::Drain(const RecordCallback& callback) {
  current_callback_ = &callback;
  int m = ring_buffer__consume(ring_);
  current_callback_ = nullptr;
  if (m < 0) return BpfError(m, "ring buffer");
  return static_cast<size_t>(m);
}

uint64_t BpfTracer::Drops(uint32_t source) const {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0 || source >= TS_DROP_SLOTS) return 0;
  std::vector<uint64_t> values(static_cast<size_t>(cpus));
  if (bpf_map__lookup_elem(skel_->maps.drops, &source, sizeof(source), values.data(),
                           values.size() * sizeof(uint64_t), 0) != 0) {
    return 0;
  }
  uint64_t total = 0;
  for (uint64_t v : values) total += v;
  return total;
}

StatusOr<ProbeHitCounts> BpfTracer::ProbeHits() const {
  static_assert(TS_HIT_KINDS == std::tuple_size_v<ProbeHitCounts>);
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return InternalError("cannot count the possible CPUs");
  ProbeHitCounts counts{};
  std::vector<uint64_t> values(static_cast<size_t>(cpus));
  for (uint32_t kind = 0; kind < TS_HIT_KINDS; ++kind) {
    if (int err = bpf_map__lookup_elem(skel_->maps.hits, &kind, sizeof(kind), values.data(),
                                       values.size() * sizeof(uint64_t), 0)) {
      return BpfError(err, "read the probe hit counters");
    }
    for (uint64_t v : values) counts[kind] += v;
  }
  return counts;
}

}  // namespace threadscope::loader
