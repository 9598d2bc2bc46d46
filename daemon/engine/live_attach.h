// Attaching through BPF: the one place the engine meets the kernel. Inspects the process,
// plans the probes, loads and attaches them (loader::BpfTracer), builds the target message and
// starts a LiveSession over the ring buffer.
#pragma once

#include <memory>
#include <string>

#include "daemon/common/clock.h"
#include "daemon/engine/live_session.h"
#include "daemon/engine/session_manager.h"

namespace threadscope::engine {

// Errors: see ThreadscopeService.Attach in the proto. `process` is the target, pinned: the
// attach fails (ABORTED) when it exits meanwhile.
StatusOr<std::shared_ptr<LiveSession>> AttachLive(std::string id,
                                                  std::shared_ptr<const target::Process> process,
                                                  const LiveSessionOptions& options,
                                                  const target::ProcFs& proc,
                                                  const Clock& clock = SystemClock());

// The SessionManager's attacher for the daemon and the CLI's in-process engine. Fails early,
// here, if this machine has no capstone: every attach needs one.
StatusOr<SessionManager::Attacher> BpfAttacher();

}  // namespace threadscope::engine
