// The BPF side of one traced process: the loaded object, one link per probe site, and the ring
// buffer they write to. RAII: destroying a BpfTracer detaches every probe and frees every map,
// and because links are file descriptors, a process that dies also leaves nothing attached.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/loader/probe_plan.h"
#include "daemon/loader/record_source.h"

struct threadscope_bpf;
struct ring_buffer;
struct bpf_link;

namespace threadscope::loader {

struct BpfTracerOptions {
  pid_t tgid = 0;
  uint32_t ring_buffer_bytes = 16u << 20;
  // Force a consumer wakeup once this many bytes wait; below it the consumer drains on a timer.
  uint64_t wakeup_bytes = 1u << 20;
  bool trace_all_sems = false;
  uint32_t lockobject_lock_offset = 16;
  uint64_t py_true = 0;
  uint64_t py_false = 0;
  uint64_t gil_lock_addr = 0;  // 2.7: where `interpreter_lock` lives in the target
  uint64_t gil_locked_addr = 0;  // --gil waits, 3.6: where the static `gil_locked` lives
  // Lock objects (ProbePlan's fields of the same names).
  uint8_t sem_kinds = (1 << TS_LOCK_LOCK) | (1 << TS_LOCK_RLOCK);
  uint32_t lock_mutex_off = 16;
  uint32_t ob_type_off = 8;
  uint32_t ob_mutex_off = 10;
  bool free_threaded = false;
  uint32_t rlock_owner_off = 0;
  uint32_t rlock_depth_off = 0;
  bool rlock_depth_is_level = false;
  // Python stacks: where to find frames (interp_head_addr 0 = off) and how many to record.
  ts_py_layout py_layout{};
  uint8_t stack_frames = 0;          // at lock waits and lock creation
  uint8_t stack_frames_acquire = 0;  // at every acquire (--locks=all)
  uint8_t gil_stack_frames = 0;      // at take_gil returns that waited gil_stack_threshold_ns
  uint64_t gil_stack_threshold_ns = 1000000;
};

// libbpf's messages go to spdlog (its print callback is process-wide: set once, here).
void RouteLibbpfLogs();
// A libbpf error as a Status that says what to do (EPERM without root: the capabilities).
Status BpfError(int err, const std::string& what);

// The ring buffer is this tracer's RecordSource.
class BpfTracer final : public RecordSource {
 public:
  // Opens and loads the BPF object for one target. PermissionDenied without CAP_BPF/root.
  static StatusOr<std::unique_ptr<BpfTracer>> Load(const BpfTracerOptions& options);
  ~BpfTracer();
  BpfTracer(const BpfTracer&) = delete;
  BpfTracer& operator=(const BpfTracer&) = delete;

  // Attaches every placeable probe of the plan; one result per planned probe, in plan order.
  // A required probe that cannot attach makes the whole call fail (and detach everything).
  StatusOr<std::vector<ProbeAttachResult>> Attach(const ProbePlan& plan);

  // Waits up to timeout_ms for a wakeup, then drains every record available. Returns how many
  // records were delivered.
  StatusOr<size_t> Poll(int timeout_ms, const RecordCallback& callback) override;
  // Drains without waiting.
  StatusOr<size_t> Drain(const RecordCallback& callback) override;

  // Records lost in the kernel, by ts_lost_source, summed over CPUs.
  uint64_t Drops(uint32_t source) const override;

  // Opens the skeleton (no kernel objects) and checks that every BpfProgram names its
  // program: the catalogue's docs and the loader agree. For tests.
  static Status CheckProgramNames();

  // Removes every probe now; the ring stays readable for a final Drain().
  void DetachAll() override;
  size_t attached_links() const { return links_.size(); }
  // A flag in the program's .bss (mmapped: a store, no syscall); the acquire program reads it.
  Status SetAcquireStacks(bool on) override;
  // The overhead budget's gil_waits stage on a --gil full trace: `waits` (the --gil waits set,
  // planned at attach, not attached) and the attached plan's every-take-and-drop set become two
  // groups of links, switched by SetGilWaitsOnly. Call after Attach.
  void PrepareGilSwitch(const ProbePlan& plan, std::vector<PlannedProbe> waits);
  // Attaches the incoming group (kept silent by a .bss flag), flips the flags (for a few
  // nanoseconds neither group reports, never both), then detaches the outgoing group: no gap in
  // the probes, no take reported twice. The ring stays.
  Status SetGilWaitsOnly(bool on) override;
  // The per-CPU `hits` map summed over CPUs.
  StatusOr<ProbeHitCounts> ProbeHits() const override;
  // The overhead budget's duty cycle: detaches the GIL and lock links (lock creation and free,
  // the GIL's free-threaded switches and thread lifecycle stay) and attaches them again from the
  // plan (the GIL group that was attached at the pause). The ring stays. bpf_duty_cycle.cc.
  Status SetTracingPaused(bool paused) override;
  // True when uprobes are attached as uprobe_multi links (Linux 6.6+): one link per program
  // and binary, registered and unregistered in batches.
  bool uses_uprobe_multi() const { return uprobe_multi_; }

 private:
  BpfTracer() = default;
  // A link is either libbpf's (perf-event uprobes, raw tracepoints) or a raw link fd
  // (uprobe_multi, which libbpf 1.1 cannot create).
  struct Link {
    bpf_link* link = nullptr;
    int fd = -1;
    ProbeId id = ProbeId::kThreadStart;  // the planned probe it serves (groups detach by id)
  };
  // Destroys `links` (in parallel: each teardown waits for an SRCU grace period).
  static void CloseLinks(std::vector<Link> links);
  StatusOr<Link> AttachSite(const PlannedProbe& probe, const ProbeSite* site);
  StatusOr<Link> AttachMulti(const PlannedProbe& probe, const std::string& path,
                             const std::vector<uint64_t>& offsets,
                             const std::vector<const ProbeSite*>& sites);
  Status AttachUprobes(const PlannedProbe& probe, ProbeAttachResult* result);

  BpfTracerOptions options_;
  threadscope_bpf* skel_ = nullptr;
  ring_buffer* ring_ = nullptr;
  bool uprobe_multi_ = false;
  std::vector<Link> links_;
  // PrepareGilSwitch: the two GIL groups, and which one is attached. Their sites' binaries
  // are held open here (the planner's paths name the inspection's descriptors, closed after
  // the attach): closed with the tracer.
  std::vector<PlannedProbe> gil_full_, gil_waits_;
  std::shared_ptr<std::vector<int>> gil_binaries_;
  bool gil_waits_only_ = false;
  // Attach's probes that the duty cycle pauses, their binaries held open (the planner's paths
  // name the inspection's descriptors, closed after the attach), and the probes it detached.
  void KeepForDutyCycle(const ProbePlan& plan);
  std::vector<PlannedProbe> planned_;
  std::shared_ptr<std::vector<int>> planned_binaries_;
  std::vector<ProbeId> paused_ids_;
  bool paused_ = false;
  const RecordCallback* current_callback_ = nullptr;
};

}  // namespace threadscope::loader
