#include "daemon/engine/live_attach.h"

#include <spdlog/spdlog.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>

#include "daemon/common/text.h"
#include "daemon/engine/target_message.h"
#include "daemon/loader/bpf_tracer.h"
#include "daemon/target/disasm.h"
#include "daemon/target/python_process.h"

namespace threadscope::engine {

namespace {

std::string KernelRelease() {
  utsname u;
  return uname(&u) == 0 ? std::string(u.release) : std::string();
}

// Frames named from the target's memory, read by pid.
class ProcessFrameResolver final : public target::FrameResolver {
 public:
  ProcessFrameResolver(pid_t pid, const target::PyStackSupport& support)
      : memory_(pid), resolver_(memory_, support) {}
  target::ResolvedFrame Resolve(uint64_t code, uint64_t instr) override {
    return resolver_.Resolve(code, instr);
  }

 private:
  target::ProcessMemory memory_;
  target::PyCodeResolver resolver_;
};

// The --gil waits probes of a --gil full trace with an overhead budget (none otherwise, or when
// this build has no probeable slow path: 2.7, a take_gil whose condition wait was not found).
// Sets what the waits programs read (3.6's gil_locked) in `plan`, and says so in its GIL notes.
std::vector<loader::PlannedProbe> PlanGilWaitsSwitch(const target::InspectedProcess& inspected,
                                                     const target::Disassembler& dis,
                                                     const settings::TraceSettings& asked,
                                                     const target::InspectOptions& inspect,
                                                     loader::ProbePlan* plan) {
  if (!asked.gil || asked.gil_mode != settings::GilMode::kFull || asked.overhead_budget <= 0 ||
      !plan->gil.traced || plan->gil_lock_addr != 0) {
    return {};
  }
  settings::TraceSettings waits = asked;
  waits.gil_mode = settings::GilMode::kWaits;
  loader::ProbePlan other = loader::PlanProbes(inspected, dis, waits);
  std::vector<loader::PlannedProbe> out;
  // A plan whose search the work budget cut short is not one to attach later: no switch.
  if (!inspect.budget->status().ok() || other.gil.mode != settings::GilMode::kWaits) return out;
  for (auto& probe : other.probes) {
    if (probe.id == loader::ProbeId::kGilWait || probe.id == loader::ProbeId::kGilWaitReturn) {
      out.push_back(std::move(probe));
    }
  }
  if (out.size() != 2) return {};
  plan->gil_locked_addr = other.gil_locked_addr;
  plan->gil.notes +=
      "; overhead budget: at its gil_waits stage the trace switches to --gil "
      "waits while attached (take_gil's condition wait, " +
      std::to_string(out[0].sites.size()) + " site(s)), and back";
  return out;
}

}  // namespace

StatusOr<std::shared_ptr<LiveSession>> AttachLive(std::string id,
                                                  std::shared_ptr<const target::Process> process,
                                                  const LiveSessionOptions& options,
                                                  const target::ProcFs& proc,
                                                  const Clock& clock) {
  const pid_t pid = process->pid();
  auto exited = [&] {
    return AbortedError("process " + std::to_string(pid) + " exited while attaching");
  };
  // Its credentials as they were when the caller was checked (the handle proves they are this
  // process's): a later change ends the trace.
  auto status = proc.Status(pid);
  if (!status.ok() || !process->Alive()) return exited();
  // A disassembler of its own: capstone handles are not shared between concurrent attaches.
  TS_ASSIGN_OR_RETURN(auto dis, target::Disassembler::Create());
  target::InspectOptions inspect;
  inspect.budget = target::Budget::WithTimeout(std::chrono::milliseconds(options.plan_deadline_ms));
  TS_ASSIGN_OR_RETURN(target::InspectedProcess inspected,
                      target::InspectPythonProcess(proc, *dis, pid, inspect));
  if (!process->Alive()) return exited();
  const settings::TraceSettings& asked = options.trace;
  loader::ProbePlan plan = loader::PlanProbes(inspected, *dis, asked);
  // Planning charged the same budget (through the ELF files): a plan made from a search cut
  // short is not one to trust.
  TS_RETURN_IF_ERROR(inspect.budget->status());
  // --gil full under an overhead budget: the --gil waits probes too, planned now (not attached)
  // for the budget's gil_waits stage to switch to while attached.
  std::vector<loader::PlannedProbe> gil_waits =
      PlanGilWaitsSwitch(inspected, *dis, asked, inspect, &plan);

  loader::BpfTracerOptions bpf_options;
  bpf_options.tgid = pid;
  bpf_options.ring_buffer_bytes = asked.ring_buffer_bytes;
  bpf_options.lockobject_lock_offset = plan.lockobject_lock_offset;
  bpf_options.trace_all_sems = plan.trace_all_sems;
  bpf_options.py_true = plan.py_true;
  bpf_options.py_false = plan.py_false;
  bpf_options.gil_lock_addr = plan.gil_lock_addr;
  bpf_options.gil_locked_addr = plan.gil_locked_addr;  // PlanGilWaitsSwitch may set it
  bpf_options.sem_kinds = plan.sem_kinds;
  bpf_options.lock_mutex_off = plan.lock_mutex_off;
  bpf_options.ob_type_off = plan.ob_type_off;
  bpf_options.ob_mutex_off = plan.ob_mutex_off;
  bpf_options.free_threaded = plan.free_threaded;
  bpf_options.rlock_owner_off = plan.rlock_owner_off;
  bpf_options.rlock_depth_off = plan.rlock_depth_off;
  bpf_options.rlock_depth_is_level = plan.rlock_depth_is_level;
  if (plan.stacks) {
    bpf_options.py_layout = plan.stacks->bpf;
    bpf_options.stack_frames = plan.stack_frames;
    bpf_options.stack_frames_acquire = plan.stack_frames_acquire;
    bpf_options.gil_stack_frames = plan.gil_stack_frames;
    bpf_options.gil_stack_threshold_ns = plan.gil_stack_threshold_ns;
  }

  TS_ASSIGN_OR_RETURN(auto tracer, loader::BpfTracer::Load(bpf_options));
  auto attached = tracer->Attach(plan);
  if (!attached.ok()) {
    if (!process->Alive()) return exited();
    return attached.status();
  }
  if (!gil_waits.empty()) tracer->PrepareGilSwitch(plan, std::move(gil_waits));

  TargetFacts facts;
  facts.pid = pid;
  facts.attached_ns = clock.MonotonicNowNs();
  facts.realtime_offset_ns = RealtimeMinusMonotonicNs(clock);
  facts.kernel_release = KernelRelease();
  facts.settings = asked;
  v1::Target t = BuildTarget(inspected.info, plan, *attached, facts);

  // Still the process that was checked: its pid was not reused while we attached.
  if (!process->Alive()) return exited();
  LiveSources sources;
  sources.records = std::move(tracer);
  sources.process = process;
  sources.attached_status = *status;
  if (plan.stacks) sources.frames = std::make_unique<ProcessFrameResolver>(pid, *plan.stacks);
  if (plan.type_type && plan.locks != loader::LockMode::kOff) {
    sources.memory = std::make_unique<target::ProcessMemory>(pid);
    sources.type_type = plan.type_type;
    sources.ob_type_off = plan.ob_type_off;
    sources.tp_name_off = plan.tp_name_off;
  }
  TS_ASSIGN_OR_RETURN(auto session, LiveSession::Start(std::move(id), std::move(t),
                                                       std::move(sources), options, proc, clock));
  spdlog::info("attached to pid {} ({}, CPython {})", pid,
               Printable(inspected.info.interpreter.path), inspected.info.version.ToString());
  return session;
}

StatusOr<SessionManager::Attacher> BpfAttacher() {
  TS_ASSIGN_OR_RETURN(auto dis, target::Disassembler::Create());
  (void)dis;
  return SessionManager::Attacher(&AttachLive);
}

}  // namespace threadscope::engine
