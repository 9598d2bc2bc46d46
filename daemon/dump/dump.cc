#include "daemon/dump/dump.h"

#include <elf.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <regex>
#include <unordered_map>

#include "daemon/dump/analysis.h"
#include "daemon/dump/core.h"
#include "daemon/dump/layout.h"
#include "daemon/dump/live.h"
#include "daemon/dump/memory.h"
#include "daemon/dump/reader.h"
#include "daemon/target/cpython.h"
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"
#include "daemon/target/procfs.h"
#include "daemon/target/python_process.h"
#include "daemon/target/target_file.h"

namespace threadscope::dump {

namespace {

std::string Basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool FreeThreadedName(const std::string& base) {
  static const std::regex kFreeThreaded(R"(python3\.\d+t)");
  return std::regex_search(base, kFreeThreaded);
}

// Symbolizes native pcs through the ELF files mapped where they fall.
class Symbolizer {
 public:
  struct Region {
    uint64_t start, end;
    std::string path;  // as the target sees it
    // Opens the very file mapped there; empty when unverified (the region is not symbolized).
    std::function<StatusOr<std::unique_ptr<target::ElfFile>>()> open;
    uint64_t load = 0;  // the file's load address (offset-0 mapping)
  };
  void Add(Region r) { regions_.push_back(std::move(r)); }

  NativeFrame operator()(uint64_t pc) {
    NativeFrame f;
    f.pc = pc;
    for (const auto& r : regions_) {
      if (pc < r.start || pc >= r.end) continue;
      f.binary = Basename(r.path);
      if (!r.open) break;
      auto& elf = elfs_[r.path];
      if (!elf) {
        auto opened = r.open();
        if (!opened.ok()) break;
        elf = std::move(opened).value();
      }
      uint64_t vaddr = elf->is_shared_object() ? pc - r.load : pc;
      char buf[32];
      if (auto sym = elf->FunctionContaining(vaddr)) {
        std::snprintf(buf, sizeof(buf), "+0x%llx",
                      static_cast<unsigned long long>(vaddr - sym->value));
        f.symbol = sym->name + buf;
      } else if (auto fn = elf->FunctionAround(vaddr)) {
        std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(fn->first));
        f.symbol = std::string("fn@") + buf;
      }
      break;
    }
    return f;
  }

 private:
  std::vector<Region> regions_;
  std::unordered_map<std::string, std::unique_ptr<target::ElfFile>> elfs_;
};

// For the few milliseconds the target is stopped, the dumping thread runs ahead of the
// target's threads: each PTRACE_INTERRUPT wakes a thread of the target, and at equal priority
// that thread preempts us before the next interrupt (measured: 100 interrupts took up to 10 ms
// on a loaded machine instead of 0.7 ms). Needs CAP_SYS_NICE; without it nothing changes.
class SchedBoost {
 public:
  SchedBoost() {
    if (getenv("THREADSCOPE_DUMP_NO_BOOST")) return;
    if (pthread_getschedparam(pthread_self(), &policy_, &param_) != 0) return;
    sched_param fifo{};
    fifo.sched_priority = 1;
    boosted_ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &fifo) == 0;
  }
  ~SchedBoost() {
    if (boosted_) pthread_setschedparam(pthread_self(), policy_, &param_);
  }

 private:
  int policy_ = SCHED_OTHER;
  sched_param param_{};
  bool boosted_ = false;
};

}  // namespace

StatusOr<DumpReport> DumpProcess(pid_t pid, const DumpOptions& options) {
  if (pid <= 0) return InvalidArgumentError("pid must be a positive integer");
  if (pid == getpid()) {
    return PermissionDeniedError("threadscope cannot dump itself (a process cannot ptrace its "
                                 "own threads)");
  }
  target::ProcFs proc;
  TS_ASSIGN_OR_RETURN(auto dis, target::Disassembler::Create());
  // Everything that only needs the binaries happens before the process is stopped.
  // NotFound, PermissionDenied, FailedPrecondition (not CPython) or InvalidArgument (a thread
  // id, not a process): the codes dump.h promises.
  TS_ASSIGN_OR_RETURN(auto inspected, target::InspectPythonProcess(proc, *dis, pid));
  const target::PythonProcess& info = inspected.info;
  TS_ASSIGN_OR_RETURN(ResolvedLayout layout,
                      ResolveLayout(*inspected.interpreter_elf, info.interpreter.load_bias,
                                    info.version, info.free_threaded));
  Symbolizer symbolize;
  if (options.native) {
    if (auto maps = proc.Maps(pid); maps.ok()) {
      std::unordered_map<std::string, uint64_t> loads;
      for (const auto& m : *maps) {
        if (!m.path.empty() && m.offset == 0 && !loads.count(m.path)) loads[m.path] = m.start;
      }
      for (const auto& m : *maps) {
        if (m.path.empty() || m.path[0] != '/' || !m.executable()) continue;
        // The file the process maps, not whatever its path names now (target_file.h).
        auto open = [&proc, pid, m]() -> StatusOr<std::unique_ptr<target::ElfFile>> {
          TS_ASSIGN_OR_RETURN(target::FileRef file, target::OpenMappedFile(proc, pid, m));
          return target::ElfFile::FromFile(std::move(file), m.path);
        };
        symbolize.Add({m.start, m.end, m.path, open, loads[m.path]});
      }
    }
  }
  NativeSymbolizer sym = [&symbolize](uint64_t pc) { return symbolize(pc); };

  target::ProcessMemory raw(pid);
  CachedMemory memory(raw);
  ReadOptions ro;
  ro.locals = options.locals;
  ro.native = options.native;
  StatusOr<ProcessFacts> facts = InternalError("not read");
  DumpReport report;
  std::vector<TaskContext> tasks;
  if (options.nonblocking) {
    std::string previous;
    report.reads = 0;
    for (int pass = 0; pass < std::max(2, options.max_passes); ++pass) {
      memory.Clear();
      auto listed = ListTasks(pid, true);
      if (!listed.ok()) {
        if (listed.status().code() == StatusCode::kNotFound) {
          return AbortedError("process " + std::to_string(pid) + " exited during the dump");
        }
        return listed.status();
      }
      tasks = std::move(listed).value();
      facts = ReadProcess(memory, layout, tasks, pid, ro, sym);
      ++report.reads;
      if (!facts.ok()) continue;
      std::string sig = FactsSignature(*facts);
      if (sig == previous) break;
      previous = sig;
      if (pass + 1 == std::max(2, options.max_passes)) {
        facts->notes.push_back("--nonblocking: no two passes agreed in " +
                               std::to_string(report.reads) +
                               " reads; this is the last one (the process is not idle)");
      }
    }
  } else {
    // A pass before the stop reads the code objects and type names the stopped pass will
    // meet, so the pause only covers what changes: thread states, frames, locks.
    ReadCache cache;
    {
      auto listed = ListTasks(pid, false);
      if (listed.ok()) (void)ReadProcess(memory, layout, *listed, pid, ro, sym, &cache);
      memory.Clear();
    }
    PendingReads pending;
    ThreadStopper stopper(pid);
    auto boost = std::make_unique<SchedBoost>();
    Status stopped = stopper.Interrupt();
    ProcessReader reader(memory, layout, pid, ro, sym, &cache, &pending);
    uint64_t t1 = target::MonotonicNowNs();
    Status read = stopped.ok() ? reader.ReadThreads() : OkStatus();
    uint64_t t2 = target::MonotonicNowNs();
    if (stopped.ok()) stopped = stopper.WaitStopped();
    uint64_t t3 = target::MonotonicNowNs();
    if (!stopped.ok()) {
      stopper.Detach();
      boost.reset();
      if (stopped.code() == StatusCode::kNotFound || stopped.code() == StatusCode::kAborted) {
        return AbortedError("process " + std::to_string(pid) + " exited during the dump");
      }
      return stopped;
    }
    tasks = stopper.tasks();
    facts = read.ok() ? reader.Finish(tasks) : StatusOr<ProcessFacts>(read);
    uint64_t t4 = target::MonotonicNowNs();
    report.pause_ns = stopper.Detach();
    boost.reset();
    const uint64_t t0 = t4 - *report.pause_ns;
    report.pause_phases = {{"interrupt", t1 - t0}, {"read", t2 - t1}, {"wait", t3 - t2},
                           {"finish", t4 - t3}};
    memory.Clear();
    if (facts.ok()) CompleteReads(memory, layout, pending, &*facts, &cache);
    for (pid_t tid : stopper.unstopped()) {
      if (facts.ok()) {
        facts->notes.push_back("thread " + std::to_string(tid) +
                               " did not stop within 500 ms (uninterruptible sleep?); it was "
                               "read while running");
      }
    }
  }
  if (!proc.IsAlive(pid)) {
    return AbortedError("process " + std::to_string(pid) + " exited during the dump");
  }
  if (!facts.ok()) return facts.status();
  // Names change rarely and need no stop: read after the threads run again.
  FillTaskNames(pid, &tasks);
  std::unordered_map<pid_t, std::string> names;
  for (const auto& t : tasks) names[t.tid] = t.comm;
  for (auto& t : facts->threads) {
    if (auto it = names.find(t.tid); it != names.end()) t.os_name = it->second;
  }
  facts->python_version = info.version.ToString();
  facts->executable = info.executable;
  facts->trace_owners = options.trace_owners;
  DumpReport analyzed = Analyze(*facts);
  analyzed.pause_ns = report.pause_ns;
  analyzed.pause_phases = report.pause_phases;
  analyzed.reads = options.nonblocking ? report.reads : 1;
  analyzed.source = options.nonblocking ? "live-nonblocking" : "live";
  analyzed.command_line = info.command_line;
  return analyzed;
}

StatusOr<DumpReport> DumpCoreFile(const std::string& core_path, const std::string& executable,
                                  const DumpOptions& options) {
  auto opened = CoreFile::Open(core_path);
  if (!opened.ok()) {
    if (opened.status().code() == StatusCode::kNotFound) {
      return DataLossError(opened.status().message());
    }
    return opened.status();
  }
  std::unique_ptr<CoreFile> core = std::move(opened).value();
  TS_ASSIGN_OR_RETURN(auto dis, target::Disassembler::Create());

  // The executable: the file mapped where the program headers were (AT_PHDR).
  std::string exe_in_core;
  if (auto phdr = core->Auxv(AT_PHDR)) exe_in_core = core->FileAt(*phdr);
  if (exe_in_core.empty()) {
    for (const auto& f : core->files()) {
      if (f.offset == 0) {
        exe_in_core = f.path;
        break;
      }
    }
  }
  if (exe_in_core.empty()) return DataLossError(core_path + " names no mapped files (NT_FILE)");
  std::string exe_host = executable;
  if (exe_host.empty()) {
    if (access(exe_in_core.c_str(), R_OK) != 0) {
      return UnavailableError("the core's executable " + exe_in_core +
                              " is not on this machine: give it with --exe");
    }
    exe_host = exe_in_core;
  } else if (access(exe_host.c_str(), R_OK) != 0) {
    return UnavailableError("--exe " + exe_host + ": no such readable file");
  }
  auto exe_elf = target::ElfFile::Open(exe_host);
  if (!exe_elf.ok()) {
    return OutOfRangeError("--exe " + exe_host + " is not an ELF executable, so not the one " +
                           core_path + " was dumped from");
  }
  std::vector<std::string> notes;
  auto check = [&](const target::ElfFile& elf, const std::string& in_core,
                   const std::string& host) -> Status {
    std::string in = core->BuildIdAt(core->LoadAddress(in_core));
    if (in.empty()) {
      notes.push_back("the core holds no copy of " + in_core +
                      "'s ELF header: its build-id was not checked");
      return OkStatus();
    }
    if (elf.build_id().empty()) {
      notes.push_back(host + " has no build-id: not checked against the core");
      return OkStatus();
    }
    if (in != elf.build_id()) {
      return OutOfRangeError(host + " (build-id " + elf.build_id() + ") is not the " +
                             Basename(in_core) + " " + core_path + " was dumped from (build-id " +
                             in + ")");
    }
    return OkStatus();
  };
  TS_RETURN_IF_ERROR(check(**exe_elf, exe_in_core, exe_host));
  TS_RETURN_IF_ERROR(core->BackWith(exe_in_core, exe_host));

  // The interpreter: a libpython the process mapped, or the executable itself.
  std::string interp_in_core = exe_in_core, interp_host = exe_host;
  std::unique_ptr<target::ElfFile> interp_elf;
  for (const auto& f : core->files()) {
    if (!target::IsLibpythonName(Basename(f.path))) continue;
    interp_in_core = f.path;
    // Where the caller's executable is (a copy of the installation), else the path itself.
    std::string beside = exe_host.substr(0, exe_host.rfind('/')) + "/../lib/" + Basename(f.path);
    interp_host = access(beside.c_str(), R_OK) == 0 && !executable.empty() ? beside : f.path;
    if (access(interp_host.c_str(), R_OK) != 0) {
      return UnavailableError("the core maps " + f.path + ", which is not on this machine");
    }
    auto elf = target::ElfFile::Open(interp_host);
    if (!elf.ok()) return UnavailableError("cannot read " + interp_host);
    TS_RETURN_IF_ERROR(check(**elf, f.path, interp_host));
    TS_RETURN_IF_ERROR(core->BackWith(f.path, interp_host));
    interp_elf = std::move(elf).value();
    break;
  }
  if (!interp_elf) {
    if (!target::DefinesCPythonRuntime(**exe_elf)) {
      return FailedPreconditionError(core_path + " is not from a CPython process: " +
                                     exe_in_core + " does not define the CPython runtime");
    }
    interp_elf = std::move(exe_elf).value();
  }
  const std::string base = Basename(interp_in_core);
  TS_ASSIGN_OR_RETURN(target::PythonVersion version,
                      target::DetectPythonVersion(*interp_elf, *dis, base));
  const bool free_threaded = FreeThreadedName(base);
  uint64_t bias = interp_elf->is_shared_object() ? core->LoadAddress(interp_in_core) : 0;
  TS_ASSIGN_OR_RETURN(ResolvedLayout layout,
                      ResolveLayout(*interp_elf, bias, version, free_threaded));

  Symbolizer symbolize;
  if (options.native) {
    for (const auto& f : core->files()) {
      std::string host;
      if (f.path == exe_in_core) host = exe_host;
      if (f.path == interp_in_core) host = interp_host;
      if (host.empty() && access(f.path.c_str(), R_OK) == 0) {
        // Another library: only when the one here is the very file (same build-id).
        auto elf = target::ElfFile::Open(f.path);
        std::string in = core->BuildIdAt(core->LoadAddress(f.path));
        if (elf.ok() && !in.empty() && in == (*elf)->build_id()) host = f.path;
      }
      std::function<StatusOr<std::unique_ptr<target::ElfFile>>()> open;
      if (!host.empty()) open = [host] { return target::ElfFile::Open(host); };
      symbolize.Add({f.start, f.end, f.path, open, core->LoadAddress(f.path)});
    }
  }
  NativeSymbolizer sym = [&symbolize](uint64_t pc) { return symbolize(pc); };
  CachedMemory memory(*core);
  ReadOptions ro;
  ro.locals = options.locals;
  ro.native = options.native;
  TS_ASSIGN_OR_RETURN(ProcessFacts facts,
                      ReadProcess(memory, layout, core->tasks(), core->pid(), ro, sym));
  facts.python_version = version.ToString();
  facts.executable = exe_in_core;
  facts.notes.insert(facts.notes.begin(), notes.begin(), notes.end());
  facts.trace_owners = options.trace_owners;
  DumpReport report = Analyze(facts);
  report.source = "core";
  report.core_file = core_path;
  report.command_line = core->command();
  return report;
}

}  // namespace threadscope::dump
