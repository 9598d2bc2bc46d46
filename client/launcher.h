// `threadscope run`: starts a command so that tracing is in place before any Python code runs.
//
// The child runs under ptrace only until it has exec'd a CPython interpreter (following any
// shims, env or shell wrappers that exec) and the dynamic loader has mapped its libraries: a
// breakpoint on the executable's entry point stops it before main(). The caller attaches the
// probes, then Resume() detaches ptrace and the program runs untouched.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "daemon/common/status.h"

namespace threadscope::client {

// Whether the image a process just exec'd is (or links) CPython. Reading ELF files is the
// engine's (daemon/target), so the binary hands this in from its engine adapter
// (client/in_process.h); without one, the first image exec'd counts.
using ImageCheck = std::function<bool(pid_t)>;

class LaunchedProcess {
 public:
  // Errors: NotFound (cannot execute argv[0]), FailedPrecondition (it exited without ever
  // running CPython; exit_status() tells how it ended).
  static StatusOr<LaunchedProcess> Start(const std::vector<std::string>& argv,
                                         const ImageCheck& executes_cpython);

  pid_t pid() const { return pid_; }
  // Lets the stopped child run, without ptrace.
  Status Resume();
  // Kills the child (and reaps it), e.g. when attaching failed.
  void Kill();
  // Blocks until the child exits; returns its shell-style status (code, or 128 + signal).
  // Non-blocking variant: returns -1 while it still runs.
  int Wait();
  int Poll();
  int exit_status() const { return exit_status_; }

 private:
  pid_t pid_ = -1;
  bool traced_ = false;
  int exit_status_ = -1;
};

// Shell-style status from a waitpid() status.
int ShellStatus(int wait_status);

}  // namespace threadscope::client
