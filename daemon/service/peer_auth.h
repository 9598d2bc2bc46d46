// Who is calling, and may they trace this process?
//
// The daemon accepts Unix-socket connections itself and decides, once per connection and at
// accept time, who the peer is: uid/gid from SO_PEERCRED (fixed by the kernel at connect), the
// connecting process pinned by a pidfd (SO_PEERPIDFD), its pid and user namespaces. Nothing is
// re-read later from a path the caller controls. gRPC then serves the connection
// (AddInsecureChannelFromFd); its peer string for such a channel is "fd:<n>", and the registry
// maps it back to what was decided at accept (checking the fd still names the same socket).
//
// The rule (the kernel's ptrace_may_access, PTRACE_MODE_ATTACH_REALCREDS, as far as it can be
// evaluated from outside):
//   - "privileged" callers may trace anything: uid 0 at connect, holding CAP_SYS_PTRACE in the
//     daemon's own user namespace, in the daemon's pid namespace. Root in a container (another
//     pid namespace, or without CAP_SYS_PTRACE) and capabilities held in a user namespace of the
//     caller's own making count for nothing;
//   - everyone else: the target must be visible in the caller's pid namespace (targets are named
//     by their pid there), its real, effective and saved uid and gid must equal the caller's,
//     it must be dumpable, and Yama's ptrace_scope must allow it (1: the caller is an ancestor).
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/target/process_handle.h"
#include "daemon/target/procfs.h"

namespace threadscope::service {

struct PeerCredentials {
  pid_t pid = 0;  // the connecting process, in the daemon's pid namespace; 0 = unknown
  uid_t uid = 0;
  gid_t gid = 0;
  bool trusted = false;     // the in-process engine, or a TCP token holder: the operator
  bool privileged = false;  // see the file comment
  // The caller's pid namespace: 0 levels below the daemon's = the daemon's own.
  size_t pid_ns_level = 0;
  uint64_t pid_ns = 0;  // its inode (0 when unknown)
  // Which connection: leases belong to clients, and a client's lease ends with its connection.
  std::string client;
  std::shared_ptr<const target::ProcessHandle> process;  // the connecting process, if known

  bool MayTraceAnything() const { return trusted || privileged; }
};

// Decides who is at the other end of an accepted Unix socket. `client` names the connection.
StatusOr<PeerCredentials> IdentifyPeer(int fd, const target::ProcFs& proc, std::string client);

class PeerRegistry {
 public:
  // Records what was decided at accept for the socket `fd`. The number may be that of a closed
  // connection not yet pruned: its client is returned (its leases end).
  std::optional<std::string> Add(int fd, PeerCredentials creds);
  // Credentials for a gRPC peer string ("fd:<n>"); nullopt when unknown or when the fd no
  // longer names the socket that was accepted (its connection closed and the number was reused).
  std::optional<PeerCredentials> Lookup(const std::string& peer) const;
  // Drops the entries whose connection has closed; returns their client names.
  std::vector<std::string> Prune();
  size_t size() const;

 private:
  struct Entry {
    PeerCredentials creds;
    uint64_t dev = 0;
    uint64_t ino = 0;
  };
  static bool StillSame(int fd, const Entry& e);
  mutable std::mutex mu_;
  std::map<int, Entry> by_fd_;
};

// The host pid (the daemon's namespace) of the process the caller calls `pid` in its own pid
// namespace. NotFound when no process with that pid is visible to the caller.
StatusOr<pid_t> ResolveTargetPid(const PeerCredentials& caller, pid_t pid,
                                 const target::ProcFs& proc);

// OK, or PermissionDenied saying why not and what to do. `target` is a host pid.
Status CheckMayTrace(const PeerCredentials& caller, pid_t target, const target::ProcFs& proc);

}  // namespace threadscope::service
