#include "daemon/engine/live_session.h"

#include <spdlog/spdlog.h>

#include <time.h>

#include <algorithm>
#include <cstring>

#include "daemon/model/event_decoder.h"
#include "daemon/model/record_builder.h"
#include "recording/record_reader.h"
#include "probes/threadscope_events.h"

namespace threadscope::engine {

LiveSession::LiveSession(std::string id, v1::Target target, const target::ProcFs& proc,
                         LiveSessionOptions options, LiveSources sources, const Clock& clock)
    : Session(std::move(id), std::move(target), clock),
      proc_(proc),
      options_(std::move(options)),
      process_(std::move(sources.process)),
      attached_status_(std::move(sources.attached_status)),
      source_(std::move(sources.records)),
      resolver_(std::move(sources.frames)),
      memory_(std::move(sources.memory)),
      type_type_(sources.type_type),
      ob_type_off_(sources.ob_type_off),
      tp_name_off_(sources.tp_name_off) {
  set_raw_log_budget(options_.history_bytes);
  if (options_.trace.overhead_budget > 0) {
    budget::BudgetConfig config;
    config.budget = options_.trace.overhead_budget;
    // Stages that change nothing for this trace are passed over (ApplyBudgetStage says what
    // each does).
    const settings::TraceSettings& t = options_.trace;
    config.skip[static_cast<int>(budget::Stage::kGilWaits)] =
        !(t.gil && t.gil_mode == settings::GilMode::kFull);
    config.skip[static_cast<int>(budget::Stage::kNoAcquireStacks)] =
        !(t.locks == settings::LockMode::kAll && t.acquire_stack_frames > 0);
    config.skip[static_cast<int>(budget::Stage::kLockThreshold)] = true;  // recommended only
    budget_ = std::make_unique<budget::BudgetController>(config, options_.calibration);
    v1::OverheadBudget b;
    b.set_enabled(true);
    b.set_budget(config.budget);
    b.set_stage(budget::StageName(budget::Stage::kAsAsked));
    b.set_applied(true);  // tracing as asked is what runs
    b.set_estimated(true);
    b.set_calibration(budget_->calibration().source);
    SetBudget(b);
  }
}

void LiveSession::UpdateBudget(uint64_t now_ns) {
  // Once a second: the estimate is a rate, and a stage holds for seconds.
  if (!budget_ || (budget_last_ns_ && now_ns - budget_last_ns_ < 1000000000)) return;
  // The first second of this thread is start-up, not a rate: the backlog of the attach and the
  // first names of frames and types. The controller's baseline is taken after it.
  const bool warming_up = budget_last_ns_ == 0;
  budget_last_ns_ = now_ns;
  if (!budget_first_ns_) budget_first_ns_ = now_ns;
  if (warming_up) return;
  budget::Counters c;
  // Probe runs by kind, counted in BPF: records are not hits (a gated GIL take, a filtered
  // semaphore, a non-futex syscall cost without a record).
  static_assert(std::tuple_size_v<loader::ProbeHitCounts> == budget::kHitKinds);
  auto hits = source_->ProbeHits();
  std::string calibration = budget_->calibration().source;
  if (hits.ok()) {
    for (int k = 0; k < budget::kHitKinds; ++k) c.hits[k] = (*hits)[k];
  } else {
    // A source that cannot count: every record as one emulated uprobe hit, and say so.
    c.hits[static_cast<int>(budget::HitKind::kUprobe)] = records_seen();
    calibration += "; records counted as hits (this source does not count probe hits)";
  }
  // The daemon's own work for this target: this consumer thread's CPU (decode, model, stacks,
  // its polls). The attach, the plan and the first drain ran on the attaching thread, and the
  // controller's first update, a second in, is only a baseline.
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) {
    c.daemon_cpu_ns = uint64_t(ts.tv_sec) * 1000000000 + uint64_t(ts.tv_nsec);
  }
  spdlog::debug(
      "{}: budget counters: hits {} emulated, {} single-stepped, {} uretprobe, {} "
      "tracepoint; daemon cpu {} us",
      id(), c.hits[0], c.hits[1], c.hits[2], c.hits[3], c.daemon_cpu_ns / 1000);
  budget::Decision d = budget_->Update(now_ns, c);
  if (d.changed || d.duty_changed) spdlog::info("{}: overhead budget: {}", id(), d.why);
  const budget::Estimate& e = budget_->estimate();
  v1::OverheadBudget b;
  b.set_enabled(true);
  b.set_budget(budget_->config().budget);
  b.set_stage(budget::StageName(d.stage));
  b.set_stage_index(static_cast<uint32_t>(d.stage));
  b.set_estimated_cost(e.share);
  b.set_estimated_probes_cost(e.probes_share);
  b.set_estimated_daemon_cost(e.daemon_share);
  b.set_estimated(true);
  b.set_calibration(calibration);
  b.set_stage_changes(budget_->stage_changes());
  if (d.changed || d.duty_changed) last_budget_change_ = d.why;
  b.set_last_change(last_budget_change_);
  // The duty cycle pauses after the stage's other steps are in effect and resumes before them
  // (the GIL probes switch only while attached).
  const bool pause = d.stage == budget::Stage::kDutyCycle && !d.tracing_on;
  const bool duty_ok = pause ? true : ApplyDutyCycle(false, now_ns, &b);
  bool applied = ApplyBudgetStage(d.stage);
  const bool duty_applied = (pause ? ApplyDutyCycle(true, now_ns, &b) : duty_ok);
  if (d.stage == budget::Stage::kDutyCycle) applied = applied && duty_applied;
  b.set_applied(applied);
  SetBudget(b);
}

// Puts what the stage asks into effect where this version can while attached, and says whether
// the stage as a whole is in effect. A step that changes nothing for this trace (gil_waits on a
// trace that is already --gil waits) is in effect; applied: false means some step down to the
// stage is only recommended: gil_waits on a --gil full trace whose source cannot switch its GIL
// probes (no --gil waits sites on this build, 2.7, a recording) and lock_threshold
// (recommend-only). duty_cycle: ApplyDutyCycle, from UpdateBudget.
bool LiveSession::ApplyBudgetStage(budget::Stage stage) {
  const settings::TraceSettings& t = options_.trace;
  // no_acquire_stacks: a flag the acquire program reads (BpfTracer::SetAcquireStacks).
  const bool acquire_asked = t.locks == settings::LockMode::kAll && t.acquire_stack_frames > 0;
  const bool skip = stage >= budget::Stage::kNoAcquireStacks;
  if (acquire_asked && skip != acquire_stacks_skipped_) {
    if (Status s = source_->SetAcquireStacks(!skip); s.ok()) {
      acquire_stacks_skipped_ = skip;
      spdlog::info("{}: overhead budget: acquire stacks {}", id(), skip ? "off" : "back on");
    } else {
      spdlog::warn("{}: overhead budget: acquire stacks: {}", id(), s.ToString());
    }
  }
  bool applied = true;
  if (t.gil && t.gil_mode == settings::GilMode::kFull) {
    const bool waits = stage >= budget::Stage::kGilWaits;
    if (!ApplyGilStage(waits) && waits) applied = false;
  }
  if (skip && acquire_asked && !acquire_stacks_skipped_) applied = false;
  // lock_threshold stays recommended only (docs/PERFORMANCE.md); at duty_cycle the probes it
  // would thin are detached most of the time, and UpdateBudget says whether the cycle runs.
  if (stage == budget::Stage::kLockThreshold) applied = false;
  return applied;
}

bool LiveSession::ApplyDutyCycle(bool paused, uint64_t now_ns, v1::OverheadBudget* b) {
  bool ok = true;
  if (paused != paused_ && !(paused && pause_failed_)) {
    if (Status s = source_->SetTracingPaused(paused); !s.ok()) {
      // Cannot pause: the stage stays recommended. Cannot resume: try again next second (the
      // probes stay detached, and the report says so).
      if (paused) pause_failed_ = true;
      spdlog::warn("{}: overhead budget: duty cycle: {}", id(), s.ToString());
      ok = false;
    } else {
      // Records of before the transition are in the ring: take them, then the mark, so the
      // models cut what they can no longer see at the mark's time.
      DrainSource();
      InjectMark(paused ? TS_MARK_TRACE_PAUSED : TS_MARK_TRACE_RESUMED);
      paused_ = paused;
      if (paused) {
        paused_since_ns_ = now_ns;
        ++pauses_;
        if (!duty_since_ns_) duty_since_ns_ = now_ns;
      } else {
        paused_total_ns_ += now_ns - paused_since_ns_;
      }
      spdlog::info("{}: overhead budget: duty cycle: probes {}", id(), paused ? "off" : "on again");
    }
  } else if (paused && pause_failed_) {
    ok = false;
  }
  const uint64_t paused_ns = paused_total_ns_ + (paused_ ? now_ns - paused_since_ns_ : 0);
  const uint64_t since = now_ns - budget_first_ns_;
  b->set_paused_ns(paused_ns);
  b->set_traced_fraction(since ? 1.0 - double(paused_ns) / double(since) : 1.0);
  b->set_pauses(pauses_);
  b->set_duty_on_ns(budget_->config().duty_on_ns);
  b->set_duty_period_ns(budget_->duty_period_ns());
  b->set_duty_since_ns(duty_since_ns_);
  b->set_paused(paused_);
  return ok && paused_ == paused;
}

bool LiveSession::ApplyGilStage(bool waits_only) {
  if (waits_only == gil_waits_only_) return true;
  if (gil_switch_failed_) return false;
  if (Status s = source_->SetGilWaitsOnly(waits_only); !s.ok()) {
    // Attach failures cost a probe attach each: one try is the answer for this trace.
    gil_switch_failed_ = true;
    spdlog::warn("{}: overhead budget: GIL probes: {}", id(), s.ToString());
    return false;
  }
  gil_waits_only_ = waits_only;
  // Every record of the old mode is in the ring now: take them first, then the mark, so the model
  // ends what it can no longer see (holds, takes in progress) at the mark's time.
  DrainSource();
  InjectMark(waits_only ? TS_MARK_GIL_WAITS_ONLY : TS_MARK_GIL_FULL);
  spdlog::info("{}: overhead budget: GIL {}", id(),
               waits_only ? "waits only (--gil waits)" : "every take and drop again (--gil full)");
  return true;
}

LiveSession::~LiveSession() {
  Status s = Detach();
  if (!s.ok()) spdlog::warn("detach of {} on shutdown: {}", id(), s.ToString());
}

StatusOr<std::shared_ptr<LiveSession>> LiveSession::Start(std::string id, v1::Target target,
                                                          LiveSources sources,
                                                          const LiveSessionOptions& options,
                                                          const target::ProcFs& proc,
                                                          const Clock& clock) {
  if (!sources.records || !sources.process) {
    return InvalidArgumentError("a live session needs a record source and a process");
  }
  std::shared_ptr<LiveSession> s(new LiveSession(std::move(id), std::move(target), proc, options,
                                                 std::move(sources), clock));
  s->InjectMark(TS_MARK_ATTACHED);
  // Threads alive now: after the probes, so a thread is either in the scan or seen starting.
  s->DrainSource();
  s->InjectPreexistingThreads();
  try {
    s->consumer_ = std::thread([raw = s.get()] { raw->Run(); });
  } catch (const std::system_error& e) {
    return ResourceExhaustedError(std::string("cannot start the consumer thread: ") + e.what());
  }
  return s;
}

void LiveSession::DrainSource() {
  batch_.clear();
  auto append = [this](const uint8_t* data, size_t size) {
    batch_.append(reinterpret_cast<const char*>(data), size);
  };
  auto n = source_->Drain(append);
  if (!n.ok()) spdlog::warn("{}: {}", id(), n.status().ToString());
  IngestBatch();
}

void LiveSession::IngestBatch() {
  if (batch_.empty()) return;
  locations_.clear();
  if (type_type_ && memory_) {
    // Name the type objects 3.13+ records point at (what a park waited on: a Lock, an RLock,
    // a list's critical section...), ahead of the records, like locations.
    recording::RecordReader reader(batch_);
    recording::RecordView record;
    while (reader.Next(&record)) {
      const ts_header& h = record.header;
      if (h.type == TS_EV_PARK_BEGIN && record.size >= sizeof(ts_park)) {
        ts_park e;
        std::memcpy(&e, record.data, sizeof(e));
        DefineType(e.obj_type, h.ts_ns);
        DefineType(e.cs_type, h.ts_ns);
      } else if (h.type == TS_EV_CS_SLOW && record.size >= sizeof(ts_cs_slow)) {
        ts_cs_slow e;
        std::memcpy(&e, record.data, sizeof(e));
        DefineType(e.obj_type, h.ts_ns);
        DefineType(e.obj_type2, h.ts_ns);
      }
    }
  }
  if (resolver_) {
    // Resolve every (code, instr) pair seen for the first time, now, while the code objects
    // are most likely alive; the definitions go ahead of the records that use them.
    recording::RecordReader reader(batch_);
    recording::RecordView record;
    while (reader.Next(&record)) {
      if (!(record.header.flags & TS_HDR_PY_STACK)) continue;
      auto decoded = model::DecodeEvent(record);
      if (!decoded.ok() || !decoded->stack) continue;  // the model counts it as malformed
      const ts_py_stack& stack = *decoded->stack;
      for (int i = 0; i < stack.depth; ++i) {
        DefineLocation(stack.frames[i].code, stack.frames[i].instr, record.header.ts_ns);
      }
    }
  }
  // Code objects are read by pid (process_vm_readv has no pidfd form): if the process is gone
  // now, its pid may already name another process, whose memory those reads saw. Keep nothing.
  if (!locations_.empty() && !process_->Alive()) {
    locations_.clear();
    for (const auto& pair : resolved_now_) defined_.erase(pair);
    for (uint64_t type : typed_now_) typed_.erase(type);
  }
  resolved_now_.clear();
  typed_now_.clear();
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
  uint64_t now = clock().MonotonicNowNs();
  for (const auto& task : *tasks) {
    ts_preexisting_thread body{};
    body.start_ns = BootTicksToMonotonicNs(task.start_ticks, clock());
    std::strncpy(body.comm, task.comm.c_str(), sizeof(body.comm) - 1);
    records += model::MakeRecord(TS_EV_PREEXISTING_THREAD, static_cast<uint32_t>(pid()),
                          static_cast<uint32_t>(task.tid), now, body);
  }
  IngestRecords(reinterpret_cast<const uint8_t*>(records.data()), records.size());
}

void LiveSession::InjectDrops() {
  std::string records;
  for (uint32_t source : {uint32_t{TS_LOST_RINGBUF}, uint32_t{TS_LOST_STASH}}) {
    uint64_t total = source_->Drops(source);
    if (total <= reported_drops_[source]) continue;
    ts_lost body{};
    body.count = total - reported_drops_[source];
    body.source = source;
    reported_drops_[source] = total;
    records += model::MakeRecord(TS_EV_LOST, static_cast<uint32_t>(pid()), 0,
                                 clock().MonotonicNowNs(), body);
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
                                    static_cast<uint32_t>(pid()), clock().MonotonicNowNs(), body);
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
  DrainSource();
  InjectDrops();
  InjectMark(mark);
  source_->DetachAll();
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
  // Liveness is checked on the injected clock: tests decide when a check is due.
  const uint64_t interval_ns = uint64_t(std::max(options_.liveness_interval_ms, 0)) * 1000000;
  uint64_t last_check = clock().MonotonicNowNs();
  while (!stop_) {
    auto polled = source_->Poll(options_.poll_interval_ms, append);
    if (!polled.ok()) spdlog::warn("{}: {}", id(), polled.status().ToString());
    IngestBatch();
    uint64_t now = clock().MonotonicNowNs();
    UpdateBudget(now);
    if (now - last_check < interval_ns) continue;
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
  if (!source_) return OkStatus();
  if (!finished()) {
    source_->DetachAll();
    DrainSource();
    InjectDrops();
    InjectMark(TS_MARK_DETACHED);
    Finish(v1::TARGET_STATE_DETACHED);
    spdlog::info("detached from pid {}", pid());
  }
  source_.reset();
  return OkStatus();
}

void LiveSession::DefineType(uint64_t type, uint64_t ts_ns) {
  // Bounded, like locations: a target cannot make us read without end.
  constexpr size_t kMaxTypes = 4096;
  if (!type || typed_.size() >= kMaxTypes || !typed_.insert(type).second) return;
  typed_now_.push_back(type);
  // A type object: its own type is `type` (or a metaclass whose type is). Anything else is
  // not a type (the other reading of a parked address), and is named as unreadable once.
  auto is_type = [&](uint64_t t) {
    uint64_t meta = 0;
    if (!memory_->Read(t + ob_type_off_, &meta, 8)) return false;
    if (meta == type_type_) return true;
    uint64_t meta_type = 0;
    return memory_->Read(meta + ob_type_off_, &meta_type, 8) && meta_type == type_type_;
  };
  std::string name;
  uint64_t name_ptr = 0;
  char buf[128];
  if (is_type(type) && memory_->Read(type + tp_name_off_, &name_ptr, 8) && name_ptr) {
    // tp_name may end anywhere in these bytes: read what can be read, up to its NUL.
    for (size_t n = sizeof(buf); n >= 16 && name.empty(); n /= 2) {
      if (!memory_->Read(name_ptr, buf, n)) continue;
      size_t len = strnlen(buf, n);
      if (len < n) name.assign(buf, len);
    }
  }
  bool printable = !name.empty();
  for (char c : name) printable &= c > 0x20 && c < 0x7f;
  locations_ += model::MakePyTypeRecord(static_cast<uint32_t>(pid()), ts_ns, type,
                                        printable ? name : "",
                                        printable ? 0 : TS_LOCATION_UNREADABLE);
}

}  // namespace threadscope::engine
