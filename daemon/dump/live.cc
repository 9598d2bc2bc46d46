#include "daemon/dump/live.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "daemon/target/procfs.h"

namespace threadscope::dump {

namespace {

constexpr int kStopRounds = 4;               // re-list tasks this many times for new threads
constexpr uint64_t kStopTimeoutNs = 500'000'000;  // a thread in D state may never stop

std::vector<pid_t> TaskIds(pid_t pid) {
  std::vector<pid_t> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    out.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string TracerOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("TracerPid:", 0) == 0) {
      std::string v = line.substr(10);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return "";
}

void Nap(long ns) {
  timespec ts{0, ns};
  nanosleep(&ts, nullptr);
}

}  // namespace

std::optional<SyscallState> SyscallFromRegisters(const Registers& r) {
  // ERESTARTSYS 512, ERESTARTNOINTR 513, ERESTARTNOHAND 514, ERESTART_RESTARTBLOCK 516
  // (include/linux/errno.h), EINTR 4: the kernel left the call to be restarted.
  if (r.orig_rax < 0) return std::nullopt;
  const int64_t rax = r.rax;
  if (rax != -512 && rax != -513 && rax != -514 && rax != -516 && rax != -4) return std::nullopt;
  SyscallState s;
  s.nr = r.orig_rax;
  s.args = r.args;
  return s;
}

Status ThreadStopper::SeizeNew(const std::vector<pid_t>& tids) {
  // Seize them all first (nothing stops yet), then interrupt them in a tight loop: each
  // interrupt wakes a thread that would otherwise preempt us between the two calls.
  size_t first_new = seized_.size();
  for (pid_t tid : tids) {
    bool known = std::any_of(seized_.begin(), seized_.end(),
                             [&](const Seized& s) { return s.tid == tid; });
    if (known) continue;
    if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
      int err = errno;
      if (err == ESRCH) {
        if (tid == pid_) return AbortedError("process " + std::to_string(pid_) + " exited");
        continue;  // a thread that ended meanwhile
      }
      if (err == EPERM && !seized_.empty()) {
        // Permission does not change from one thread to the next: this thread is exiting
        // (the kernel refuses to attach to an exiting task). The process may be going.
        continue;
      }
      if (err == EPERM && !target::ProcFs().IsAlive(pid_)) {
        return AbortedError("process " + std::to_string(pid_) + " exited");
      }
      if (err == EPERM) {
        std::string tracer = TracerOf(pid_);
        if (!tracer.empty() && tracer != "0") {
          return PermissionDeniedError("process " + std::to_string(pid_) +
                                       " is already being traced by pid " + tracer +
                                       " (a debugger?): detach it, or use --nonblocking");
        }
        return PermissionDeniedError(
            "not allowed to ptrace process " + std::to_string(pid_) +
            ": dump needs CAP_SYS_PTRACE or the same user (and Yama's ptrace_scope), or "
            "--nonblocking with read access to its memory");
      }
      return ErrnoToStatus(err, "ptrace(PTRACE_SEIZE, " + std::to_string(tid) + ")");
    }
    seized_.push_back({tid});
  }
  if (first_new < seized_.size() && first_new == 0) t0_ = target::MonotonicNowNs();
  for (size_t i = first_new; i < seized_.size(); ++i) {
    if (ptrace(PTRACE_INTERRUPT, seized_[i].tid, nullptr, nullptr) != 0 && errno == ESRCH) {
      seized_[i].stopped = true;  // gone: nothing to wait for
    }
  }
  return OkStatus();
}

Status ThreadStopper::Interrupt() {
  detached_ = false;
  t0_ = target::MonotonicNowNs();
  std::vector<pid_t> tids = TaskIds(pid_);
  if (tids.empty()) return NotFoundError("no process with pid " + std::to_string(pid_));
  return SeizeNew(tids);
}

Status ThreadStopper::WaitStopped() {
  std::vector<pid_t> tids;
  for (const auto& s : seized_) tids.push_back(s.tid);
  for (int round = 0; round < kStopRounds; ++round) {
    if (round > 0) TS_RETURN_IF_ERROR(SeizeNew(tids));
    // Wait for every interrupted thread to stop. Events are taken as they come (waitid on
    // any child, peeked first so that a child of this process that is not ours is never
    // reaped); if one is not ours, each thread is polled instead.
    const uint64_t deadline = target::MonotonicNowNs() + kStopTimeoutNs;
    size_t pending = 0;
    for (const auto& s : seized_) pending += !s.stopped;
    auto record = [&](Seized& s, int status) {
      --pending;
      s.stopped = true;
      if (WIFEXITED(status) || WIFSIGNALED(status)) {
        s.tid = -s.tid;  // the thread is gone
        return;
      }
      int sig = WSTOPSIG(status);
      // PTRACE_EVENT_STOP is our interrupt; any other stop is a signal that arrived: it is
      // handed back at detach.
      if ((status >> 16) != PTRACE_EVENT_STOP && sig != SIGTRAP && sig != SIGSTOP) {
        s.pending_signal = sig;
      }
    };
    bool peek = true;
    while (pending > 0) {
      bool progressed = false;
      if (peek) {
        siginfo_t si{};
        if (waitid(P_ALL, 0, &si, WEXITED | WSTOPPED | __WALL | WNOHANG | WNOWAIT) == 0 &&
            si.si_pid != 0) {
          auto it = std::find_if(seized_.begin(), seized_.end(),
                                 [&](const Seized& s) { return s.tid == si.si_pid; });
          if (it == seized_.end() || it->stopped) {
            peek = false;  // somebody else's child: poll ours one by one
          } else {
            int status = 0;
            if (waitpid(it->tid, &status, __WALL | WNOHANG) == it->tid) record(*it, status);
            progressed = true;
          }
        }
      } else {
        for (auto& s : seized_) {
          if (s.stopped) continue;
          int status = 0;
          pid_t r = waitpid(s.tid, &status, __WALL | WNOHANG);
          if (r == s.tid) {
            record(s, status);
          } else if (r < 0) {
            record(s, 0);
            s.tid = -std::abs(s.tid);
          }
        }
      }
      if (pending == 0) break;
      if (target::MonotonicNowNs() > deadline) {
        for (auto& s : seized_) {
          if (!s.stopped) unstopped_.push_back(s.tid);
        }
        break;
      }
      if (!progressed) Nap(50'000);
    }
    std::vector<pid_t> now = TaskIds(pid_);
    if (now.empty()) return AbortedError("process " + std::to_string(pid_) + " exited");
    bool fresh = false;
    for (pid_t t : now) {
      fresh = fresh || !std::any_of(seized_.begin(), seized_.end(),
                                    [&](const Seized& s) { return s.tid == t; });
    }
    tids = std::move(now);
    if (!fresh) break;
  }
  for (const auto& s : seized_) {
    if (s.tid <= 0) continue;
    TaskContext t;
    t.tid = s.tid;
    if (std::find(unstopped_.begin(), unstopped_.end(), s.tid) == unstopped_.end()) {
      user_regs_struct u{};
      if (ptrace(PTRACE_GETREGS, s.tid, nullptr, &u) == 0) {
        Registers r;
        r.rip = u.rip;
        r.rsp = u.rsp;
        r.rbp = u.rbp;
        r.fs_base = u.fs_base;
        r.orig_rax = static_cast<int64_t>(u.orig_rax);
        r.rax = static_cast<int64_t>(u.rax);
        r.args = {u.rdi, u.rsi, u.rdx, u.r10, u.r8, u.r9};
        t.syscall = SyscallFromRegisters(r);
        t.regs = r;
      }
    }
    tasks_.push_back(std::move(t));
  }
  bool main_alive = std::any_of(seized_.begin(), seized_.end(),
                                [&](const Seized& s) { return s.tid == pid_; });
  if (!main_alive) return AbortedError("process " + std::to_string(pid_) + " exited");
  return OkStatus();
}

uint64_t ThreadStopper::Detach() {
  if (detached_) return pause_ns_;
  for (const auto& s : seized_) {
    if (s.tid <= 0) continue;
    ptrace(PTRACE_DETACH, s.tid, nullptr,
           reinterpret_cast<void*>(static_cast<uintptr_t>(s.pending_signal)));
  }
  pause_ns_ = target::MonotonicNowNs() - t0_;
  detached_ = true;
  return pause_ns_;
}

StatusOr<std::vector<TaskContext>> ListTasks(pid_t pid, bool with_syscalls) {
  std::vector<pid_t> tids = TaskIds(pid);
  if (tids.empty()) return NotFoundError("no process with pid " + std::to_string(pid));
  std::vector<TaskContext> out;
  for (pid_t tid : tids) {
    TaskContext t;
    t.tid = tid;
    if (with_syscalls) {
      const std::string path =
          "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/syscall";
      std::ifstream in(path);
      std::string first;
      if (!in.is_open()) {
        if (access(path.c_str(), F_OK) == 0) {
          return PermissionDeniedError("cannot read " + path +
                                       ": dump needs ptrace rights on the process");
        }
        continue;  // the thread ended
      }
      if ((in >> first) && first != "running" && first != "-1") {
        SyscallState s;
        s.nr = std::strtoll(first.c_str(), nullptr, 10);
        for (auto& a : s.args) {
          std::string v;
          in >> v;
          a = std::strtoull(v.c_str(), nullptr, 16);
        }
        t.syscall = s;
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

void FillTaskNames(pid_t pid, std::vector<TaskContext>* tasks) {
  for (auto& t : *tasks) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(t.tid) + "/comm");
    std::string name;
    if (std::getline(in, name)) t.comm = name;
  }
}

}  // namespace threadscope::dump
