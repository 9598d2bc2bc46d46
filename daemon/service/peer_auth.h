// Who is calling, and may they trace this process?
//
// The daemon accepts Unix-socket connections itself, reads SO_PEERCRED, and hands the fd to
// gRPC (AddInsecureChannelFromFd), whose peer string for such a channel is "fd:<n>". The
// credentials recorded at accept are looked up from that string per call.
//
// The rule (the kernel's ptrace_may_access, PTRACE_MODE_ATTACH_REALCREDS, as far as it can be
// evaluated from outside): root or CAP_SYS_PTRACE may trace anything; otherwise the caller's uid
// must equal the target's real, effective and saved uid, its gid likewise, the target must be
// dumpable, and Yama's ptrace_scope must allow it (1: the caller is an ancestor of the target).
#pragma once

#include <sys/types.h>

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/common/status.h"
#include "daemon/target/procfs.h"

namespace threadscope::service {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  bool trusted = false;  // the in-process engine: the caller is this process
};

class PeerRegistry {
 public:
  void Add(int fd, const PeerCredentials& creds);
  void Remove(int fd);
  // Credentials for a gRPC peer string; nullopt when unknown.
  std::optional<PeerCredentials> Lookup(const std::string& peer) const;

 private:
  mutable std::mutex mu_;
  std::map<int, PeerCredentials> by_fd_;
};

// OK, or PermissionDenied saying why not and what to do.
Status CheckMayTrace(const PeerCredentials& caller, pid_t target, const target::ProcFs& proc);

// True when `pid` has CAP_SYS_PTRACE in its effective set.
bool HasPtraceCapability(pid_t pid, const target::ProcFs& proc);

}  // namespace threadscope::service
