#include "client/dump_command.h"

#include <cstdio>
#include <map>

#include "client/exit_codes.h"
#include "daemon/common/text.h"

namespace threadscope::client {

namespace {

const char* StateText(v1::DumpThreadState s) {
  switch (s) {
    case v1::DUMP_THREAD_STATE_RUNNING: return "running";
    case v1::DUMP_THREAD_STATE_GIL_WAIT: return "gil_wait";
    case v1::DUMP_THREAD_STATE_LOCK_WAIT: return "lock_wait";
    case v1::DUMP_THREAD_STATE_CONDITION_WAIT: return "condition_wait";
    case v1::DUMP_THREAD_STATE_JOIN_WAIT: return "join_wait";
    case v1::DUMP_THREAD_STATE_SLEEPING: return "sleeping";
    case v1::DUMP_THREAD_STATE_SYSCALL: return "syscall";
    case v1::DUMP_THREAD_STATE_IDLE: return "idle";
    default: return "unknown";
  }
}

const char* KindText(v1::DumpWaitKind k) {
  switch (k) {
    case v1::DUMP_WAIT_KIND_LOCK: return "lock";
    case v1::DUMP_WAIT_KIND_RLOCK: return "rlock";
    case v1::DUMP_WAIT_KIND_CONDITION: return "condition";
    case v1::DUMP_WAIT_KIND_EVENT: return "event";
    case v1::DUMP_WAIT_KIND_SEMAPHORE: return "semaphore";
    case v1::DUMP_WAIT_KIND_BARRIER: return "barrier";
    case v1::DUMP_WAIT_KIND_QUEUE: return "queue";
    case v1::DUMP_WAIT_KIND_JOIN: return "join";
    case v1::DUMP_WAIT_KIND_GIL: return "gil";
    default: return "lock";
  }
}

// What people call it.
const char* KindNoun(v1::DumpWaitKind k) {
  switch (k) {
    case v1::DUMP_WAIT_KIND_LOCK: return "Lock";
    case v1::DUMP_WAIT_KIND_RLOCK: return "RLock";
    case v1::DUMP_WAIT_KIND_CONDITION: return "Condition";
    case v1::DUMP_WAIT_KIND_EVENT: return "Event";
    case v1::DUMP_WAIT_KIND_SEMAPHORE: return "Semaphore";
    case v1::DUMP_WAIT_KIND_BARRIER: return "Barrier";
    case v1::DUMP_WAIT_KIND_QUEUE: return "Queue";
    case v1::DUMP_WAIT_KIND_JOIN: return "thread";
    case v1::DUMP_WAIT_KIND_GIL: return "GIL";
    default: return "lock";
  }
}

const char* SourceText(v1::DumpOwnerSource s) {
  switch (s) {
    case v1::DUMP_OWNER_SOURCE_RLOCK_OWNER: return "rlock_owner";
    case v1::DUMP_OWNER_SOURCE_WITH_STATEMENT: return "with_statement";
    case v1::DUMP_OWNER_SOURCE_ACQUIRE_CALL: return "acquire_call";
    case v1::DUMP_OWNER_SOURCE_TRACE: return "trace";
    case v1::DUMP_OWNER_SOURCE_THREAD_HANDLE: return "thread_handle";
    case v1::DUMP_OWNER_SOURCE_SENTINEL: return "sentinel";
    case v1::DUMP_OWNER_SOURCE_THREAD_OBJECT: return "thread_object";
    case v1::DUMP_OWNER_SOURCE_GIL_STATE: return "gil_state";
    default: return "unknown";
  }
}

// How an owner is known, in words.
const char* SourceWords(v1::DumpOwnerSource s) {
  switch (s) {
    case v1::DUMP_OWNER_SOURCE_RLOCK_OWNER: return "the RLock's owner field";
    case v1::DUMP_OWNER_SOURCE_WITH_STATEMENT: return "a frame inside `with` on it";
    case v1::DUMP_OWNER_SOURCE_ACQUIRE_CALL: return "inferred: acquire() not yet released";
    case v1::DUMP_OWNER_SOURCE_TRACE: return "threadscoped's trace";
    case v1::DUMP_OWNER_SOURCE_THREAD_HANDLE: return "the thread handle";
    case v1::DUMP_OWNER_SOURCE_SENTINEL: return "the thread's join sentinel";
    case v1::DUMP_OWNER_SOURCE_THREAD_OBJECT: return "the Thread object";
    case v1::DUMP_OWNER_SOURCE_GIL_STATE: return "the GIL's state";
    default: return "unknown";
  }
}

nlohmann::json LocationJson(const v1::CodeLocation& l) {
  if (l.file().empty() && l.function().empty()) return nullptr;
  return {{"file", l.file()},
          {"line", l.has_line() ? nlohmann::json(l.line()) : nlohmann::json(nullptr)},
          {"function", l.function()}};
}

std::string Where(const v1::CodeLocation& l) {
  std::string s = Printable(l.file());
  if (l.has_line()) s += ":" + std::to_string(l.line());
  return s + " " + Printable(l.function());
}

std::string ThreadLabel(const v1::DumpThread* t, int tid) {
  std::string s = "thread " + std::to_string(tid);
  if (t && !t->name().empty()) s += " \"" + Printable(t->name()) + "\"";
  return s;
}

std::string WaitText(const v1::DumpThread& t, const std::map<int, const v1::DumpThread*>& by_tid,
                     const v1::ProcessDump& d) {
  auto owner_label = [&](const v1::DumpWait& w) {
    auto it = by_tid.find(w.owner_native_tid());
    return ThreadLabel(it == by_tid.end() ? nullptr : it->second, w.owner_native_tid());
  };
  switch (t.state()) {
    case v1::DUMP_THREAD_STATE_RUNNING:
      return t.has_holds_gil() && t.holds_gil() ? "running (holds the GIL)" : "running";
    case v1::DUMP_THREAD_STATE_SLEEPING:
      return "sleeping (" + Printable(t.syscall()) + ")";
    case v1::DUMP_THREAD_STATE_SYSCALL:
      return "in system call " + Printable(t.syscall());
    case v1::DUMP_THREAD_STATE_IDLE:
      return "idle (no Python frames)";
    case v1::DUMP_THREAD_STATE_UNKNOWN:
      return "state unknown (not in a system call, not holding the GIL)";
    default:
      break;
  }
  if (!t.has_waiting_for()) return StateText(t.state());
  const v1::DumpWait& w = t.waiting_for();
  std::string s;
  switch (w.kind()) {
    case v1::DUMP_WAIT_KIND_GIL:
      s = "waiting for the GIL";
      if (w.has_owner_native_tid()) s += ", held by " + owner_label(w);
      return s;
    case v1::DUMP_WAIT_KIND_JOIN:
      s = "joining ";
      s += w.has_owner_native_tid() ? owner_label(w)
                                    : std::string("a thread that is ending");
      if (w.has_owner_native_tid()) s += std::string(" (") + SourceWords(w.owner_source()) + ")";
      return s;
    case v1::DUMP_WAIT_KIND_LOCK:
    case v1::DUMP_WAIT_KIND_RLOCK:
      s = std::string("waiting for ") + KindNoun(w.kind()) + " " +
          (w.lock_id().empty() ? std::string("(not identified)") : Printable(w.lock_id()));
      if (w.has_owner_native_tid()) {
        s += ", held by " + owner_label(w) + " (" + SourceWords(w.owner_source()) + ")";
      } else {
        s += ", owner unknown";
      }
      return s;
    default: {
      std::string noun = KindNoun(w.kind());
      s = "waiting on " + noun + " " +
          Printable(w.object_id().empty() ? w.lock_id() : w.object_id());
      s += w.kind() == v1::DUMP_WAIT_KIND_QUEUE ? " (until an item is put)"
           : w.kind() == v1::DUMP_WAIT_KIND_EVENT ? " (until it is set)"
           : w.kind() == v1::DUMP_WAIT_KIND_SEMAPHORE ? " (until it is released)"
           : w.kind() == v1::DUMP_WAIT_KIND_BARRIER ? " (until all parties arrive)"
                                                     : " (until notified)";
      return s;
    }
  }
  (void)d;
}

}  // namespace

nlohmann::json DumpJson(const v1::ProcessDump& d) {
  using nlohmann::json;
  json out;
  out["dump_version"] = 1;
  out["target"] = {{"pid", d.pid()},
                   {"python_version", d.python_version()},
                   {"executable", d.executable()},
                   {"command_line", d.command_line()},
                   {"source", d.source()},
                   {"core_file", d.core_file().empty() ? json(nullptr) : json(d.core_file())},
                   {"free_threaded", d.free_threaded()},
                   {"layout_source", d.layout_source()}};
  out["pause_ns"] = d.has_pause_ns() ? json(d.pause_ns()) : json(nullptr);
  json phases = json::object();
  for (const auto& p : d.pause_phases()) phases[p.name()] = p.ns();
  out["pause_phases_ns"] = phases;
  out["reads"] = d.reads();
  json threads = json::array();
  for (const auto& t : d.threads()) {
    json j;
    j["native_tid"] = t.native_tid();
    j["ident"] = t.has_ident() ? json(t.ident()) : json(nullptr);
    j["name"] = t.name();
    j["os_name"] = t.os_name();
    j["main"] = t.main();
    j["state"] = StateText(t.state());
    j["holds_gil"] = t.has_holds_gil() ? json(t.holds_gil()) : json(nullptr);
    json stack = json::array();
    for (const auto& f : t.stack()) stack.push_back(LocationJson(f));
    j["stack"] = stack;
    j["stack_truncated"] = t.stack_truncated();
    j["wait_at"] = t.has_wait_frame() && static_cast<int>(t.wait_frame()) < t.stack_size()
                       ? LocationJson(t.stack(static_cast<int>(t.wait_frame())))
                       : json(nullptr);
    if (t.has_waiting_for()) {
      const auto& w = t.waiting_for();
      j["waiting_for"] = {
          {"kind", KindText(w.kind())},
          {"lock_id", w.lock_id().empty() ? json(nullptr) : json(w.lock_id())},
          {"object_id", w.object_id().empty() ? json(nullptr) : json(w.object_id())},
          {"object_type", w.object_type().empty() ? json(nullptr) : json(w.object_type())},
          {"owner_native_tid",
           w.has_owner_native_tid() ? json(w.owner_native_tid()) : json(nullptr)},
          {"owner_source", SourceText(w.owner_source())},
          {"detail", w.detail()}};
    } else {
      j["waiting_for"] = nullptr;
    }
    json holds = json::array(), holds_detail = json::array();
    for (const auto& h : t.holds()) {
      holds.push_back(h.lock_id());
      holds_detail.push_back({{"lock_id", h.lock_id()},
                              {"source", SourceText(h.source())},
                              {"taken_at", LocationJson(h.taken_at())}});
    }
    j["holds"] = holds;
    j["holds_detail"] = holds_detail;
    j["syscall"] = t.syscall().empty() ? json(nullptr) : json(t.syscall());
    if (!t.native().empty()) {
      json native = json::array();
      for (const auto& n : t.native()) {
        native.push_back({{"pc", n.pc()}, {"symbol", n.symbol()}, {"binary", n.binary()}});
      }
      j["native"] = native;
    }
    if (!t.locals().empty()) {
      json locals = json::array();
      for (const auto& l : t.locals()) {
        locals.push_back({{"name", l.name()},
                          {"type", l.type()},
                          {"value", l.value().empty() ? json(nullptr) : json(l.value())},
                          {"address", l.address()}});
      }
      j["locals"] = locals;
    }
    threads.push_back(j);
  }
  out["threads"] = threads;
  json deadlocks = json::array();
  for (const auto& dl : d.deadlocks()) {
    json wait_at = json::array(), taken_at = json::array();
    for (const auto& l : dl.wait_at()) wait_at.push_back(LocationJson(l));
    for (const auto& l : dl.taken_at()) taken_at.push_back(LocationJson(l));
    deadlocks.push_back({{"threads", dl.native_tids()},
                         {"locks", dl.lock_ids()},
                         {"wait_at", wait_at},
                         {"taken_at", taken_at}});
  }
  out["deadlocks"] = deadlocks;
  out["notes"] = d.notes();
  return out;
}

std::string DumpText(const v1::ProcessDump& d) {
  std::map<int, const v1::DumpThread*> by_tid;
  for (const auto& t : d.threads()) by_tid[t.native_tid()] = &t;
  std::string out;
  char buf[160];
  out += "Process " + std::to_string(d.pid());
  if (!d.command_line().empty()) out += ": " + Printable(d.command_line());
  out += "\nPython " + Printable(d.python_version()) + " (" + Printable(d.executable()) + ")" +
         (d.free_threaded() ? ", free-threaded" : "");
  if (d.source() == "core") {
    out += ", from core file " + Printable(d.core_file());
  } else if (d.source() == "live-nonblocking") {
    out += ", read without stopping it (" + std::to_string(d.reads()) + " passes)";
  } else if (d.has_pause_ns()) {
    std::snprintf(buf, sizeof(buf), ", stopped for %.2f ms", d.pause_ns() / 1e6);
    out += buf;
  }
  out += ", " + std::to_string(d.threads_size()) + " threads\n";

  for (const auto& dl : d.deadlocks()) {
    out += "\nDEADLOCK:";
    for (int i = 0; i < dl.native_tids_size(); ++i) {
      out += (i ? " -> " : " ") + std::to_string(dl.native_tids(i));
    }
    out += " -> " + std::to_string(dl.native_tids(0)) + "\n";
    for (int i = 0; i < dl.native_tids_size(); ++i) {
      int tid = dl.native_tids(i);
      int owner = dl.native_tids((i + 1) % dl.native_tids_size());
      auto t = by_tid.find(tid);
      auto o = by_tid.find(owner);
      const v1::DumpThread* tp = t == by_tid.end() ? nullptr : t->second;
      std::string kind = tp && tp->has_waiting_for() ? KindNoun(tp->waiting_for().kind()) : "lock";
      out += "  " + ThreadLabel(tp, tid) + " waits for " + kind + " " +
             Printable(dl.lock_ids(i));
      if (i < dl.wait_at_size() && !dl.wait_at(i).file().empty()) {
        out += " at " + Where(dl.wait_at(i));
      }
      out += "\n    held by " + ThreadLabel(o == by_tid.end() ? nullptr : o->second, owner);
      if (i < dl.taken_at_size() && !dl.taken_at(i).file().empty()) {
        out += ", taken at " + Where(dl.taken_at(i));
      }
      out += "\n";
    }
  }

  for (const auto& t : d.threads()) {
    out += "\nThread " + std::to_string(t.native_tid());
    if (!t.name().empty()) out += " \"" + Printable(t.name()) + "\"";
    if (t.main()) out += " (main)";
    out += ": " + WaitText(t, by_tid, d) + "\n";
    for (int i = 0; i < t.stack_size(); ++i) {
      out += "    " + Where(t.stack(i));
      if (t.has_wait_frame() && static_cast<int>(t.wait_frame()) == i && t.has_waiting_for()) {
        out += "  <- waits here";
      }
      out += "\n";
      if (i == 0) {
        for (const auto& l : t.locals()) {
          out += "        " + Printable(l.name()) + " = " +
                 (l.value().empty() ? "<" + Printable(l.type()) + ">" : Printable(l.value())) +
                 "\n";
        }
      }
    }
    if (t.stack_truncated()) out += "    ... (deeper frames not read)\n";
    for (const auto& n : t.native()) {
      std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(n.pc()));
      out += "    [native] " + (n.symbol().empty() ? std::string(buf) : Printable(n.symbol())) +
             (n.binary().empty() ? "" : " (" + Printable(n.binary()) + ")") + "\n";
    }
    for (const auto& h : t.holds()) {
      out += "    holds " + Printable(h.lock_id());
      if (!h.taken_at().file().empty()) out += ", taken at " + Where(h.taken_at());
      out += std::string(" (") + SourceWords(h.source()) + ")\n";
    }
  }
  for (const auto& n : d.notes()) out += "\nnote: " + Printable(n);
  if (d.notes_size()) out += "\n";
  return out;
}

int DumpExitCode(const grpc::Status& status) {
  v1::DumpError error;
  if (!status.error_details().empty() && error.ParseFromString(status.error_details())) {
    switch (error.kind()) {
      case v1::DUMP_ERROR_BAD_REQUEST: return kExitUsage;
      case v1::DUMP_ERROR_NO_SUCH_PROCESS: return kExitNoSuchProcess;
      case v1::DUMP_ERROR_NOT_PYTHON: return kExitNotPython;
      case v1::DUMP_ERROR_PERMISSION: return kExitPermission;
      case v1::DUMP_ERROR_EXITED: return kExitTargetExited;
      case v1::DUMP_ERROR_BAD_CORE: return kExitBadCore;
      case v1::DUMP_ERROR_EXECUTABLE_MISSING: return kExitExecutableMissing;
      case v1::DUMP_ERROR_EXECUTABLE_MISMATCH: return kExitExecutableMismatch;
      default: return kExitInternal;
    }
  }
  return ExitCodeFor(status);
}

int DumpCommand(Connection& conn, const DumpCommandOptions& o) {
  v1::DumpRequest req;
  req.set_pid(o.pid);
  req.set_core_path(o.core);
  req.set_executable_path(o.executable);
  req.set_native(o.native);
  req.set_locals(o.locals);
  req.set_nonblocking(o.nonblocking);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  v1::DumpResponse resp;
  grpc::Status s = conn.stub().Dump(&ctx, req, &resp);
  if (!s.ok()) {
    std::fprintf(stderr, "threadscope: dump: %s\n", Printable(s.error_message()).c_str());
    return DumpExitCode(s);
  }
  if (o.json) {
    std::string text =
        DumpJson(resp.dump()).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    std::fprintf(stdout, "%s\n", text.c_str());
  } else {
    std::fputs(DumpText(resp.dump()).c_str(), stdout);
  }
  return kExitOk;
}

}  // namespace threadscope::client
