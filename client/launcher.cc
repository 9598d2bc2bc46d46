#include "client/launcher.h"

#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace threadscope::client {

int ShellStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 1;
}

namespace {

StatusOr<uint64_t> EntryPoint(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/auxv";
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoToStatus(errno, path);
  std::ostringstream read;
  read << in.rdbuf();
  const std::string auxv = read.str();
  for (size_t off = 0; off + 16 <= auxv.size(); off += 16) {
    uint64_t type, value;
    std::memcpy(&type, auxv.data() + off, 8);
    std::memcpy(&value, auxv.data() + off + 8, 8);
    if (type == AT_ENTRY) return value;
  }
  return InternalError("no AT_ENTRY in the auxiliary vector of " + std::to_string(pid));
}

}  // namespace

StatusOr<LaunchedProcess> LaunchedProcess::Start(const std::vector<std::string>& argv,
                                                 const ImageCheck& executes_cpython) {
  if (argv.empty()) return InvalidArgumentError("no command to run");
  int errpipe[2];
  if (pipe2(errpipe, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe");
  pid_t pid = fork();
  if (pid < 0) return ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    close(errpipe[0]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // The CLI blocks signals to read them from a signalfd; the command starts with none blocked.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
    raise(SIGSTOP);
    execvp(args[0], args.data());
    int err = errno;
    (void)!write(errpipe[1], &err, sizeof(err));
    _exit(127);
  }
  close(errpipe[1]);
  LaunchedProcess p;
  p.pid_ = pid;
  p.traced_ = true;

  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFSTOPPED(status)) {
    close(errpipe[0]);
    return InternalError("the child did not stop before exec");
  }
  ptrace(PTRACE_SETOPTIONS, pid, nullptr, PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL);
  ptrace(PTRACE_CONT, pid, nullptr, nullptr);

  uint64_t entry = 0;
  long saved_word = 0;
  bool breakpoint_set = false;
  while (true) {
    if (waitpid(pid, &status, 0) != pid) {
      close(errpipe[0]);
      return ErrnoToStatus(errno, "waitpid");
    }
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      p.exit_status_ = ShellStatus(status);
      p.pid_ = -1;
      int err = 0;
      bool exec_failed = read(errpipe[0], &err, sizeof(err)) == sizeof(err);
      close(errpipe[0]);
      if (exec_failed) {
        return NotFoundError("cannot run " + argv[0] + ": " + std::strerror(err));
      }
      return FailedPreconditionError(argv[0] + " exited (status " +
                                     std::to_string(p.exit_status_) +
                                     ") without starting a CPython interpreter");
    }
    if (!WIFSTOPPED(status)) continue;
    int sig = WSTOPSIG(status);
    if (sig == SIGTRAP && (status >> 16) == PTRACE_EVENT_EXEC) {
      // A new program image. Stop at its entry point if it is CPython, else follow further execs.
      if (!executes_cpython || executes_cpython(pid)) {
        auto e = EntryPoint(pid);
        if (!e.ok()) {
          close(errpipe[0]);
          p.Kill();
          return e.status();
        }
        entry = *e;
        errno = 0;
        saved_word = ptrace(PTRACE_PEEKTEXT, pid, reinterpret_cast<void*>(entry), nullptr);
        if (errno == 0) {
          long patched = (saved_word & ~0xffL) | 0xcc;
          breakpoint_set =
              ptrace(PTRACE_POKETEXT, pid, reinterpret_cast<void*>(entry), patched) == 0;
        }
      }
      ptrace(PTRACE_CONT, pid, nullptr, nullptr);
      continue;
    }
    if (sig == SIGTRAP && breakpoint_set) {
      user_regs_struct regs;
      ptrace(PTRACE_GETREGS, pid, nullptr, &regs);
      if (regs.rip == entry + 1) {
        ptrace(PTRACE_POKETEXT, pid, reinterpret_cast<void*>(entry), saved_word);
        regs.rip = entry;
        ptrace(PTRACE_SETREGS, pid, nullptr, &regs);
        close(errpipe[0]);
        return p;  // stopped before main(), libraries mapped
      }
    }
    // Any other stop: deliver the signal and keep going.
    ptrace(PTRACE_CONT, pid, nullptr, reinterpret_cast<void*>(static_cast<long>(
                                                   sig == SIGTRAP ? 0 : sig)));
  }
}

Status LaunchedProcess::Resume() {
  if (!traced_ || pid_ <= 0) return OkStatus();
  traced_ = false;
  if (ptrace(PTRACE_DETACH, pid_, nullptr, nullptr) != 0) {
    return ErrnoToStatus(errno, "cannot resume pid " + std::to_string(pid_));
  }
  return OkStatus();
}

void LaunchedProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status;
  if (waitpid(pid_, &status, 0) == pid_) exit_status_ = ShellStatus(status);
  pid_ = -1;
}

int LaunchedProcess::Wait() {
  if (pid_ <= 0) return exit_status_;
  int status;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_status_ = ShellStatus(status);
  pid_ = -1;
  return exit_status_;
}

int LaunchedProcess::Poll() {
  if (pid_ <= 0) return exit_status_;
  int status;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_status_ = ShellStatus(status);
    pid_ = -1;
    return exit_status_;
  }
  return -1;
}

}  // namespace threadscope::client
