#include "daemon/engine/live_session.h"

#include <spdlog/spdlog.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "daemon/common/text.h"
#include "daemon/engine/snapshot_builder.h"
#include "daemon/loader/capabilities.h"
#include "daemon/loader/probe_plan.h"
#include "daemon/model/record_builder.h"
#include "daemon/target/python_process.h"
#include "probes/threadscope_events.h"

namespace threadscope::engine {

namespace {

std::string KernelRelease() {
  utsname u;
  return uname(&u) == 0 ? std::string(u.release) : std::string();
}

// Every string here can come from the target's files (paths, symbol names): proto3 strings must
// be valid UTF-8, or the message fails to parse for every client that lists the target.
v1::Probe ToProto(const loader::PlannedProbe& planned, const loader::ProbeAttachResult& result) {
  using model::ToValidUtf8;
  v1::Probe p;
  p.set_name(std::string(planned.name()));
  p.set_attached(result.attached);
  p.set_reason(ToValidUtf8(result.reason));
  p.set_purpose(ToValidUtf8(planned.purpose));
  p.set_kind(loader::ProbeKindName(planned.kind));
  p.set_required(planned.required());
  for (const auto& feed : loader::CapabilityNames(planned.feeds)) p.add_feeds(feed);
  p.set_feature(loader::FeatureName(planned.spec().feature));
  for (const auto& site : planned.sites) {
    auto* s = p.add_sites();
    s->set_binary(ToValidUtf8(site.binary));
    s->set_file_offset(site.file_offset);
    s->set_location(ToValidUtf8(site.location));
    s->set_resolved_by(ToValidUtf8(site.resolved_by));
    s->set_instruction(ToValidUtf8(site.instruction));
    s->set_execution(target::UprobeSiteKindName(site.site_kind));
  }
  return p;
}

}  // namespace

LiveSession::LiveSession(std::string id, v1::Target target, const target::ProcFs& proc,
                         LiveSessionOptions options,
                         std::shared_ptr<const target::ProcessHandle> process)
    : Session(std::move(id), std::move(target)),
      proc_(proc),
      options_(std::move(options)),
      process_(std::move(process)) {}

LiveSession::~LiveSession() {
  Status s = Detach();
  if (!s.ok()) spdlog::warn("detach of {} on shutdown: {}", id(), s.ToString());
}

StatusOr<std::shared_ptr<LiveSession>> LiveSession::Attach(
    std::string id, std::shared_ptr<const target::ProcessHandle> process,
    const LiveSessionOptions& options, const target::ProcFs& proc) {
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
  loader::PlanOptions plan_options;
  plan_options.locks = options.locks;
  plan_options.stack_frames = options.stack_frames;
  plan_options.acquire_stack_frames = options.acquire_stack_frames;
  plan_options.gil = options.gil;
  loader::ProbePlan plan = loader::PlanProbes(inspected, *dis, plan_options);
  // Planning charged the same budget (through the ELF files): a plan made from a search cut
  // short is not one to trust.
  TS_RETURN_IF_ERROR(inspect.budget->status());

  loader::BpfTracerOptions bpf_options;
  bpf_options.tgid = pid;
  bpf_options.ring_buffer_bytes = options.ring_buffer_bytes;
  bpf_options.lockobject_lock_offset = plan.lockobject_lock_offset;
  bpf_options.trace_all_sems = plan.trace_all_sems;
  bpf_options.py_true = plan.py_true;
  bpf_options.py_false = plan.py_false;
  bpf_options.gil_lock_addr = plan.gil_lock_addr;
  if (plan.stacks) {
    bpf_options.py_layout = plan.stacks->bpf;
    bpf_options.stack_frames = plan.stack_frames;
    bpf_options.stack_frames_acquire = plan.stack_frames_acquire;
    // 2.7's GIL probes are its lock functions' (no stacks there: no frame layout either).
    if (plan.gil_lock_addr == 0) {
      bpf_options.gil_stack_frames = std::min<uint8_t>(options.gil_stack_frames, TS_PY_MAX_FRAMES);
      bpf_options.gil_stack_threshold_ns = options.gil_stack_threshold_ns;
    }
  }

  TS_ASSIGN_OR_RETURN(auto tracer, loader::BpfTracer::Load(bpf_options));
  auto attached = tracer->Attach(plan);
  if (!attached.ok()) {
    if (!process->Alive()) return exited();
    return attached.status();
  }

  const target::PythonProcess& info = inspected.info;
  v1::Target t;
  t.set_pid(pid);
  t.set_ns_pid(info.ns_pid);
  t.set_executable(model::ToValidUtf8(info.executable));
  t.set_command_line(model::ToValidUtf8(info.command_line));
  t.set_interpreter(model::ToValidUtf8(info.interpreter.path));
  t.set_python_version(info.version.ToString());
  t.set_symbols(info.full_symbols ? v1::SYMBOL_LEVEL_FULL : v1::SYMBOL_LEVEL_DYNAMIC_ONLY);
  t.set_free_threaded(info.free_threaded);
  t.set_other_mount_namespace(info.other_mount_namespace);
  t.set_state(v1::TARGET_STATE_ATTACHED);
  t.set_attached_ns(target::MonotonicNowNs());
  t.set_realtime_offset_ns(target::RealtimeMinusMonotonicNs());
  t.set_kernel_release(KernelRelease());
  // 2.7 has no lock tracing (the plan says why): its target reports "off".
  t.set_lock_mode(plan.trace_all_sems ? loader::LockModeName(plan.locks) : "off");
  t.set_lock_threshold_ns(options.lock_threshold_ns);
  v1::PythonStacks* stacks = t.mutable_python_stacks();
  stacks->set_enabled(plan.stacks.has_value());
  if (plan.stacks) {
    stacks->set_layout_source(plan.stacks->layout.source);
    stacks->set_frames(plan.stack_frames);
    stacks->set_frames_acquire(plan.stack_frames_acquire);
    if (options.gil && bpf_options.gil_stack_frames) {
      stacks->set_frames_gil(bpf_options.gil_stack_frames);
      stacks->set_gil_threshold_ns(bpf_options.gil_stack_threshold_ns);
    }
  } else {
    stacks->set_reason(model::ToValidUtf8(plan.stacks_unavailable));
  }
  for (const auto& [k, v] : options.labels) (*t.mutable_labels())[k] = v;
  for (size_t i = 0; i < plan.probes.size(); ++i) {
    *t.add_probes() = ToProto(plan.probes[i], (*attached)[i]);
  }
  // What the model can know: what the plan placed, less what the kernel refused.
  const loader::ModelCapabilities can = loader::DeriveCapabilities(plan, *attached);
  v1::GilTracing* gil = t.mutable_gil();
  gil->set_enabled(can.gil.traced);
  gil->set_reason(model::ToValidUtf8(can.gil.unavailable));
  gil->set_take_functions(static_cast<uint32_t>(can.gil.take_functions));
  gil->set_drop_functions(static_cast<uint32_t>(can.gil.drop_functions));
  gil->set_inlined_drops(static_cast<uint32_t>(can.gil.inlined_drops));
  gil->set_drops_complete(can.gil.drops_complete);
  gil->set_forced_known(can.gil.forced_known);
  gil->set_notes(model::ToValidUtf8(can.gil.notes));
  t.set_join_visibility(ToProto(can.threads.joins));
  t.set_body_done_visible(can.threads.body_done_visible);

  // Still the process that was checked: its pid was not reused while we attached.
  if (!process->Alive()) return exited();
  std::shared_ptr<LiveSession> s(
      new LiveSession(std::move(id), std::move(t), proc, options, process));
  s->attached_status_ = *status;
  s->tracer_ = std::move(tracer);
  if (plan.stacks) {
    s->memory_ = std::make_unique<target::ProcessMemory>(pid);
    s->resolver_ = std::make_unique<target::PyCodeResolver>(*s->memory_, *plan.stacks);
  }
  s->InjectMark(TS_MARK_ATTACHED);
  // Threads alive now: after the probes, so a thread is either in the scan or seen starting.
  s->DrainRing();
  s->InjectPreexistingThreads();
  try {
    s->consumer_ = std::thread([raw = s.get()] { raw->Run(); });
  } catch (const std::system_error& e) {
    return ResourceExhaustedError(std::string("cannot start the consumer thread: ") + e.what());
  }
  spdlog::info("attached to pid {} ({}, CPython {})", pid, Printable(info.interpreter.path),
               info.version.ToString());
  return s;
}

void LiveSession::DrainRing() {
  batch_.clear();
  auto append = [this](const uint8_t* data, size_t size) {
    batch_.append(reinterpret_cast<const char*>(data), size);
  };
  auto n = tracer_->Drain(append);
  if (!n.ok()) spdlog::warn("{}: {}", id(), n.status().ToString());
  IngestBatch();
}

void LiveSession::IngestBatch() {
  if (batch_.empty()) return;
  locations_.clear();
  if (resolver_) {
    // Resolve every (code, instr) pair seen for the first time, now, while the code objects
    // are most likely alive; the definitions go ahead of the records that use them.
    const uint8_t* data = reinterpret_cast<const uint8_t*>(batch_.data());
    for (size_t off = 0; off + sizeof(ts_header) <= batch_.size();) {
      ts_header h;
      std::memcpy(&h, data + off, sizeof(h));
      if (h.size < sizeof(ts_header) || off + h.size > batch_.size()) break;
      if ((h.flags & TS_HDR_PY_STACK) && h.size >= sizeof(ts_header) + sizeof(ts_py_stack)) {
        ts_py_stack stack;
        std::memcpy(&stack, data + off + h.size - sizeof(stack), sizeof(stack));
        for (int i = 0; i < stack.depth && i < TS_PY_MAX_FRAMES; ++i) {
          DefineLocation(stack.frames[i].code, stack.frames[i].instr, h.ts_ns);
        }
      }
      off += h.size;
    }
  }
  // Code objects are read by pid (process_vm_readv has no pidfd form): if the process is gone
  // now, its pid may already name another process, whose memory those reads saw. Keep nothing.
  if (!locations_.empty() && !process_->Alive()) {
    locations_.clear();
    for (const auto& pair : resolved_now_) defined_.erase(pair);
  }
  resolved_now_.clear();
  if (!locations_.empty()) {
    IngestRecords(reinterpret_cast<const uint8_t*>(locations_.data()), locations_.size());
  }
  IngestRecords(reinterpret_cast<const uint8_t*>(batch_.data()), batch_.size());
  batch_.clear();
}

void LiveSession::DefineLocation(uint64_t code, uint64_t instr, uint64_t ts_ns) {
  // Bounded: a program with unbounded distinct call sites stops getting new names, not memory.
  constexpr size_t kMaxLocations = 1 << 17;
  if (defined_.size() >= kMaxLocations || !defined_.insert({code, instr}).second) return;
  resolved_now_.push_back({code, instr});
  target::ResolvedFrame f = resolver_->Resolve(code, instr);
  ts_py_location fixed{};
  fixed.code = code;
  fixed.instr = instr;
  fixed.line = f.line.value_or(-1);
  switch (f.kind) {
    case target::ResolvedFrame::Kind::kPython: break;
    case target::ResolvedFrame::Kind::kNotPython: fixed.flags = TS_LOCATION_NOT_PYTHON; break;
    case target::ResolvedFrame::Kind::kUnreadable:
      // No definition: the model shows "?" and the next sighting tries again.
      defined_.erase({code, instr});
      return;
  }
  locations_ += model::MakePyLocationRecord(static_cast<uint32_t>(pid()), ts_ns, fixed, f.file,
                                            f.function);
}

void LiveSession::InjectPreexistingThreads() {
  auto tasks = proc_.Tasks(pid());
  if (!tasks.ok()) return;
  std::string records;
  uint64_t now = target::MonotonicNowNs();
  for (const auto& task : *tasks) {
    ts_preexisting_thread body{};
    body.start_ns = target::BootTicksToMonotonicNs(task.start_ticks);
    std::strncpy(body.comm, task.comm.c_str(), sizeof(body.comm) - 1);
    records += model::MakeRecord(TS_EV_PREEXISTING_THREAD, static_cast<uint32_t>(pid()),
                          static_cast<uint32_t>(task.tid), now, body);
  }
  IngestRecords(reinterpret_cast<const uint8_t*>(records.data()), records.size());
}

void LiveSession::InjectDrops() {
  std::string records;
  for (uint32_t source : {uint32_t{TS_LOST_RINGBUF}, uint32_t{TS_LOST_STASH}}) {
    uint64_t total = tracer_->Drops(source);
    if (total <= reported_drops_[source]) continue;
    ts_lost body{};
    body.count = total - reported_drops_[source];
    body.source = source;
    reported_drops_[source] = total;
    records += model::MakeRecord(TS_EV_LOST, static_cast<uint32_t>(pid()), 0, target::MonotonicNowNs(),
                          body);
    spdlog::warn("{}: the kernel dropped {} records (source {})", id(), body.count, source);
  }
  if (!records.empty()) {
    IngestRecords(reinterpret_cast<const uint8_t*>(records.data()), records.size());
  }
}

void LiveSession::InjectMark(uint32_t kind) {
  ts_trace_mark body{};
  body.kind = kind;
  std::string r = model::MakeRecord(TS_EV_TRACE_MARK, static_cast<uint32_t>(pid()),
                             static_cast<uint32_t>(pid()), target::MonotonicNowNs(), body);
  IngestRecords(reinterpret_cast<const uint8_t*>(r.data()), r.size());
}

bool LiveSession::CredentialsChanged() const {
  auto now = proc_.Status(pid());
  if (!now.ok() || !process_->Alive()) return false;  // exiting: the exit path ends it
  for (int i = 0; i < 4; ++i) {
    if (now->uid[i] != attached_status_.uid[i] || now->gid[i] != attached_status_.gid[i]) {
      return true;
    }
  }
  return false;
}

void LiveSession::EndFromConsumer(uint32_t mark, v1::TargetState state, const char* why) {
  // Exit records of every thread precede the end; take them all, then finish.
  DrainRing();
  InjectDrops();
  InjectMark(mark);
  tracer_->DetachAll();
  Finish(state);
  spdlog::info("pid {} {}; probes removed", pid(), why);
}

void LiveSession::Run() {
  // Nothing may escape this thread: an exception here would terminate the daemon.
  try {
    RunLoop();
  } catch (const std::exception& e) {
    spdlog::error("{}: consumer failed ({}); detaching", id(), e.what());
    try {
      EndFromConsumer(TS_MARK_DETACHED, v1::TARGET_STATE_DETACHED, "could not be traced further");
    } catch (...) {
    }
  }
}

void LiveSession::RunLoop() {
  auto append = [this](const uint8_t* data, size_t size) {
    batch_.append(reinterpret_cast<const char*>(data), size);
  };
  auto last_check = std::chrono::steady_clock::now();
  while (!stop_) {
    auto polled = tracer_->Poll(options_.poll_interval_ms, append);
    if (!polled.ok()) spdlog::warn("{}: {}", id(), polled.status().ToString());
    IngestBatch();
    auto now = std::chrono::steady_clock::now();
    if (now - last_check < std::chrono::milliseconds(options_.liveness_interval_ms)) continue;
    last_check = now;
    InjectDrops();
    if (!process_->Alive()) {
      EndFromConsumer(TS_MARK_TARGET_EXITED, v1::TARGET_STATE_EXITED, "exited");
      return;
    }
    if (CredentialsChanged()) {
      EndFromConsumer(TS_MARK_DETACHED, v1::TARGET_STATE_EXECED,
                      "changed its credentials (exec of a setuid program?)");
      return;
    }
  }
}

Status LiveSession::Detach() {
  std::lock_guard<std::mutex> lock(detach_mu_);
  stop_ = true;
  if (consumer_.joinable()) consumer_.join();
  if (!tracer_) return OkStatus();
  if (!finished()) {
    tracer_->DetachAll();
    DrainRing();
    InjectDrops();
    InjectMark(TS_MARK_DETACHED);
    Finish(v1::TARGET_STATE_DETACHED);
    spdlog::info("detached from pid {}", pid());
  }
  tracer_.reset();
  return OkStatus();
}

}  // namespace threadscope::engine
