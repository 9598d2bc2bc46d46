// From a stopped process's (or a core file's) memory and registers to ProcessFacts: the
// interpreters, their thread states, each thread's Python frames with the `with` blocks it is
// inside, the GIL's state, and what each blocked thread sleeps on (its futex, resolved to a
// lock object, the GIL, or a thread handle).
#pragma once

#include <sys/types.h>

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/dump/facts.h"
#include "daemon/dump/layout.h"
#include "daemon/dump/memory.h"

namespace threadscope::dump {

// The registers dump uses (x86-64 user_regs_struct order is the capture's business).
struct Registers {
  uint64_t rip = 0, rsp = 0, rbp = 0, fs_base = 0;
  int64_t orig_rax = -1;  // the system call the thread is in (or was interrupted in), -1: none
  int64_t rax = 0;
  std::array<uint64_t, 6> args{};  // rdi, rsi, rdx, r10, r8, r9
};

// A system call a thread is blocked in.
struct SyscallState {
  int64_t nr = -1;
  std::array<uint64_t, 6> args{};
};

// One task (kernel thread) of the target, as the capture saw it.
struct TaskContext {
  pid_t tid = 0;
  std::string comm;
  std::optional<Registers> regs;         // ptrace stop or core file
  std::optional<SyscallState> syscall;   // in a system call (from regs or /proc/TID/syscall)
};

struct ReadOptions {
  bool locals = false;
  bool native = false;
  size_t max_frames = 512;
  size_t max_threads = 4096;
};

// Symbolizes a native pc ("func+0x1c", "libc.so.6"); optional.
using NativeSymbolizer = std::function<NativeFrame(uint64_t pc)>;

// Code objects and type names do not change while their objects live, so a pass over the
// process before it is stopped fills this cache and the stopped pass only checks that each code
// object is still the one cached (its type and file-name pointers): a shorter pause.
class ReadCache {
 public:
  ReadCache();
  ~ReadCache();
  struct Impl;
  std::unique_ptr<Impl> impl;
};

// Reads the stopped pass leaves for after the process runs again: values that do not change
// while their objects live (a Thread's name and ident, the weakref from a thread state to its
// join sentinel).
struct PendingReads {
  std::vector<std::pair<size_t, uint64_t>> thread_names;  // facts.threads index -> Thread
  std::vector<uint64_t> thread_objects;                   // Thread objects whose ident counts
  std::vector<std::pair<pid_t, uint64_t>> sentinel_refs;  // tid -> its on_delete_data weakref
  std::unordered_map<uint64_t, pid_t> tid_by_ident;
};

// Errors: FailedPrecondition when the runtime cannot be found in memory (not initialized, or
// not the layout this interpreter was built with). With `pending`, reads that can wait are left
// there for CompleteReads; without, they are done here.
// The same in two phases, for a live process: ReadThreads (thread states and frames) can run
// while interrupted threads are still entering their stop, Finish (system calls, futexes,
// locks) once all are stopped and their registers read.
class ProcessReader {
 public:
  ProcessReader(const MemoryReader& memory, const ResolvedLayout& layout, pid_t pid,
                const ReadOptions& options, const NativeSymbolizer& symbolize = nullptr,
                ReadCache* cache = nullptr, PendingReads* pending = nullptr);
  ~ProcessReader();
  Status ReadThreads();
  StatusOr<ProcessFacts> Finish(const std::vector<TaskContext>& tasks);
  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

StatusOr<ProcessFacts> ReadProcess(const MemoryReader& memory, const ResolvedLayout& layout,
                                   const std::vector<TaskContext>& tasks, pid_t pid,
                                   const ReadOptions& options,
                                   const NativeSymbolizer& symbolize = nullptr,
                                   ReadCache* cache = nullptr, PendingReads* pending = nullptr);

void CompleteReads(const MemoryReader& memory, const ResolvedLayout& layout,
                   const PendingReads& pending, ProcessFacts* facts, ReadCache* cache = nullptr);

// x86-64 system call names for reports ("clock_nanosleep", "syscall 999" when unknown).
std::string SyscallName(int64_t nr);

// A comparable summary of facts, for --nonblocking's "two reads agree".
std::string FactsSignature(const ProcessFacts& facts);

}  // namespace threadscope::dump
