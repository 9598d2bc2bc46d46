#include "daemon/service/peer_auth.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <sstream>

namespace threadscope::service {

namespace {

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5
#endif

constexpr uint64_t kCapSysPtrace = uint64_t{1} << 19;

std::optional<uint64_t> InodeOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return std::nullopt;
  return static_cast<uint64_t>(st.st_ino);
}

struct StatusFields {
  uint64_t cap_eff = 0;
  size_t ns_depth = 0;  // entries in NSpid
};

std::optional<StatusFields> ReadStatusFields(const std::string& path) {
  auto status = target::ReadFileToString(path);
  if (!status.ok()) return std::nullopt;
  StatusFields out;
  std::istringstream lines(*status);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      try {
        out.cap_eff = std::stoull(line.substr(7), nullptr, 16);
      } catch (...) {
        return std::nullopt;
      }
    } else if (line.rfind("NSpid:", 0) == 0) {
      std::istringstream value(line.substr(6));
      long p;
      while (value >> p) ++out.ns_depth;
    }
  }
  return out;
}

int YamaPtraceScope(const target::ProcFs& proc) {
  std::string path = proc.root() + "/sys/kernel/yama/ptrace_scope";
  auto v = target::ReadFileToString(path);
  if (!v.ok()) {
    // No Yama in this kernel: no extra restriction. Unreadable for another reason: fail closed.
    return v.status().code() == StatusCode::kNotFound ? 0 : 3;
  }
  try {
    return std::stoi(*v);
  } catch (...) {
    return 3;
  }
}

bool IsAncestor(pid_t ancestor, pid_t pid, const target::ProcFs& proc) {
  for (int hops = 0; pid > 1 && hops < 4096; ++hops) {
    auto st = proc.Status(pid);
    if (!st.ok()) return false;
    if (st->ppid == ancestor) return true;
    pid = st->ppid;
  }
  return false;
}

// True when the pid namespace of `pid` is `ns` or nested inside it.
bool InNamespaceOrBelow(pid_t pid, uint64_t ns, const target::ProcFs& proc) {
  std::string path = proc.PidDir(pid) + "/ns/pid";
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  for (int depth = 0; depth < 33; ++depth) {
    struct stat st;
    if (fstat(fd, &st) != 0) break;
    if (static_cast<uint64_t>(st.st_ino) == ns) {
      close(fd);
      return true;
    }
    int parent = ioctl(fd, NS_GET_PARENT);
    close(fd);
    if (parent < 0) return false;  // the top, or a namespace we may not see above
    fd = parent;
  }
  close(fd);
  return false;
}

}  // namespace

StatusOr<PeerCredentials> IdentifyPeer(int fd, const target::ProcFs& proc, std::string client) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoToStatus(errno, "SO_PEERCRED");
  }
  PeerCredentials peer;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  peer.client = std::move(client);
  // Without a pidfd the peer process cannot be told from whatever gets its pid later: it then
  // has its uid and gid, nothing more (no privilege, no ancestry, no namespace but ours).
  int pidfd = -1;
  len = sizeof(pidfd);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0 || pidfd < 0) return peer;
  auto handle = target::ProcessHandle::Adopt(pidfd, proc);
  if (!handle.ok()) return peer;  // it already exited: its connection is all that is left
  pid_t pid = (*handle)->pid();
  std::string dir = proc.PidDir(pid);
  auto fields = ReadStatusFields(dir + "/status");
  auto peer_user_ns = InodeOf(dir + "/ns/user");
  auto peer_pid_ns = InodeOf(dir + "/ns/pid");
  auto self_fields = ReadStatusFields(proc.root() + "/self/status");
  auto self_user_ns = InodeOf(proc.root() + "/self/ns/user");
  auto self_pid_ns = InodeOf(proc.root() + "/self/ns/pid");
  // What was read must belong to the process that connected, not to a successor of its pid.
  if (!(*handle)->Alive() || !fields || !peer_user_ns || !peer_pid_ns || !self_fields ||
      !self_user_ns || !self_pid_ns) {
    return peer;
  }
  peer.pid = pid;
  peer.process = *handle;
  peer.pid_ns = *peer_pid_ns;
  peer.pid_ns_level = *peer_pid_ns == *self_pid_ns || fields->ns_depth < self_fields->ns_depth
                          ? 0
                          : fields->ns_depth - self_fields->ns_depth;
  peer.privileged = cred.uid == 0 && (fields->cap_eff & kCapSysPtrace) &&
                    *peer_user_ns == *self_user_ns && *peer_pid_ns == *self_pid_ns;
  return peer;
}

std::optional<std::string> PeerRegistry::Add(int fd, PeerCredentials creds) {
  Entry e;
  e.creds = std::move(creds);
  struct stat st;
  if (fstat(fd, &st) == 0) {
    e.dev = static_cast<uint64_t>(st.st_dev);
    e.ino = static_cast<uint64_t>(st.st_ino);
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<std::string> replaced;
  if (auto it = by_fd_.find(fd); it != by_fd_.end()) replaced = it->second.creds.client;
  by_fd_[fd] = std::move(e);
  return replaced;
}

bool PeerRegistry::StillSame(int fd, const Entry& e) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && static_cast<uint64_t>(st.st_dev) == e.dev &&
         static_cast<uint64_t>(st.st_ino) == e.ino;
}

std::optional<PeerCredentials> PeerRegistry::Lookup(const std::string& peer) const {
  if (peer.rfind("fd:", 0) != 0 || peer.size() > 16) return std::nullopt;
  int fd = 0;
  for (size_t i = 3; i < peer.size(); ++i) {
    if (peer[i] < '0' || peer[i] > '9') return std::nullopt;
    fd = fd * 10 + (peer[i] - '0');
  }
  if (peer.size() == 3) return std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end() || !StillSame(fd, it->second)) return std::nullopt;
  return it->second.creds;
}

std::vector<std::string> PeerRegistry::Prune() {
  std::vector<std::string> gone;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = by_fd_.begin(); it != by_fd_.end();) {
    if (StillSame(it->first, it->second)) {
      ++it;
      continue;
    }
    gone.push_back(it->second.creds.client);
    it = by_fd_.erase(it);
  }
  return gone;
}

size_t PeerRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_fd_.size();
}

StatusOr<pid_t> ResolveTargetPid(const PeerCredentials& caller, pid_t pid,
                                 const target::ProcFs& proc) {
  if (pid <= 0) {
    return InvalidArgumentError("pid must be a positive integer, got " + std::to_string(pid));
  }
  if (caller.trusted || caller.pid_ns_level == 0) return pid;
  // The caller lives in a pid namespace below ours: find the process it calls `pid`.
  std::string not_found = "no process with pid " + std::to_string(pid) + " in your pid namespace";
  DIR* d = opendir(proc.root().c_str());
  if (!d) return NotFoundError(not_found);
  std::vector<pid_t> matches;
  while (dirent* entry = readdir(d)) {
    if (entry->d_name[0] < '1' || entry->d_name[0] > '9') continue;
    pid_t host = static_cast<pid_t>(std::strtol(entry->d_name, nullptr, 10));
    auto st = proc.Status(host);
    if (!st.ok() || st->tgid != host || st->ns_pids.size() <= caller.pid_ns_level) continue;
    if (st->ns_pids[caller.pid_ns_level] != pid) continue;
    if (InNamespaceOrBelow(host, caller.pid_ns, proc)) matches.push_back(host);
  }
  closedir(d);
  if (matches.size() != 1) return NotFoundError(not_found);
  return matches.front();
}

Status CheckMayTrace(const PeerCredentials& caller, pid_t target, const target::ProcFs& proc) {
  if (caller.MayTraceAnything()) return OkStatus();
  auto st = proc.Status(target);
  if (!st.ok()) return NotFoundError("no process with pid " + std::to_string(target));
  std::string who = "uid " + std::to_string(caller.uid);
  if (caller.pid_ns_level > 0 &&
      (caller.pid_ns == 0 || !InNamespaceOrBelow(target, caller.pid_ns, proc))) {
    return NotFoundError("no process with pid " + std::to_string(target) +
                         " in your pid namespace");
  }
  for (int i = 0; i < 3; ++i) {
    if (st->uid[i] != caller.uid || st->gid[i] != caller.gid) {
      return PermissionDeniedError(who + " may not trace pid " + std::to_string(target) +
                                   " (owned by uid " + std::to_string(st->uid[1]) +
                                   "): run threadscope as the process owner or as root");
    }
  }
  struct stat sb;
  std::string dir = proc.PidDir(target);
  if (stat(dir.c_str(), &sb) == 0 && sb.st_uid != st->uid[1]) {
    return PermissionDeniedError("pid " + std::to_string(target) +
                                 " is not dumpable (setuid, or prctl(PR_SET_DUMPABLE, 0)); only "
                                 "root may trace it");
  }
  switch (YamaPtraceScope(proc)) {
    case 0:
      return OkStatus();
    case 1:
      // The connecting process must still be the one that connected (its pidfd says so; a
      // caller's pid is only known together with its pidfd, see IdentifyPeer).
      if (caller.pid > 0 && (!caller.process || caller.process->Alive()) &&
          IsAncestor(caller.pid, target, proc)) {
        return OkStatus();
      }
      return PermissionDeniedError(
          "kernel.yama.ptrace_scope=1 lets " + who + " trace only its own descendants; start the "
          "program with `threadscope run`, or run as root");
    default:
      return PermissionDeniedError("kernel.yama.ptrace_scope forbids tracing by " + who +
                                   " (or could not be read); run threadscope as root");
  }
}

}  // namespace threadscope::service
