// All targets of one engine (the daemon, or the CLI's in-process engine): attach/detach by pid,
// recordings loaded for offline reports, and lease expiry so that a client that vanished
// (killed CLI) leaves nothing attached.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/engine/live_session.h"
#include "daemon/engine/session.h"
#include "daemon/target/disasm.h"
#include "daemon/target/procfs.h"

namespace threadscope::engine {

struct SessionManagerOptions {
  std::string proc_root = "/proc";
  LiveSessionOptions live;
  size_t max_recordings = 16;  // loaded recordings kept, oldest evicted first
};

class SessionManager {
 public:
  static StatusOr<std::unique_ptr<SessionManager>> Create(const SessionManagerOptions& options);
  ~SessionManager();

  struct AttachResult {
    std::shared_ptr<Session> session;
    bool newly_attached = false;
  };
  StatusOr<AttachResult> Attach(pid_t pid, const v1::AttachOptions& options);
  StatusOr<v1::Snapshot> Detach(const std::string& target_id);
  StatusOr<std::shared_ptr<Session>> Get(const std::string& target_id);
  std::vector<std::shared_ptr<Session>> List();
  StatusOr<std::shared_ptr<Session>> LoadRecording(const std::vector<v1::RecordingChunk>& chunks);
  // Detaches every live target (daemon shutdown).
  void DetachAll();
  const target::ProcFs& proc() const { return proc_; }

 private:
  SessionManager(const SessionManagerOptions& options, std::unique_ptr<target::Disassembler> dis);
  void ReapLoop();

  SessionManagerOptions options_;
  target::ProcFs proc_;
  std::unique_ptr<target::Disassembler> dis_;
  std::mutex mu_;
  std::mutex attach_mu_;  // one attach at a time: attaching is heavy and must not race itself
  std::map<std::string, std::shared_ptr<Session>> sessions_;
  uint64_t next_recording_ = 1;
  std::condition_variable reap_cv_;
  bool stopping_ = false;
  std::thread reaper_;
};

}  // namespace threadscope::engine
