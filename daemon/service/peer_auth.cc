#include "daemon/service/peer_auth.h"

#include <sys/stat.h>

#include <sstream>

namespace threadscope::service {

void PeerRegistry::Add(int fd, const PeerCredentials& creds) {
  std::lock_guard<std::mutex> lock(mu_);
  by_fd_[fd] = creds;
}

void PeerRegistry::Remove(int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  by_fd_.erase(fd);
}

std::optional<PeerCredentials> PeerRegistry::Lookup(const std::string& peer) const {
  if (peer.rfind("fd:", 0) != 0) return std::nullopt;
  int fd = 0;
  try {
    fd = std::stoi(peer.substr(3));
  } catch (...) {
    return std::nullopt;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return std::nullopt;
  return it->second;
}

bool HasPtraceCapability(pid_t pid, const target::ProcFs& proc) {
  auto status = target::ReadFileToString(proc.PidDir(pid) + "/status");
  if (!status.ok()) return false;
  std::istringstream lines(*status);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    uint64_t caps = std::stoull(line.substr(7), nullptr, 16);
    return caps & (uint64_t{1} << 19);  // CAP_SYS_PTRACE
  }
  return false;
}

namespace {

int YamaPtraceScope(const target::ProcFs& proc) {
  auto v = target::ReadFileToString(proc.root() + "/sys/kernel/yama/ptrace_scope");
  if (!v.ok()) return 0;
  try {
    return std::stoi(*v);
  } catch (...) {
    return 0;
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

}  // namespace

Status CheckMayTrace(const PeerCredentials& caller, pid_t target, const target::ProcFs& proc) {
  if (caller.trusted || caller.uid == 0) return OkStatus();
  if (caller.pid > 0 && HasPtraceCapability(caller.pid, proc)) return OkStatus();
  auto st = proc.Status(target);
  if (!st.ok()) return NotFoundError("no process with pid " + std::to_string(target));
  std::string who = "uid " + std::to_string(caller.uid);
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
      if (caller.pid > 0 && IsAncestor(caller.pid, target, proc)) return OkStatus();
      return PermissionDeniedError(
          "kernel.yama.ptrace_scope=1 lets " + who + " trace only its own descendants; start the "
          "program with `threadscope run`, or run as root");
    default:
      return PermissionDeniedError("kernel.yama.ptrace_scope forbids tracing by " + who +
                                   "; run threadscope as root");
  }
}

}  // namespace threadscope::service
