// A live process, held still while it is read: every thread is stopped with PTRACE_SEIZE +
// PTRACE_INTERRUPT (no signal is sent; a system call in progress is restarted transparently when
// the thread resumes), its registers are read, and all are detached as soon as the reading is
// done. The pause is measured from the first interrupt to the last detach.
//
// Without stopping (--nonblocking), tasks and their system calls come from /proc, and the caller
// reads until two passes agree.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/dump/reader.h"

namespace threadscope::dump {

class ThreadStopper {
 public:
  explicit ThreadStopper(pid_t pid) : pid_(pid) {}
  ~ThreadStopper() { Detach(); }
  ThreadStopper(const ThreadStopper&) = delete;
  ThreadStopper& operator=(const ThreadStopper&) = delete;

  // Stops every thread (threads created meanwhile too, up to a few rounds). Errors:
  // PermissionDenied (ptrace refused: no rights, or another tracer), NotFound (no such
  // process), Aborted (it exited while being stopped).
  Status Stop() {
    TS_RETURN_IF_ERROR(Interrupt());
    return WaitStopped();
  }
  // The two halves: after Interrupt, no thread runs Python code any more (a thread running on
  // a CPU is kicked at once; a sleeping one enters the stop as soon as it is scheduled, before
  // returning to user space), so memory can be read while WaitStopped waits for the slowest
  // to get there, registers and threads created meanwhile.
  Status Interrupt();
  Status WaitStopped();
  // Stopped threads with registers (and the system call each was in).
  const std::vector<TaskContext>& tasks() const { return tasks_; }
  // Resumes every thread; idempotent. Returns the pause in nanoseconds.
  uint64_t Detach();
  uint64_t pause_ns() const { return pause_ns_; }
  // Threads that did not reach a stop in time (uninterruptible sleep): read running.
  const std::vector<pid_t>& unstopped() const { return unstopped_; }

 private:
  struct Seized {
    pid_t tid;
    bool stopped = false;
    int pending_signal = 0;  // a signal that arrived while stopping: delivered at detach
  };
  Status SeizeNew(const std::vector<pid_t>& tids);
  pid_t pid_;
  std::vector<Seized> seized_;
  std::vector<TaskContext> tasks_;
  std::vector<pid_t> unstopped_;
  uint64_t t0_ = 0;
  uint64_t pause_ns_ = 0;
  bool detached_ = true;
};

// The process's tasks from /proc, each with its name and (when blocked) the system call it is
// in, from /proc/PID/task/TID/syscall. For --nonblocking.
StatusOr<std::vector<TaskContext>> ListTasks(pid_t pid, bool with_syscalls);

// A thread's system call from registers stopped by ptrace (or saved in a core): it is in one
// when orig_rax names it and rax holds the kernel's restart code.
std::optional<SyscallState> SyscallFromRegisters(const Registers& r);

// Thread names (comm) for the tasks, read after the threads run again.
void FillTaskNames(pid_t pid, std::vector<TaskContext>* tasks);

}  // namespace threadscope::dump
