#include "daemon/target/process_handle.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <sstream>

namespace threadscope::target {

namespace {

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

int PidfdOpen(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0u));
}

StatusOr<uint64_t> StartTicks(pid_t pid, const ProcFs& proc) {
  auto stat = ReadFileToString(proc.PidDir(pid) + "/stat");
  if (!stat.ok()) return NotFoundError("no process with pid " + std::to_string(pid));
  auto task = ParseStat(*stat);
  if (!task) return DataLossError("cannot parse /proc/" + std::to_string(pid) + "/stat");
  return task->start_ticks;
}

}  // namespace

StatusOr<std::shared_ptr<const ProcessHandle>> ProcessHandle::Open(pid_t pid, const ProcFs& proc) {
  if (pid <= 0) return InvalidArgumentError("pid must be a positive integer, got " +
                                            std::to_string(pid));
  int fd = PidfdOpen(pid);
  if (fd < 0) {
    if (errno == ESRCH) return NotFoundError("no process with pid " + std::to_string(pid));
    if (errno == EINVAL) {
      return InvalidArgumentError(std::to_string(pid) +
                                  " is not a process id (a thread? attach to the process)");
    }
    return ErrnoToStatus(errno, "pidfd_open(" + std::to_string(pid) + ")");
  }
  std::shared_ptr<ProcessHandle> h(new ProcessHandle(fd, pid));
  auto ticks = StartTicks(pid, proc);
  if (!ticks.ok()) return ticks.status();
  h->start_ticks_ = *ticks;
  if (!h->Alive()) return NotFoundError("process " + std::to_string(pid) + " has exited");
  return std::shared_ptr<const ProcessHandle>(std::move(h));
}

StatusOr<std::shared_ptr<const ProcessHandle>> ProcessHandle::Adopt(int pidfd,
                                                                    const ProcFs& proc) {
  auto info = ReadFileToString("/proc/self/fdinfo/" + std::to_string(pidfd));
  if (!info.ok()) {
    close(pidfd);
    return info.status();
  }
  pid_t pid = 0;
  std::istringstream lines(*info);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("Pid:", 0) == 0) pid = static_cast<pid_t>(std::stol(line.substr(4)));
  }
  std::shared_ptr<ProcessHandle> h(new ProcessHandle(pidfd, pid));
  // -1: the process exited; 0: it lives in a pid namespace we cannot see.
  if (pid <= 0) return NotFoundError("the peer process has exited or is not visible");
  auto ticks = StartTicks(pid, proc);
  if (!ticks.ok()) return ticks.status();
  h->start_ticks_ = *ticks;
  if (!h->Alive()) return NotFoundError("process " + std::to_string(pid) + " has exited");
  return std::shared_ptr<const ProcessHandle>(std::move(h));
}

ProcessHandle::~ProcessHandle() {
  if (fd_ >= 0) close(fd_);
}

bool ProcessHandle::Alive() const { return !WaitExit(0); }

bool ProcessHandle::WaitExit(int timeout_ms) const {
  pollfd p{fd_, POLLIN, 0};
  for (;;) {
    int n = poll(&p, 1, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    return n > 0;
  }
}

}  // namespace threadscope::target
