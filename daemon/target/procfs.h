// Reading a target process through /proc: its mappings, tasks, credentials and namespaces.
//
// Every function takes the procfs root so tests can point it at a fixture tree. Paths that
// come from the target (maps, exe) are in the *target's* mount namespace; target_file.h opens
// the files they name safely (map_files, /proc/PID/exe, or inside /proc/PID/root).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/common/status.h"

namespace threadscope::target {

struct Mapping {
  uint64_t start = 0;
  uint64_t end = 0;
  std::string perms;  // "r-xp"
  uint64_t offset = 0;
  std::string dev;  // "fd:01": major:minor of the file's device, in hex
  unsigned dev_major = 0;
  unsigned dev_minor = 0;
  uint64_t inode = 0;
  std::string path;  // as the target sees it; empty for anonymous mappings

  bool executable() const { return perms.size() > 2 && perms[2] == 'x'; }
};

struct TaskInfo {
  pid_t tid = 0;
  std::string comm;
  uint64_t start_ticks = 0;  // field 22 of stat: clock ticks after boot
};

struct ProcessStatus {
  std::string name;
  pid_t tgid = 0;
  pid_t ppid = 0;
  uid_t uid[4] = {0, 0, 0, 0};  // real, effective, saved, filesystem
  gid_t gid[4] = {0, 0, 0, 0};
  std::vector<pid_t> ns_pids;   // NSpid: outermost first; back() is the pid in its own namespace
  char state = '?';
};

class ProcFs {
 public:
  explicit ProcFs(std::string root = "/proc") : root_(std::move(root)) {}

  const std::string& root() const { return root_; }
  std::string PidDir(pid_t pid) const;

  // True when the process exists and is not a zombie.
  bool IsAlive(pid_t pid) const;
  StatusOr<ProcessStatus> Status(pid_t pid) const;
  StatusOr<std::vector<Mapping>> Maps(pid_t pid) const;
  // The executable's path as the process sees it, without the " (deleted)" the kernel appends
  // to a replaced binary: for reports only (open the executable with OpenProcessExe).
  StatusOr<std::string> ExePath(pid_t pid) const;
  // readlink(/proc/PID/exe) as is: the same string /proc/PID/maps shows for its mappings.
  StatusOr<std::string> ExeLink(pid_t pid) const;
  StatusOr<std::vector<TaskInfo>> Tasks(pid_t pid) const;
  StatusOr<std::string> TaskComm(pid_t pid, pid_t tid) const;
  StatusOr<std::string> Cmdline(pid_t pid) const;  // argv joined by spaces
  // Inode of /proc/PID/ns/<kind> ("mnt", "pid").
  StatusOr<uint64_t> NamespaceInode(pid_t pid, const std::string& kind) const;
  // True when `pid` runs in a different mount namespace from the host's (PID 1's; this
  // process's own when PID 1's cannot be read). A daemon confined by systemd (ProtectSystem=)
  // has a private mount namespace of its own, so its own is not the reference.
  bool InOtherMountNamespace(pid_t pid) const;

 private:
  std::string root_;
};

// Parses one line of /proc/PID/maps. Exposed for tests.
std::optional<Mapping> ParseMapsLine(const std::string& line);
// Parses /proc/PID/task/TID/stat content ("pid (comm) S ...") into comm and start ticks.
std::optional<TaskInfo> ParseStat(const std::string& content);

// CLOCK_MONOTONIC now, in nanoseconds (the clock BPF's bpf_ktime_get_ns uses), for code outside
// the engine. The engine and the service take a Clock (daemon/common/clock.h), which tests drive.
uint64_t MonotonicNowNs();

StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace threadscope::target
