// A process pinned by a pidfd: an identity that survives pid reuse.
//
// A pid names whatever process holds it now; between a permission check and an attach (or
// between two reads of /proc) the process can exit and its pid be given to another. A pidfd
// refers to one process for as long as it is open: it becomes readable when that process exits,
// and reading /proc/PID/... followed by Alive() proves what was read belonged to it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>

#include "daemon/common/status.h"
#include "daemon/target/procfs.h"

namespace threadscope::target {

// What the engine needs of a pinned target: who it is, and whether it still runs. ProcessHandle
// (a pidfd) is the real one; tests give the engine processes that exit when they say so.
class Process {
 public:
  virtual ~Process() = default;
  virtual pid_t pid() const = 0;  // in this process's pid namespace
  virtual uint64_t start_ticks() const = 0;
  // True while the process has not exited. What was read about it by pid (from /proc, or its
  // memory) belonged to it only if it is still alive afterwards.
  virtual bool Alive() const = 0;
};

class ProcessHandle final : public Process {
 public:
  // pidfd_open(pid), then its start time from /proc/PID/stat, confirmed by Alive().
  // NotFound when there is no such process (or it is a zombie).
  static StatusOr<std::shared_ptr<const ProcessHandle>> Open(pid_t pid, const ProcFs& proc);
  // Takes ownership of `pidfd` (e.g. from SO_PEERPIDFD); its pid comes from /proc/self/fdinfo.
  static StatusOr<std::shared_ptr<const ProcessHandle>> Adopt(int pidfd, const ProcFs& proc);
  ~ProcessHandle();
  ProcessHandle(const ProcessHandle&) = delete;
  ProcessHandle& operator=(const ProcessHandle&) = delete;

  pid_t pid() const override { return pid_; }
  int fd() const { return fd_; }
  uint64_t start_ticks() const override { return start_ticks_; }
  // A pidfd polls readable once the process has exited.
  bool Alive() const override;
  // Blocks up to timeout_ms for the process to exit; true when it has.
  bool WaitExit(int timeout_ms) const;

 private:
  ProcessHandle(int fd, pid_t pid) : fd_(fd), pid_(pid) {}
  int fd_ = -1;
  pid_t pid_ = 0;
  uint64_t start_ticks_ = 0;
};

}  // namespace threadscope::target
