#include "client/report_common.h"

#include <fmt/format.h>

#include <algorithm>

namespace threadscope::client {

const char* SymbolsName(v1::SymbolLevel s) {
  return s == v1::SYMBOL_LEVEL_FULL ? "full" : "dynamic-only";
}

const char* JoinVisibilityName(v1::JoinVisibility v) {
  switch (v) {
    case v1::JOIN_VISIBILITY_EXACT: return "exact";
    case v1::JOIN_VISIBILITY_BLOCKING_ONLY: return "blocking-only";
    default: return "none";
  }
}

const char* OriginName(v1::ThreadOrigin o) {
  switch (o) {
    case v1::THREAD_ORIGIN_STARTED: return "started";
    case v1::THREAD_ORIGIN_PREEXISTING: return "preexisting";
    case v1::THREAD_ORIGIN_NATIVE: return "native";
    default: return "unknown";
  }
}

const char* ChangeName(v1::ThreadChange c) {
  switch (c) {
    case v1::THREAD_CHANGE_DISCOVERED: return "discovered";
    case v1::THREAD_CHANGE_STARTING: return "starting";
    case v1::THREAD_CHANGE_RUNNING: return "running";
    case v1::THREAD_CHANGE_START_FAILED: return "start_failed";
    case v1::THREAD_CHANGE_DONE: return "done";
    case v1::THREAD_CHANGE_JOIN_WAIT_BEGIN: return "join_wait_begin";
    case v1::THREAD_CHANGE_JOIN_WAIT_END: return "join_wait_end";
    case v1::THREAD_CHANGE_JOINED: return "joined";
    case v1::THREAD_CHANGE_DETACHED: return "detached";
    case v1::THREAD_CHANGE_RENAMED: return "renamed";
    default: return "unknown";
  }
}

const char* LostSourceName(v1::LostEvents::Source s) {
  switch (s) {
    case v1::LostEvents::SOURCE_KERNEL_RING: return "kernel_ring";
    case v1::LostEvents::SOURCE_PROBE_STASH: return "probe_stash";
    case v1::LostEvents::SOURCE_CLIENT_QUEUE: return "client_queue";
    default: return "unknown";
  }
}

const char* LockKindName(v1::LockKind k) {
  switch (k) {
    case v1::LOCK_KIND_LOCK: return "Lock";
    case v1::LOCK_KIND_RLOCK: return "RLock";
    case v1::LOCK_KIND_JOIN_SENTINEL: return "join-sentinel";
    case v1::LOCK_KIND_CRITICAL_SECTION: return "critical-section";
    case v1::LOCK_KIND_MUTEX: return "mutex";
    default: return "unknown";
  }
}

const char* WaitKindName(v1::WaitKind k) {
  switch (k) {
    case v1::WAIT_KIND_CONDITION: return "condition";
    case v1::WAIT_KIND_JOIN: return "join";
    case v1::WAIT_KIND_CONTENTION: return "contention";
    default: return "lock";
  }
}

const char* LockChangeName(v1::LockChange c) {
  switch (c) {
    case v1::LOCK_CHANGE_WAIT_BEGIN: return "wait_begin";
    case v1::LOCK_CHANGE_WAIT_END: return "wait_end";
    case v1::LOCK_CHANGE_WOKEN: return "woken";
    case v1::LOCK_CHANGE_DEADLOCK: return "deadlock";
    case v1::LOCK_CHANGE_DEADLOCK_RESOLVED: return "deadlock_resolved";
    case v1::LOCK_CHANGE_ORDER_INVERSION: return "order_inversion";
    case v1::LOCK_CHANGE_RELEASED: return "released";
    default: return "unknown";
  }
}

const char* GilChangeName(v1::GilChange c) {
  switch (c) {
    case v1::GIL_CHANGE_WAIT_BEGIN: return "wait_begin";
    case v1::GIL_CHANGE_ACQUIRED: return "acquired";
    case v1::GIL_CHANGE_DROPPED: return "dropped";
    case v1::GIL_CHANGE_ENABLED: return "enabled";
    case v1::GIL_CHANGE_DISABLED: return "disabled";
    default: return "unknown";
  }
}

const char* GilRuntimeName(v1::GilRuntime r) {
  switch (r) {
    case v1::GIL_RUNTIME_OFF: return "off";
    case v1::GIL_RUNTIME_TRANSIENT: return "transient";
    case v1::GIL_RUNTIME_PERMANENT: return "permanent";
    case v1::GIL_RUNTIME_UNANNOUNCED: return "unannounced";
    default: return "";
  }
}

// Free-threaded builds: what the GIL did at run time, e.g. "enabled at run time at +1.204s, by
// an import of a module not marked free-threading safe". Empty on GIL builds.
std::string GilRuntimeText(const v1::Snapshot& s) {
  const v1::Gil& g = s.gil();
  if (!s.target().free_threaded() || g.runtime() == v1::GIL_RUNTIME_UNSPECIFIED) return "";
  std::string at;
  if (g.has_enabled_since_ns()) {
    at = fmt::format(" at {:+.3f}s", (static_cast<double>(g.enabled_since_ns()) -
                                      static_cast<double>(s.trace_start_ns())) /
                                         1e9);
  }
  std::string imports =
      g.transient_enables()
          ? fmt::format("; {} extension import{} turned it on for their init",
                        g.transient_enables(), g.transient_enables() == 1 ? "" : "s")
          : "";
  switch (g.runtime()) {
    case v1::GIL_RUNTIME_PERMANENT:
      return "enabled at run time" + at +
             ", by an import of a module not marked free-threading safe" + imports;
    case v1::GIL_RUNTIME_UNANNOUNCED:
      return "enabled" + at +
             " (first seen), by PYTHON_GIL=1 or -X gil=1 at start-up or before the attach" +
             imports;
    case v1::GIL_RUNTIME_TRANSIENT:
      return "enabled" + at + " for an extension import's init (transient)" + imports;
    default:
      return "off (free-threaded build, not enabled at run time)" + imports;
  }
}

const char* StateName(v1::ThreadState state) {
  switch (state) {
    case v1::THREAD_STATE_NOT_STARTED: return "NOT_STARTED";
    case v1::THREAD_STATE_STARTING: return "STARTING";
    case v1::THREAD_STATE_RUNNING: return "RUNNING";
    case v1::THREAD_STATE_DONE: return "DONE";
    default: return "UNKNOWN";
  }
}

Counts Count(const v1::Snapshot& s) {
  Counts c;
  // Finished threads the engine no longer lists still count.
  const v1::ThreadCounts& gone = s.threads_not_listed();
  c.seen = static_cast<int>(gone.seen());
  c.started = static_cast<int>(gone.started());
  c.failed = static_cast<int>(gone.start_failed());
  c.preexisting = static_cast<int>(gone.preexisting());
  c.native = static_cast<int>(gone.native());
  c.done = static_cast<int>(gone.seen());
  c.joined_yes = static_cast<int>(gone.joined());
  c.joined_no = static_cast<int>(gone.not_joined());
  c.joined_unknown = static_cast<int>(gone.joined_unknown());
  c.returned_yes = static_cast<int>(gone.returned());
  c.returned_no = static_cast<int>(gone.did_not_return());
  for (const auto& t : s.threads()) {
    ++c.seen;
    switch (t.origin()) {
      case v1::THREAD_ORIGIN_STARTED: ++c.started; break;
      case v1::THREAD_ORIGIN_PREEXISTING: ++c.preexisting; break;
      case v1::THREAD_ORIGIN_NATIVE: ++c.native; break;
      default: break;
    }
    c.failed += t.start_failed();
    c.running += t.state() == v1::THREAD_STATE_RUNNING;
    c.starting += t.state() == v1::THREAD_STATE_STARTING;
    c.done += t.state() == v1::THREAD_STATE_DONE;
    if (t.origin() == v1::THREAD_ORIGIN_STARTED && !t.start_failed()) {
      if (!t.has_joined()) {
        ++c.joined_unknown;
      } else if (t.joined()) {
        ++c.joined_yes;
      } else {
        ++c.joined_no;
      }
      if (t.has_returned()) (t.returned() ? c.returned_yes : c.returned_no)++;
    }
  }
  return c;
}

// The last two components of a path: enough to recognize a file in a terminal line.
std::string ShortFile(const std::string& file) {
  size_t last = file.rfind('/');
  if (last == std::string::npos || last == 0) return file;
  size_t before = file.rfind('/', last - 1);
  return before == std::string::npos ? file : file.substr(before + 1);
}

// "app/cache.py:42 Cache.get": the stack's primary frame (the innermost outside threading.py).
std::string Where(const v1::PyStack& st, bool short_file) {
  if (st.frames().empty()) return "";
  const v1::CodeLocation& f =
      st.frames(std::min<int>(static_cast<int>(st.primary()), st.frames_size() - 1));
  // The model's location 0 (file "?", no line): the frame's (code, instruction) was never
  // resolved. The engine resolves it when it drains the record, reading the code object from
  // the target; that read fails when the code object was freed by then, or the process exited
  // within that drain interval (a short program's last waits), and every such wait of one type
  // then shares this row. Say so rather than print "?:? ?".
  if (f.file() == "?" && !f.has_line()) {
    return "unknown (its code object could not be read: freed, or the process exited, before "
           "the frame was resolved)";
  }
  return fmt::format("{}:{} {}", short_file ? ShortFile(f.file()) : f.file(),
                     f.has_line() ? std::to_string(f.line()) : "?", f.function());
}

}  // namespace threadscope::client
