// Auto-attach: threadscoped traces, without being asked, every CPython process that matches
// one of the operator's rules (rules.h), those running when it starts and those that exec
// later, and lets each go when it exits.
//
//   exec (kernel)  ──ExecSource──►  watcher thread ──pids──► matcher thread
//   /proc scan at start ─────────────────────────────────────► │ pin (pidfd), read exe, uid,
//                                                               │ cmdline, cgroup; first rule
//                                                               │ that matches; CPython? (
//                                                               │ cpython_ready.h), limits
//                                                               ▼
//                                           pending: re-checked until the interpreter is mapped
//                                                               ▼
//                                    attach workers ──SessionManager::Attach (daemon's lease)──►
//
// The daemon's leases (Client::until_exit) end when the process exits or execs; the manager's
// ended listener takes the target off this attacher's count. Every match, attach, refusal and
// failure is counted per rule (Counters(), Status()).
//
// Auto-attach is the operator's decision, so its sessions are privileged (any process, rings up
// to 1 GiB), but they go through the manager's global limits like every other, and their own
// limit (max_targets) on top.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "daemon/autoattach/config.h"
#include "daemon/autoattach/cpython_ready.h"
#include "daemon/engine/session_manager.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::autoattach {

// New processes, as the kernel reports them (loader::ExecWatch in the daemon).
class ExecSource {
 public:
  virtual ~ExecSource() = default;
  // Waits up to timeout_ms, then delivers the pid of every process that exec'd since.
  virtual StatusOr<size_t> Poll(int timeout_ms, const std::function<void(pid_t)>& callback) = 0;
  virtual uint64_t Lost() const = 0;
  virtual std::string Name() const = 0;  // "raw_tp/sched_process_exec"
};

struct AutoAttacherOptions {
  AutoAttachConfig config;
  int attach_workers = 2;       // attaches run in parallel (planning takes 0.1-0.6 s each)
  size_t max_pending = 1024;    // matched processes waiting for their interpreter
  size_t max_queued_execs = 65536;
  bool scan_at_start = true;
};

class AutoAttacher {
 public:
  // `execs` null: only the processes running at start are considered; `no_execs_reason` says
  // why (status and logs show it).
  static std::unique_ptr<AutoAttacher> Start(AutoAttacherOptions options,
                                             engine::SessionManager& manager,
                                             std::unique_ptr<ExecSource> execs,
                                             std::string no_execs_reason = "");
  // Stops its threads. Its sessions stay with the manager (which detaches them at shutdown).
  ~AutoAttacher();

  struct RuleCounters {
    std::string name;
    uint64_t matches = 0;
    uint64_t attaches = 0;
    std::map<std::string, uint64_t> refusals;  // limit, daemon_limit, busy
    std::map<std::string, uint64_t> failures;  // not_cpython, cpython_timeout, exited, execed,
                                               // unsupported, error
  };
  struct Counters {
    std::vector<RuleCounters> rules;
    size_t targets = 0;
    size_t max_targets = 0;
    uint64_t execs_seen = 0;
    uint64_t execs_lost = 0;
    uint64_t scanned = 0;
    bool watching_execs = false;
  };
  Counters GetCounters() const;
  // `with_targets`: list each rule's target ids (callers who may trace anything).
  v1::AutoAttachStatus Status(bool with_targets) const;

  // Considers `pid` as if it had just exec'd (tests; the scan and the watcher use it too).
  void Offer(pid_t pid);

  // The reasons refusals and failures are counted under (metrics export each, even at 0).
  static const std::vector<std::string>& RefusalReasons();
  static const std::vector<std::string>& FailureReasons();

 private:
  struct Pending {
    std::shared_ptr<const target::ProcessHandle> process;
    size_t rule = 0;
    std::map<std::string, std::string> labels;  // from the cgroup
    ExeKind kind;
    std::chrono::steady_clock::time_point deadline;
    std::chrono::steady_clock::time_point next_check;
    std::chrono::milliseconds interval{2};
  };
  struct Owned {
    size_t rule = 0;
    pid_t pid = 0;
    uint64_t start_ticks = 0;
  };

  AutoAttacher(AutoAttacherOptions options, engine::SessionManager& manager,
               std::unique_ptr<ExecSource> execs, std::string no_execs_reason);
  void WatchLoop();
  void MatchLoop();
  void AttachLoop();
  void Scan();
  void HandleExec(pid_t pid);
  void CheckPending();
  void Attach(Pending p);
  void Prune();
  void Refuse(size_t rule, const char* reason);  // requires mu_
  void Fail(size_t rule, const char* reason);     // requires mu_
  std::optional<ExeKind> Classify(pid_t pid);

  const AutoAttacherOptions options_;
  engine::SessionManager& manager_;
  const engine::Client client_;
  std::unique_ptr<ExecSource> execs_;
  const std::string no_execs_reason_;
  const pid_t self_;
  int listener_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;         // events_ or stopping_
  std::condition_variable attach_cv_;  // ready_ or stopping_
  bool stopping_ = false;
  std::deque<pid_t> events_;
  std::deque<Pending> ready_;
  size_t in_flight_ = 0;  // matched, reserved under the limit, not attached or failed yet
  std::map<std::string, Owned> targets_;  // by target id
  std::vector<RuleCounters> counters_;
  uint64_t execs_seen_ = 0;
  uint64_t execs_dropped_ = 0;  // queued execs past max_queued_execs
  uint64_t scanned_ = 0;

  // Matcher thread only.
  std::map<pid_t, Pending> pending_;
  struct ExeKey {
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
    bool operator<(const ExeKey& o) const {
      return std::tie(dev, ino, size, mtime_ns) < std::tie(o.dev, o.ino, o.size, o.mtime_ns);
    }
  };
  std::map<ExeKey, ExeKind> exe_kinds_;  // executables already read, bounded

  std::thread watcher_;
  std::thread matcher_;
  std::vector<std::thread> attachers_;
};

}  // namespace threadscope::autoattach
