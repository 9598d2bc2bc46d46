// A running process traced through BPF.
//
// Attach: inspect the process, plan probes, load and attach, then a consumer thread drains the
// ring every poll interval (records are submitted without wakeups) and feeds the model. It also
// writes the records only the daemon knows: threads that existed before attach (from
// /proc/PID/task), kernel drop counts, and attach / detach / exit marks, so that a recording
// holds everything the live model saw.
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

#include "daemon/engine/session.h"
#include "daemon/loader/bpf_tracer.h"
#include "daemon/loader/probe_plan.h"
#include "daemon/target/disasm.h"
#include "daemon/target/process_handle.h"
#include "daemon/target/procfs.h"
#include "daemon/target/py_code.h"

namespace threadscope::engine {

struct LiveSessionOptions {
  uint32_t ring_buffer_bytes = 16u << 20;
  loader::LockMode locks = loader::LockMode::kContended;
  uint64_t lock_threshold_ns = 0;
  uint8_t stack_frames = TS_PY_MAX_FRAMES;
  uint8_t acquire_stack_frames = 0;
  uint8_t gil_stack_frames = 0;               // at take_gil returns that waited long enough
  uint64_t gil_stack_threshold_ns = 1000000;  // ... this long
  bool gil = true;
  std::map<std::string, std::string> labels;  // user labels for metrics
  int poll_interval_ms = 50;
  int liveness_interval_ms = 200;
  // Inspecting and planning a target read files and code it chose: they get this long, then
  // the attach fails (DEADLINE_EXCEEDED) saying which step ran out (measured on the machine's
  // interpreters: 0.1-0.6 s, docs/PERFORMANCE.md).
  int plan_deadline_ms = 20000;
};

class LiveSession : public Session {
 public:
  // Errors: see ThreadscopeService.Attach in the proto.
  // `process` is the target, pinned: the attach fails (ABORTED) when it exits meanwhile, and
  // the session ends when it exits or execs another program.
  static StatusOr<std::shared_ptr<LiveSession>> Attach(
      std::string id, std::shared_ptr<const target::ProcessHandle> process,
      const LiveSessionOptions& options, const target::ProcFs& proc);
  ~LiveSession() override;
  Status Detach() override;
  const std::shared_ptr<const target::ProcessHandle>& process() const { return process_; }

 private:
  LiveSession(std::string id, v1::Target target, const target::ProcFs& proc,
              LiveSessionOptions options, std::shared_ptr<const target::ProcessHandle> process);
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
  void DrainRing();
  // Ingests a batch from the ring, preceded by definitions of the stack locations it uses.
  void IngestBatch();
  void DefineLocation(uint64_t code, uint64_t instr, uint64_t ts_ns);

  const target::ProcFs& proc_;
  LiveSessionOptions options_;
  std::shared_ptr<const target::ProcessHandle> process_;
  target::ProcessStatus attached_status_;
  std::unique_ptr<loader::BpfTracer> tracer_;
  std::thread consumer_;
  std::atomic<bool> stop_{false};
  std::mutex detach_mu_;
  uint64_t reported_drops_[TS_DROP_SLOTS] = {};
  std::string batch_;
  std::string locations_;  // location records for the batch being ingested
  // Python stacks: resolves (code, instr) pairs once each.
  std::unique_ptr<target::ProcessMemory> memory_;
  std::unique_ptr<target::PyCodeResolver> resolver_;
  std::set<std::pair<uint64_t, uint64_t>> defined_;
  std::vector<std::pair<uint64_t, uint64_t>> resolved_now_;  // defined by the batch in hand
};

}  // namespace threadscope::engine
