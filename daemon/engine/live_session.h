// A running process, traced: the consumer between a record source and the model.
//
// A consumer thread drains the source every poll interval (BPF records are submitted without
// wakeups) and feeds the model. It also writes the records only the engine knows: threads that
// existed before attach (from /proc/PID/task), counts of records lost before delivery, and
// attach / detach / exit marks, so that a recording holds everything the live model saw. Stack
// frames are named (code objects read) when a batch first names them, while they most likely
// still exist, and the names go ahead of the records that use them.
//
// Everything it touches is injected: the record source (the BPF ring, live_attach.h; a fake in
// tests), the pinned process, the /proc it reads, the frame resolver and the clock. So all of it
// runs in unit tests, without a kernel.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon/budget/budget_controller.h"
#include "daemon/common/clock.h"
#include "daemon/engine/session.h"
#include "daemon/loader/probe_plan.h"
#include "daemon/loader/record_source.h"
#include "daemon/target/process_handle.h"
#include "daemon/target/procfs.h"
#include "daemon/target/py_code.h"
#include "settings/trace_settings.h"

namespace threadscope::engine {

struct LiveSessionOptions {
  // What the client asked for, validated (settings::ValidateAttachOptions).
  settings::TraceSettings trace;
  // The engine's own: how it runs a session, not what a client asks of it.
  int poll_interval_ms = 50;
  int liveness_interval_ms = 200;
  size_t history_bytes = 64u << 20;  // raw records kept since attach (DESIGN §7.4)
  // Inspecting and planning a target read files and code it chose: they get this long, then
  // the attach fails (DEADLINE_EXCEEDED) saying which step ran out (measured on the machine's
  // interpreters: 0.1-0.6 s, docs/PERFORMANCE.md).
  int plan_deadline_ms = 20000;
  // What a probe hit costs on this machine (threadscoped measures it at start-up,
  // daemon/budget/calibrate.h), for the overhead budget's estimate.
  budget::Calibration calibration;
};

// What a live session consumes, once its probes are attached.
struct LiveSources {
  std::unique_ptr<loader::RecordSource> records;   // the ring buffer (BpfTracer), or a fake
  std::shared_ptr<const target::Process> process;  // the target, pinned
  target::ProcessStatus attached_status;           // its credentials when the caller was checked
  std::unique_ptr<target::FrameResolver> frames;   // names stack frames; null: no stacks
  // 3.13+ lock tracing: records point at type objects (what a park waited on: a Lock, an RLock,
  // a list's critical section...), named by reading them. Null memory: not named.
  std::unique_ptr<target::MemoryReader> memory;
  uint64_t type_type = 0;  // PyType_Type
  uint32_t ob_type_off = 8;
  uint32_t tp_name_off = 24;
};

class LiveSession : public Session {
 public:
  // Starts consuming: writes the attach mark, takes what the probes wrote so far, then the
  // threads /proc lists (after the probes, so a thread is either in the scan or seen starting),
  // and starts the consumer thread. `target` describes the trace (BuildTarget). The trace ends
  // when the process exits, changes credentials (a setuid exec) or on Detach().
  static StatusOr<std::shared_ptr<LiveSession>> Start(std::string id, v1::Target target,
                                                      LiveSources sources,
                                                      const LiveSessionOptions& options,
                                                      const target::ProcFs& proc,
                                                      const Clock& clock = SystemClock());
  ~LiveSession() override;
  Status Detach() override;
  const std::shared_ptr<const target::Process>& process() const { return process_; }

 private:
  LiveSession(std::string id, v1::Target target, const target::ProcFs& proc,
              LiveSessionOptions options, LiveSources sources, const Clock& clock);
  void Run();
  void RunLoop();
  // Ends the trace from the consumer thread (the target exited, exec'd, or the loop failed).
  void EndFromConsumer(uint32_t mark, v1::TargetState state, const char* why);
  // The process's credentials changed since the attach (a setuid exec, setuid()): it is not
  // the process whose owner was allowed to trace it.
  bool CredentialsChanged() const;
  void InjectPreexistingThreads();
  void InjectDrops();
  void InjectMark(uint32_t kind);
  void DrainSource();
  // Ingests a batch from the source, preceded by definitions of the stack locations it uses.
  void IngestBatch();
  void DefineLocation(uint64_t code, uint64_t instr, uint64_t ts_ns);
  // Names a type object a record points at (3.13+ parks and lock records), once.
  void DefineType(uint64_t type, uint64_t ts_ns);
  // --overhead-budget: feeds the controller what the trace cost since the last update.
  void UpdateBudget(uint64_t now_ns);
  bool ApplyBudgetStage(budget::Stage stage);
  // gil_waits on a --gil full trace: switches the GIL probes (RecordSource::SetGilWaitsOnly)
  // and marks the switch in the record stream. False when the source cannot.
  bool ApplyGilStage(bool waits_only);
  // duty_cycle: detaches (off) or attaches again (on) the GIL and lock probes
  // (RecordSource::SetTracingPaused), each transition drained and marked in the record stream;
  // fills the budget's pause figures. False when the source cannot pause.
  bool ApplyDutyCycle(bool paused, uint64_t now_ns, v1::OverheadBudget* b);

  const target::ProcFs& proc_;
  LiveSessionOptions options_;
  std::shared_ptr<const target::Process> process_;
  target::ProcessStatus attached_status_;
  std::unique_ptr<loader::RecordSource> source_;
  // Python stacks: resolves (code, instr) pairs once each.
  std::unique_ptr<target::FrameResolver> resolver_;
  std::thread consumer_;
  std::atomic<bool> stop_{false};
  std::mutex detach_mu_;
  uint64_t reported_drops_[TS_DROP_SLOTS] = {};
  std::string batch_;
  std::string locations_;  // location records for the batch being ingested
  std::set<std::pair<uint64_t, uint64_t>> defined_;
  std::vector<std::pair<uint64_t, uint64_t>> resolved_now_;  // defined by the batch in hand
  // Type names: how to read them (PyType_Type, where ob_type and tp_name are), and which type
  // objects were named already (or found not to be types).
  std::unique_ptr<target::MemoryReader> memory_;
  uint64_t type_type_ = 0;
  uint32_t ob_type_off_ = 8;
  uint32_t tp_name_off_ = 24;
  std::set<uint64_t> typed_;
  std::vector<uint64_t> typed_now_;
  std::unique_ptr<budget::BudgetController> budget_;
  uint64_t budget_last_ns_ = 0;
  std::string last_budget_change_;
  bool acquire_stacks_skipped_ = false;  // the no_acquire_stacks stage is in effect in BPF
  bool gil_waits_only_ = false;          // the gil_waits stage is in effect on a --gil full trace
  bool gil_switch_failed_ = false;       // the source cannot switch: do not try every second
  // The duty cycle: probes detached now, since when, time paused in all, off periods begun.
  bool paused_ = false;
  bool pause_failed_ = false;  // the source cannot pause: do not try every second
  uint64_t paused_since_ns_ = 0;
  uint64_t paused_total_ns_ = 0;
  uint64_t pauses_ = 0;
  uint64_t duty_since_ns_ = 0;
  uint64_t budget_first_ns_ = 0;
};

}  // namespace threadscope::engine
