// All targets of one engine (the daemon, or the CLI's in-process engine): attach by pinned
// process, leases held by clients, recordings loaded for offline reports, and every resource a
// client can make the daemon hold, bounded.
//
// Sessions are shared: several clients on one target each hold a lease; a client's Detach (or
// its connection closing, or its lease running out) ends only its own lease, and the trace
// ends with the last one. Attaches of different processes run concurrently; two attaches of
// the same process are serialized, the second joining the first's trace.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/common/clock.h"
#include "daemon/common/status.h"
#include "daemon/engine/live_session.h"
#include "daemon/engine/session.h"
#include "daemon/target/process_handle.h"
#include "daemon/target/procfs.h"

namespace threadscope::engine {

// Every limit is documented in docs/DESIGN.md §7; "unprivileged" = a caller who may not trace
// everything (not root with CAP_SYS_PTRACE, not the in-process engine, not a TCP operator).
struct SessionLimits {
  size_t max_live_sessions = 64;          // daemon-wide: each adds host-wide tracepoint programs
  size_t max_sessions_per_uid = 8;        // unprivileged: traces holding one of its leases
  size_t max_leases_per_session = 64;
  uint32_t max_ring_bytes = 1u << 30;
  uint32_t max_ring_bytes_unprivileged = 64u << 20;
  uint32_t default_lease_seconds = 30;    // lease_seconds = 0
  uint32_t max_lease_seconds_unprivileged = 3600;
  size_t max_labels = 16;
  size_t max_label_name_bytes = 64;
  size_t max_label_value_bytes = 256;
  size_t max_recordings = 16;             // loaded, daemon-wide
  size_t max_recordings_per_uid = 4;      // unprivileged
};

struct SessionManagerOptions {
  std::string proc_root = "/proc";
  LiveSessionOptions live;
  SessionLimits limits;
  // Set: measures the overhead budget's per-hit costs the first time a trace asks for a budget,
  // and gives every later one the same figures (the in-process engine: `threadscope run` pays
  // for it only with --overhead-budget). threadscoped measures at start-up (live.calibration).
  std::function<budget::Calibration()> calibrate_on_first_budget;
};

// Who is asking, as far as the engine needs to know.
struct Client {
  std::string id;  // the connection ("fd:7#123", "ipv4:...", "in-process")
  uid_t uid = 0;
  bool may_trace_anything = false;
  // The daemon itself (auto-attach): its leases never idle out and end when the trace does
  // (the process exits or execs), so its targets are let go exactly when they are gone.
  bool until_exit = false;
};

class SessionManager {
 public:
  // How a live target gets traced: through BPF in the daemon and the in-process engine
  // (BpfAttacher, live_attach.h), from fake record sources in tests.
  using Attacher = std::function<StatusOr<std::shared_ptr<LiveSession>>(
      std::string id, std::shared_ptr<const target::Process> process,
      const LiveSessionOptions& options, const target::ProcFs& proc, const Clock& clock)>;

  // `clock` times leases and everything the sessions stamp; it must outlive the manager.
  static std::unique_ptr<SessionManager> Create(const SessionManagerOptions& options,
                                                Attacher attacher,
                                                const Clock& clock = SystemClock());
  ~SessionManager();

  struct AttachResult {
    std::shared_ptr<Session> session;
    bool newly_attached = false;
    std::string lease_id;
    std::string notice;  // requested options the existing trace does not have
  };
  // `process` is the target, pinned; the caller was authorized against it.
  StatusOr<AttachResult> Attach(std::shared_ptr<const target::Process> process,
                                const v1::AttachOptions& options, const Client& client);

  struct DetachResult {
    v1::Snapshot snapshot;
    bool ended = false;
  };
  // Ends the client's lease (`lease_id`, or all of its leases on the target when empty); the
  // trace ends with the last lease, or at once with `force` (callers who may trace anything).
  StatusOr<DetachResult> Detach(const std::string& target_id, const Client& client,
                                const std::string& lease_id, bool force);
  // The session; using it renews `client`'s leases on it (null: renews nothing).
  StatusOr<std::shared_ptr<Session>> Get(const std::string& target_id, const Client* client);
  std::vector<std::shared_ptr<Session>> List();
  StatusOr<std::shared_ptr<Session>> LoadRecording(const std::vector<v1::RecordingChunk>& chunks,
                                                   const Client& client);
  // The client's connection closed: its leases end.
  void ReleaseClient(const std::string& client_id);
  // Ends the leases nobody used for their lease time, and the traces left without one. A
  // background thread calls it every second; tests call it after moving their clock.
  void ExpireIdleLeases();
  // Detaches every live target (daemon shutdown).
  void DetachAll();
  // Called with each live session once it has left the manager, finished (its last lease
  // ended, it was detached, or its daemon-owned lease ended with the process), from the thread
  // that removed it, outside the manager's lock. Metrics keep an ended target's last values from
  // here; auto-attach counts its targets. Returns an id for RemoveEndedListener, which returns
  // once no call into the listener is in flight. A listener must not add or remove listeners.
  using EndedListener = std::function<void(const std::shared_ptr<Session>&)>;
  int AddEndedListener(EndedListener listener);
  void RemoveEndedListener(int id);
  const target::ProcFs& proc() const { return proc_; }
  const SessionLimits& limits() const { return options_.limits; }
  const Clock& clock() const { return clock_; }

  // Validates an AttachOptions against the limits for this client (exposed for tests and for
  // the CLI's early usage errors).
  StatusOr<LiveSessionOptions> ValidateOptions(const v1::AttachOptions& options,
                                               const Client& client) const;

 private:
  // calibrate_on_first_budget, run once.
  mutable std::once_flag calibrate_once_;
  mutable budget::Calibration calibrated_;
  struct Lease {
    std::string id;
    std::string client;
    uid_t uid = 0;
    uint32_t seconds = 0;  // idle time after which the lease ends
    uint64_t last_use_ns = 0;
    bool until_exit = false;  // Client::until_exit: ends when the trace finishes
  };
  struct Entry {
    std::shared_ptr<Session> session;
    std::vector<Lease> leases;
    bool recording = false;
    uid_t owner = 0;       // who loaded a recording
    bool owner_privileged = false;
    uint64_t seq = 0;      // load order, for eviction
  };

  SessionManager(const SessionManagerOptions& options, Attacher attacher, const Clock& clock);
  void ReapLoop();
  // Removes leases matching `pred`; returns the live sessions left without any (requires mu_).
  template <typename Pred>
  std::vector<std::shared_ptr<Session>> DropLeases(Pred pred);
  static void DetachQuietly(const std::shared_ptr<Session>& s);
  void NotifyEnded(const std::vector<std::shared_ptr<Session>>& ended);

  SessionManagerOptions options_;
  Attacher attacher_;
  const Clock& clock_;
  target::ProcFs proc_;
  std::mutex mu_;
  std::map<std::string, Entry> sessions_;
  std::map<pid_t, std::shared_ptr<std::mutex>> attaching_;  // per-pid attach serialization
  uint64_t next_seq_ = 1;
  uint64_t next_lease_ = 1;
  std::mutex listeners_mu_;
  std::map<int, EndedListener> listeners_;
  int next_listener_ = 1;
  std::condition_variable reap_cv_;
  bool stopping_ = false;
  std::thread reaper_;
};

}  // namespace threadscope::engine
