// Over 600 lines, for now: the JSON report contract (ReportJson, EventJson, *Json) and the text
// rendering (LiveView, SummaryText, EventLine, AttachBanner) still share this file and its
// enum-name helpers. Splitting them into report_json.cc (with golden tests) and text_view.cc is
// the next step of the code review's change 4; it waits for the lock and profile work that is
// editing both halves now, so that the split moves settled code.
#include "client/report.h"

#include "daemon/common/text.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace threadscope::client {

namespace {

using nlohmann::json;

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

std::string Duration(uint64_t ns) {
  double s = static_cast<double>(ns) / 1e9;
  if (s < 1) return fmt::format("{:.0f}ms", s * 1000);
  if (s < 120) return fmt::format("{:.1f}s", s);
  if (s < 7200) return fmt::format("{:.0f}m{:02.0f}s", s / 60, std::fmod(s, 60));
  return fmt::format("{:.1f}h", s / 3600);
}

std::string Ident(const v1::Thread& t) {
  return t.has_ident() ? fmt::format("0x{:x}", t.ident()) : "-";
}

std::string Tri(bool has, bool value) { return has ? (value ? "yes" : "no") : "?"; }

std::string Paint(const std::string& s, const char* code, const TextStyle& style) {
  return style.color ? fmt::format("\x1b[{}m{}\x1b[0m", code, s) : s;
}

const char* StateColor(v1::ThreadState s) {
  switch (s) {
    case v1::THREAD_STATE_RUNNING: return "32";
    case v1::THREAD_STATE_STARTING: return "33";
    case v1::THREAD_STATE_DONE: return "90";
    default: return "0";
  }
}

struct Counts {
  int seen = 0, started = 0, failed = 0, preexisting = 0, native = 0;
  int running = 0, starting = 0, done = 0;
  int joined_yes = 0, joined_no = 0, joined_unknown = 0;
  int returned_yes = 0, returned_no = 0;
};

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

template <typename T>
json Opt(bool has, T value) {
  return has ? json(value) : json(nullptr);
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
    default: return "unknown";
  }
}

json HistogramJson(const v1::Histogram& h) {
  return json{{"log2_ns_buckets", json(std::vector<uint64_t>(h.buckets().begin(), h.buckets().end()))},
              {"count", h.count()},
              {"sum_ns", h.sum_ns()},
              {"max_ns", h.max_ns()}};
}

json AcquiresByThread(const v1::Lock& l) {
  if (!l.has_acquires()) return nullptr;
  json out = json::object();
  std::map<int32_t, uint64_t> sorted(l.acquires_by_thread().begin(), l.acquires_by_thread().end());
  for (const auto& [tid, n] : sorted) out[std::to_string(tid)] = n;
  return out;
}

// The last two components of a path: enough to recognize a file in a terminal line.
std::string ShortFile(const std::string& file) {
  size_t last = file.rfind('/');
  if (last == std::string::npos || last == 0) return file;
  size_t before = file.rfind('/', last - 1);
  return before == std::string::npos ? file : file.substr(before + 1);
}

// "app/cache.py:42 Cache.get": the stack's primary frame (the innermost outside threading.py).
std::string Where(const v1::PyStack& st, bool short_file = false) {
  if (st.frames().empty()) return "";
  const v1::CodeLocation& f =
      st.frames(std::min<int>(static_cast<int>(st.primary()), st.frames_size() - 1));
  return fmt::format("{}:{} {}", short_file ? ShortFile(f.file()) : f.file(),
                     f.has_line() ? std::to_string(f.line()) : "?", f.function());
}

// Where(), for a terminal: the short form, every control character escaped.
std::string WhereText(const v1::PyStack& st) { return Printable(Where(st, true)); }

json StackJson(const v1::PyStack& st) {
  if (st.frames().empty()) return nullptr;
  json frames = json::array();
  for (const auto& f : st.frames()) {
    frames.push_back({{"file", f.file()},
                      {"line", f.has_line() ? json(f.line()) : json(nullptr)},
                      {"function", f.function()}});
  }
  return json{{"where", Where(st)}, {"frames", frames}, {"truncated", st.truncated()}};
}

json LockJson(const v1::Lock& l) {
  json waiters = json::array();
  for (const auto& w : l.waiters()) {
    waiters.push_back({{"native_tid", w.native_tid()},
                       {"since_ns", w.since_ns()},
                       {"kind", WaitKindName(w.kind())},
                       {"woken", w.woken()},
                       {"stack", StackJson(w.stack())}});
  }
  // 3.13+ PyMutex locks: how their waits and wakes went (null where locks are semaphores).
  auto pymutex = [&](uint64_t v) { return l.pymutex() ? json(v) : json(nullptr); };
  return json{
      {"id", l.id()},
      {"pymutex", l.pymutex()},
      {"parks", pymutex(l.parks())},
      {"reparks", pymutex(l.reparks())},
      {"handoffs", pymutex(l.handoffs())},
      {"barges", pymutex(l.barges())},
      {"interrupts", l.interrupts()},
      {"signal", l.signal()},
      {"address", l.address() ? json(l.address()) : json(nullptr)},
      {"semaphore", l.semaphore()},
      {"generation", l.generation()},
      {"kind", LockKindName(l.kind())},
      {"owner_native_tid", Opt(l.has_owner_native_tid(), l.owner_native_tid())},
      {"owner_since_ns", Opt(l.has_owner_since_ns(), l.owner_since_ns())},
      {"owner_exact", l.owner_exact()},
      {"depth", l.depth()},
      {"waiters", waiters},
      {"acquires", Opt(l.has_acquires(), l.acquires())},
      {"acquires_by_thread", AcquiresByThread(l)},
      {"contended", l.contended()},
      {"timeouts", l.timeouts()},
      {"failed_trylocks", Opt(l.has_failed_trylocks(), l.failed_trylocks())},
      {"releases", Opt(l.has_releases(), l.releases())},
      {"wakeups", l.wakeups()},
      {"wait_ns_total", l.wait().sum_ns()},
      {"wait_ns_max", l.wait().max_ns()},
      {"hold_ns_total", l.has_hold() ? json(l.hold().sum_ns()) : json(nullptr)},
      {"hold_ns_max", l.has_hold() ? json(l.hold().max_ns()) : json(nullptr)},
      {"wait_histogram", HistogramJson(l.wait())},
      {"hold_histogram", l.has_hold() ? HistogramJson(l.hold()) : json(nullptr)},
      {"creator_native_tid", Opt(l.has_creator_native_tid(), l.creator_native_tid())},
      {"created_ns", Opt(l.has_created_ns(), l.created_ns())},
      {"freed_ns", Opt(l.has_freed_ns(), l.freed_ns())},
      {"last_waker", Opt(l.has_last_waker(), l.last_waker())},
      {"created_at", StackJson(l.created_at())},
      {"owner_stack", StackJson(l.owner_stack())},
      {"first_contended_at", StackJson(l.first_contended_at())},
  };
}

json ContentionJson(const v1::Contention& c) {
  json waiters = json::array();
  for (const auto& w : c.waiters()) {
    waiters.push_back({{"native_tid", w.native_tid()},
                       {"since_ns", w.since_ns()},
                       {"stack", StackJson(w.stack())}});
  }
  return json{{"id", c.id()},
              {"kind", LockKindName(c.kind())},
              {"type", c.type()},
              {"where", Where(c.stack())},
              {"stack", StackJson(c.stack())},
              {"waits", c.waits()},
              {"parks", c.parks()},
              {"wakeups", c.wakeups()},
              {"spins", c.spins()},
              {"wait_ns_total", c.wait().sum_ns()},
              {"wait_ns_max", c.wait().max_ns()},
              {"wait_histogram", HistogramJson(c.wait())},
              {"threads", c.threads()},
              {"waiters", waiters},
              {"other", c.other()},
              {"last_object", c.last_object()}};
}

json DeadlockJson(const v1::Deadlock& d) {
  json waits = json::array(), owners = json::array();
  for (const auto& st : d.wait_stacks()) waits.push_back(StackJson(st));
  for (const auto& st : d.owner_stacks()) owners.push_back(StackJson(st));
  return json{{"id", d.id()},
              {"wait_stacks", waits},
              {"owner_stacks", owners},
              {"threads", json(std::vector<int32_t>(d.native_tids().begin(), d.native_tids().end()))},
              {"locks", json(std::vector<std::string>(d.lock_ids().begin(), d.lock_ids().end()))},
              {"since_ns", d.since_ns()},
              {"detected_ns", d.detected_ns()},
              {"resolved_ns", Opt(d.has_resolved_ns(), d.resolved_ns())}};
}

json InversionJson(const v1::OrderInversion& i) {
  return json{{"lock_a", i.lock_a()},       {"lock_b", i.lock_b()},
              {"thread_ab", i.thread_ab()}, {"ab_ns", i.ab_ns()},
              {"thread_ba", i.thread_ba()}, {"ba_ns", i.ba_ns()}};
}

json ThreadLocksJson(const v1::ThreadLocks& l) {
  json waiting = nullptr;
  if (l.has_waiting()) {
    waiting = {{"lock_id", l.waiting().lock_id()},
               {"since_ns", l.waiting().since_ns()},
               {"kind", WaitKindName(l.waiting().kind())},
               {"woken", l.waiting().woken()},
               {"stack", StackJson(l.waiting().stack())}};
  }
  return json{{"held", json(std::vector<std::string>(l.held().begin(), l.held().end()))},
              {"waiting", waiting},
              {"last_woken_by", Opt(l.has_last_woken_by(), l.last_woken_by())},
              {"lock_waits", l.lock_waits()},
              {"lock_wait_ns", l.lock_wait_ns()},
              {"condition_waits", l.condition_waits()},
              {"condition_wait_ns", l.condition_wait_ns()},
              {"join_wait_ns", l.join_wait_ns()},
              {"contention_waits", l.contention_waits()},
              {"contention_wait_ns", l.contention_wait_ns()},
              {"acquires", Opt(l.has_acquires(), l.acquires())}};
}

}  // namespace

const char* StateName(v1::ThreadState state) {
  switch (state) {
    case v1::THREAD_STATE_NOT_STARTED: return "NOT_STARTED";
    case v1::THREAD_STATE_STARTING: return "STARTING";
    case v1::THREAD_STATE_RUNNING: return "RUNNING";
    case v1::THREAD_STATE_DONE: return "DONE";
    default: return "UNKNOWN";
  }
}

json ThreadJson(const v1::Thread& t) {
  json waiters = json::array();
  for (const auto& w : t.join_waiters()) {
    waiters.push_back({{"native_tid", w.native_tid()}, {"since_ns", w.since_ns()}});
  }
  return json{
      {"id", t.id()},
      {"native_tid", t.native_tid() ? json(t.native_tid()) : json(nullptr)},
      {"ident", Opt(t.has_ident(), t.ident())},
      {"parent_native_tid", Opt(t.has_parent_native_tid(), t.parent_native_tid())},
      {"name", t.name()},
      {"state", StateName(t.state())},
      {"origin", OriginName(t.origin())},
      {"start_failed", t.start_failed()},
      {"joined", Opt(t.has_joined(), t.joined())},
      {"joined_ns", Opt(t.has_joined_ns(), t.joined_ns())},
      {"joined_by", Opt(t.has_joined_by(), t.joined_by())},
      {"detached", t.detached()},
      {"observed_from_start", t.observed_from_start()},
      {"started_ns", Opt(t.has_started_ns(), t.started_ns())},
      {"running_ns", Opt(t.has_running_ns(), t.running_ns())},
      {"done_ns", Opt(t.has_done_ns(), t.done_ns())},
      {"exited_ns", Opt(t.has_exited_ns(), t.exited_ns())},
      {"returned", Opt(t.has_returned(), t.returned())},
      {"exit_code", Opt(t.has_exit_code(), t.exit_code())},
      {"join_waiters", waiters},
      {"locks", ThreadLocksJson(t.locks())},
  };
}

json GilJson(const v1::Snapshot& s) {
  const v1::Gil& g = s.gil();
  const v1::GilTracing& cov = s.target().gil();
  json per_thread = json::array();
  for (const auto& t : g.per_thread()) {
    per_thread.push_back({{"native_tid", t.native_tid()},
                          {"acquisitions", t.acquisitions()},
                          {"wait_ns", t.wait_ns()},
                          {"hold_ns", t.hold_ns()},
                          {"forced_drops", t.forced_drops()},
                          {"voluntary_drops", t.voluntary_drops()},
                          {"holding", t.holding()},
                          {"waiting_since_ns", Opt(t.has_waiting_since_ns(), t.waiting_since_ns())},
                          {"observed_ns", t.observed_ns()},
                          {"hold_share", t.hold_share()},
                          {"wait_share", t.wait_share()}});
  }
  json waiters = json::array();
  for (const auto& w : g.waiters()) {
    waiters.push_back({{"native_tid", w.native_tid()}, {"since_ns", w.since_ns()}});
  }
  return json{
      {"traced", g.traced()},
      // "waits" (default): only takes that waited; holds, drops, switches not traced.
      {"mode", g.mode() == v1::GIL_MODE_WAITS ? "waits" : "full"},
      {"reason", cov.reason()},
      {"coverage",
       {{"take_functions", cov.take_functions()},
        {"drop_functions", cov.drop_functions()},
        {"inlined_drops", cov.inlined_drops()},
        {"drops_complete", cov.drops_complete()},
        {"forced_known", cov.forced_known()},
        {"notes", cov.notes()}}},
      {"holder_native_tid", Opt(g.has_holder_native_tid(), g.holder_native_tid())},
      {"holder_since_ns", Opt(g.has_holder_since_ns(), g.holder_since_ns())},
      {"waiters", waiters},
      {"switches", g.switches()},
      {"switches_per_second", g.switches_per_second()},
      {"acquisitions", g.acquisitions()},
      {"forced_switches", g.forced_switches()},
      {"overlaps", g.overlaps()},
      {"unmatched_drops", g.unmatched_drops()},
      {"wait_histogram", HistogramJson(g.wait())},
      {"hold_histogram", HistogramJson(g.hold())},
      {"per_thread", per_thread}};
}

json ReportJson(const v1::Snapshot& s) {
  const v1::Target& t = s.target();
  json probes = json::array();
  for (const auto& p : t.probes()) {
    json sites = json::array();
    for (const auto& site : p.sites()) {
      sites.push_back({{"binary", site.binary()},
                       {"file_offset", site.file_offset()},
                       {"location", site.location()},
                       {"resolved_by", site.resolved_by()},
                       {"instruction", site.instruction()},
                       {"execution", site.execution()}});
    }
    probes.push_back({{"name", p.name()},
                      {"attached", p.attached()},
                      {"reason", p.reason()},
                      {"purpose", p.purpose()},
                      {"kind", p.kind()},
                      {"required", p.required()},
                      {"feature", p.feature()},
                      {"feeds", std::vector<std::string>(p.feeds().begin(), p.feeds().end())},
                      {"sites", sites}});
  }
  json threads = json::array();
  for (const auto& th : s.threads()) threads.push_back(ThreadJson(th));
  json locks = json::array();
  for (const auto& l : s.locks()) locks.push_back(LockJson(l));
  json deadlocks = json::array();
  for (const auto& d : s.deadlocks()) deadlocks.push_back(DeadlockJson(d));
  json inversions = json::array();
  for (const auto& i : s.order_inversions()) inversions.push_back(InversionJson(i));
  json contention = json::array();
  for (const auto& k : s.contention()) contention.push_back(ContentionJson(k));
  Counts c = Count(s);
  const char* ended = s.ended_by() == v1::TRACE_END_EXITED     ? "exited"
                      : s.ended_by() == v1::TRACE_END_DETACHED ? "detached"
                                                               : nullptr;
  return json{
      {"report_version", 1},
      {"target",
       {{"pid", t.pid()},
        {"ns_pid", t.ns_pid()},
        {"executable", t.executable()},
        {"command_line", t.command_line()},
        {"interpreter", t.interpreter()},
        {"python_version", t.python_version()},
        {"symbols", SymbolsName(t.symbols())},
        {"free_threaded", t.free_threaded()},
        {"other_mount_namespace", t.other_mount_namespace()},
        {"join_visibility", JoinVisibilityName(t.join_visibility())},
        {"lock_mode", t.lock_mode()},
        {"lock_threshold_ns", t.lock_threshold_ns()},
        {"python_stacks",
         {{"enabled", t.python_stacks().enabled()},
          {"reason", t.python_stacks().reason()},
          {"layout_source", t.python_stacks().layout_source()},
          {"frames", t.python_stacks().frames()},
          {"frames_acquire", t.python_stacks().frames_acquire()},
          {"frames_gil", t.python_stacks().frames_gil()},
          {"gil_threshold_ns", t.python_stacks().gil_threshold_ns()}}},
        {"kernel_release", t.kernel_release()}}},
      {"probes", probes},
      {"threads", threads},
      {"locks", locks},
      {"locks_not_listed", s.locks_not_listed()},
      {"deadlocks", deadlocks},
      {"order_inversions", inversions},
      {"contention", contention},
      {"gil", GilJson(s)},
      // --overhead-budget: estimates, and said so ("estimated": true); null without a budget.
      {"budget", s.target().budget().enabled()
                     ? json{{"budget", s.target().budget().budget()},
                            {"stage", s.target().budget().stage()},
                            {"applied", s.target().budget().applied()},
                            {"estimated", true},
                            {"estimated_cost", s.target().budget().estimated_cost()},
                            {"estimated_probes_cost", s.target().budget().estimated_probes_cost()},
                            {"estimated_daemon_cost", s.target().budget().estimated_daemon_cost()},
                            {"calibration", s.target().budget().calibration()},
                            {"stage_changes", s.target().budget().stage_changes()},
                            {"last_change", s.target().budget().last_change()}}
                     : json()},
      {"summary",
       {{"threads_seen", c.seen},
        {"started", c.started},
        {"start_failed", c.failed},
        {"preexisting", c.preexisting},
        {"native", c.native},
        {"running", c.running},
        {"starting", c.starting},
        {"done", c.done},
        {"joined", c.joined_yes},
        {"not_joined", c.joined_no},
        {"joined_unknown", c.joined_unknown},
        {"returned", c.returned_yes},
        {"did_not_return", c.returned_no},
        {"threads_not_listed", s.threads_not_listed().seen()},
        {"deadlocks", s.deadlocks_size() + s.deadlocks_not_listed()},
        {"order_inversions", s.order_inversions_size()}}},
      {"stats",
       {{"events", t.stats().records()},
        {"drops", t.stats().drops()},
        {"lost_ringbuf", t.stats().lost_ringbuf()},
        {"lost_stash", t.stats().lost_stash()},
        {"lost_consumer", t.stats().lost_consumer()},
        {"decode_errors", t.stats().decode_errors()},
        {"unknown_records", t.stats().unknown_records()}}},
      {"trace",
       {{"start_ns", s.trace_start_ns()},
        {"end_ns", s.trace_end_ns() ? json(s.trace_end_ns()) : json(nullptr)},
        {"ended_by", ended ? json(ended) : json(nullptr)},
        {"attached_ns", t.attached_ns()},
        {"realtime_offset_ns", t.realtime_offset_ns()}}},
  };
}

json EventJson(const v1::WatchEventsResponse& e) {
  if (e.has_thread_event()) {
    const auto& te = e.thread_event();
    return json{{"type", "thread"},
                {"ts_ns", te.ts_ns()},
                {"change", ChangeName(te.change())},
                {"actor_native_tid", te.actor_native_tid()},
                {"thread", ThreadJson(te.thread())}};
  }
  if (e.has_lock_event()) {
    const auto& le = e.lock_event();
    json out{{"type", "lock"},
             {"ts_ns", le.ts_ns()},
             {"change", LockChangeName(le.change())},
             {"lock_id", le.lock_id()},
             {"lock_kind", LockKindName(le.kind())},
             {"native_tid", le.native_tid()},
             {"wait_kind", WaitKindName(le.wait_kind())},
             {"other_native_tid", Opt(le.has_other_native_tid(), le.other_native_tid())}};
    if (le.change() == v1::LOCK_CHANGE_WAIT_END) {
      out["wait_ns"] = le.wait_ns();
      out["acquired"] = le.acquired();
    }
    if (le.change() == v1::LOCK_CHANGE_RELEASED) out["hold_ns"] = le.hold_ns();
    if (le.has_deadlock()) out["deadlock"] = DeadlockJson(le.deadlock());
    if (le.stack().frames_size()) out["stack"] = StackJson(le.stack());
    if (le.wait_kind() == v1::WAIT_KIND_CONTENTION) {
      out["object_type"] = le.object_type();
      out["object"] = le.object();
    }
    if (le.has_inversion()) out["inversion"] = InversionJson(le.inversion());
    return out;
  }
  if (e.has_gil_event()) {
    const auto& ge = e.gil_event();
    json out{{"type", "gil"},
             {"ts_ns", ge.ts_ns()},
             {"change", GilChangeName(ge.change())},
             {"native_tid", ge.native_tid()}};
    if (ge.change() == v1::GIL_CHANGE_ACQUIRED) {
      out["wait_ns"] = ge.wait_ns();
      out["previous_holder"] = Opt(ge.has_previous_holder(), ge.previous_holder());
      if (ge.stack().frames_size()) out["stack"] = StackJson(ge.stack());
    }
    if (ge.change() == v1::GIL_CHANGE_DROPPED) {
      out["hold_ns"] = ge.hold_ns();
      out["forced"] = ge.forced();
    }
    return out;
  }
  if (e.has_lost_events()) {
    return json{{"type", "lost"},
                {"source", LostSourceName(e.lost_events().source())},
                {"count", e.lost_events().count()}};
  }
  const char* state = e.target_finished().state() == v1::TARGET_STATE_EXITED ? "exited"
                                                                            : "detached";
  return json{{"type", "finished"}, {"state", state}, {"ts_ns", e.target_finished().ts_ns()}};
}

std::string AttachBanner(const v1::Target& t, const std::string& engine) {
  int attached = 0;
  std::string missing;
  for (const auto& p : t.probes()) {
    if (p.attached()) {
      ++attached;
    } else {
      missing += fmt::format("\n  not attached: {} ({})", p.name(), Printable(p.reason()));
    }
  }
  std::string ns = t.ns_pid() && t.ns_pid() != t.pid()
                       ? fmt::format(" (pid {} in its namespace)", t.ns_pid())
                       : "";
  return fmt::format(
      "threadscope: pid {}{} {} — CPython {} ({}, {} symbols) via {}; {}/{} probes attached{}",
      t.pid(), ns, Printable(t.executable()), t.python_version(), Printable(t.interpreter()),
      SymbolsName(t.symbols()),
      engine, attached, t.probes_size(), missing);
}

namespace {

// What a contention row waits on: "list (critical section)", "mutex".
std::string ContentionOn(const v1::Contention& c) {
  if (c.other()) return "(other sites)";
  if (c.kind() == v1::LOCK_KIND_CRITICAL_SECTION) return c.type() + " (critical section)";
  return c.type().empty() ? "mutex" : c.type() + " (mutex)";
}

// "123 waits for 0x..:1 at app.py:10 one → 124 waits for ..."
std::string DeadlockCycle(const v1::Deadlock& d) {
  std::string cycle;
  for (int i = 0; i < d.native_tids_size(); ++i) {
    std::string at = i < d.wait_stacks_size() ? WhereText(d.wait_stacks(i)) : "";
    cycle += fmt::format("{}{} waits for {}{}", i ? " → " : "", d.native_tids(i), d.lock_ids(i),
                         at.empty() ? "" : " at " + at);
  }
  return cycle;
}

}  // namespace

const v1::GilThread* FindGilThread(const v1::Snapshot& s, int32_t tid) {
  if (!tid || !s.gil().traced()) return nullptr;
  for (const auto& g : s.gil().per_thread()) {
    if (g.native_tid() == tid) return &g;
  }
  return nullptr;
}

// "GIL: held by 1234 for 3ms · waiting: 1235 (4ms) 1236 (1ms) · 212 switches/s (180 forced)"
std::string GilLine(const v1::Snapshot& s, const TextStyle& style) {
  const v1::Gil& g = s.gil();
  std::string holder = "free";
  if (g.has_holder_native_tid()) {
    holder = fmt::format("held by {}", g.holder_native_tid());
    if (g.has_holder_since_ns() && s.now_ns() > g.holder_since_ns()) {
      holder += " for " + Duration(s.now_ns() - g.holder_since_ns());
    }
  }
  std::string waiters;
  if (g.mode() == v1::GIL_MODE_WAITS) holder = "holder not traced (--gil full)";
  for (int i = 0; i < std::min(4, g.waiters_size()); ++i) {
    const auto& w = g.waiters(i);
    waiters += fmt::format(" {}({})", w.native_tid(),
                           Duration(s.now_ns() > w.since_ns() ? s.now_ns() - w.since_ns() : 0));
  }
  if (g.waiters_size() > 4) waiters += fmt::format(" +{}", g.waiters_size() - 4);
  if (g.mode() == v1::GIL_MODE_WAITS) {
    return Paint("GIL:", "1", style) +
           fmt::format(" {} · waiting:{} · {} takes waited", holder,
                       waiters.empty() ? " none" : waiters, g.acquisitions());
  }
  return Paint("GIL:", "1", style) +
         fmt::format(" {} · waiting:{} · {} switches ({:.0f}/s), {} forced", holder,
                     waiters.empty() ? " none" : waiters, g.switches(), g.switches_per_second(),
                     g.forced_switches());
}

std::string LiveView(const v1::Snapshot& s, int max_rows, const TextStyle& style) {
  const v1::Target& t = s.target();
  Counts c = Count(s);
  std::string out = fmt::format(
      "threadscope — pid {} CPython {}   threads: {} running, {} starting, {} done ({} failed "
      "to start)   records {} drops {}\n\n",
      t.pid(), t.python_version(), c.running, c.starting, c.done, c.failed, t.stats().records(),
      t.stats().drops());
  out += Paint(fmt::format("{:>8} {:>16} {:<16} {:<9} {:>8} {:>9} {:<7} {:<9} {:>8} {:>8}", "TID",
                           "IDENT", "NAME", "STATE", "PARENT", "AGE", "JOINED", "ORIGIN",
                           "GIL HOLD", "GIL WAIT"),
               "1", style);
  out += "\n";
  // Live threads first, newest first; then the most recent finished ones.
  std::vector<const v1::Thread*> rows;
  for (const auto& th : s.threads()) rows.push_back(&th);
  std::stable_sort(rows.begin(), rows.end(), [](const v1::Thread* a, const v1::Thread* b) {
    bool a_done = a->state() == v1::THREAD_STATE_DONE, b_done = b->state() == v1::THREAD_STATE_DONE;
    if (a_done != b_done) return !a_done;
    return a->id() > b->id();
  });
  // Deadlocks first: they are why someone runs this.
  for (const auto& d : s.deadlocks()) {
    if (d.has_resolved_ns()) continue;
    std::string cycle = DeadlockCycle(d);
    out = Paint(fmt::format("DEADLOCK for {}: {}", Duration(s.now_ns() - d.since_ns()), cycle),
                "1;31", style) +
          "\n" + out;
  }
  if (s.gil().traced()) out += GilLine(s, style) + "\n";
  int lock_rows = s.locks_size() ? std::min(5, std::max(1, max_rows / 4)) : 0;
  max_rows -= lock_rows ? lock_rows + 3 : 0;
  int contention_rows = s.contention_size() ? std::min(5, std::max(1, max_rows / 4)) : 0;
  max_rows -= contention_rows ? contention_rows + 3 : 0;
  int shown = 0;
  for (const v1::Thread* th : rows) {
    if (shown++ >= max_rows) {
      out += fmt::format("  … {} more\n", rows.size() - static_cast<size_t>(max_rows));
      break;
    }
    uint64_t since = th->has_running_ns() ? th->running_ns() : th->started_ns();
    uint64_t until = th->has_done_ns() ? th->done_ns() : s.now_ns();
    std::string age = since && until >= since ? Duration(until - since) : "-";
    std::string joined = th->origin() == v1::THREAD_ORIGIN_STARTED
                             ? Tri(th->has_joined(), th->joined())
                             : "-";
    if (!th->join_waiters().empty()) joined = fmt::format("wait:{}", th->join_waiters_size());
    std::string state = StateName(th->state());
    if (th->start_failed()) state = "FAILED";
    std::string hold = "-", wait = "-";
    if (const v1::GilThread* g = FindGilThread(s, th->native_tid())) {
      hold = fmt::format("{:.0f}%", 100 * g->hold_share());
      wait = fmt::format("{:.0f}%", 100 * g->wait_share());
    }
    out += fmt::format("{:>8} {:>16} {:<16} {} {:>8} {:>9} {:<7} {:<9} {:>8} {:>8}\n",
                       th->native_tid() ? std::to_string(th->native_tid()) : "-", Ident(*th),
                       Printable(th->name()).substr(0, 16),
                       Paint(fmt::format("{:<9}", state), StateColor(th->state()), style),
                       th->has_parent_native_tid() ? std::to_string(th->parent_native_tid()) : "-",
                       age, joined, OriginName(th->origin()), hold, wait);
  }
  if (lock_rows) {
    out += "\n" + Paint(fmt::format("{:<22} {:<7} {:>8} {:>10} {:>10} {:>8}  {:<24} {}", "LOCK",
                                    "KIND", "WAITS", "WAIT TOTAL", "WAIT MAX", "OWNER", "WAITERS",
                                    "CONTENDED AT"),
                        "1", style) +
           "\n";
    for (int i = 0; i < std::min(lock_rows, s.locks_size()); ++i) {
      const v1::Lock& l = s.locks(i);
      std::string waiters;
      for (const auto& w : l.waiters()) {
        waiters += fmt::format("{}{}({})", waiters.empty() ? "" : " ", w.native_tid(),
                               Duration(s.now_ns() - w.since_ns()));
      }
      out += fmt::format("{:<22} {:<7} {:>8} {:>10} {:>10} {:>8}  {:<24} {}\n", l.id(),
                         LockKindName(l.kind()), l.contended(), Duration(l.wait().sum_ns()),
                         Duration(l.wait().max_ns()),
                         l.has_owner_native_tid() ? std::to_string(l.owner_native_tid()) : "-",
                         waiters.empty() ? "-" : waiters, WhereText(l.first_contended_at()));
    }
  }
  if (contention_rows) {
    out += "\n" + Paint(fmt::format("{:<22} {:<16} {:>8} {:>10} {:>10} {:>7}  {:<24} {}",
                                    "CONTENTION", "ON", "WAITS", "WAIT TOTAL", "WAIT MAX",
                                    "THREADS", "WAITERS", "AT"),
                        "1", style) +
           "\n";
    for (int i = 0; i < std::min(contention_rows, s.contention_size()); ++i) {
      const v1::Contention& c = s.contention(i);
      std::string waiters;
      for (const auto& w : c.waiters()) {
        waiters += fmt::format("{}{}({})", waiters.empty() ? "" : " ", w.native_tid(),
                               Duration(s.now_ns() - w.since_ns()));
      }
      out += fmt::format("{:<22} {:<16} {:>8} {:>10} {:>10} {:>7}  {:<24} {}\n", c.id(),
                         Printable(ContentionOn(c)).substr(0, 16), c.waits(),
                         Duration(c.wait().sum_ns()), Duration(c.wait().max_ns()), c.threads(),
                         waiters.empty() ? "-" : waiters, WhereText(c.stack()));
    }
  }
  return out;
}

std::string SummaryText(const v1::Snapshot& s, const TextStyle& style) {
  const v1::Target& t = s.target();
  Counts c = Count(s);
  uint64_t span = s.trace_end_ns() > s.trace_start_ns() ? s.trace_end_ns() - s.trace_start_ns()
                                                         : s.now_ns() - s.trace_start_ns();
  std::string ended = s.ended_by() == v1::TRACE_END_EXITED     ? "the process exited"
                      : s.ended_by() == v1::TRACE_END_DETACHED ? "detached"
                                                               : "still running";
  std::string out = fmt::format("\n{} pid {} (CPython {}) traced for {}; {}\n",
                                Paint("Summary:", "1", style), t.pid(), t.python_version(),
                                Duration(span), ended);
  out += fmt::format(
      "  threads seen: {} — started {} ({} failed to start), preexisting {}, native {}\n", c.seen,
      c.started, c.failed, c.preexisting, c.native);
  out += fmt::format("  now: {} running, {} starting, {} done\n", c.running, c.starting, c.done);
  std::string join_note;
  if (t.join_visibility() == v1::JOIN_VISIBILITY_BLOCKING_ONLY) {
    join_note = " (this interpreter shows a join only when it has to wait)";
  } else if (t.join_visibility() == v1::JOIN_VISIBILITY_NONE) {
    join_note = " (this interpreter gives no join signal)";
  }
  out += fmt::format("  joined: {} yes, {} no, {} unknown{}\n", c.joined_yes, c.joined_no,
                     c.joined_unknown, join_note);
  if (t.body_done_visible()) {
    out += fmt::format("  callables returned: {} yes, {} no (killed or still running)\n",
                       c.returned_yes, c.returned_no);
  }
  if (t.lock_mode() != "off" && !t.lock_mode().empty()) {
    uint64_t contended = 0, wait_ns = 0, cond_waits = 0, cond_ns = 0;
    for (const auto& l : s.locks()) {
      contended += l.contended();
      wait_ns += l.wait().sum_ns();
    }
    for (const auto& th : s.threads()) {
      cond_waits += th.locks().condition_waits();
      cond_ns += th.locks().condition_wait_ns();
    }
    out += fmt::format("  locks ({}): {} contended waits, {} waiting in total; {} condition "
                       "waits ({})\n",
                       t.lock_mode(), contended, Duration(wait_ns), cond_waits, Duration(cond_ns));
    for (int i = 0; i < std::min(5, s.locks_size()); ++i) {
      const v1::Lock& l = s.locks(i);
      if (!l.contended() && !l.acquires()) break;
      std::string at = WhereText(l.first_contended_at());
      if (at.empty()) at = WhereText(l.created_at());
      out += fmt::format("    {:<22} {:<6} {:>6} waits, {:>9} total, {:>9} max{}{}\n", l.id(),
                         LockKindName(l.kind()), l.contended(), Duration(l.wait().sum_ns()),
                         Duration(l.wait().max_ns()),
                         l.has_acquires() ? fmt::format(", {} acquires", l.acquires()) : "",
                         at.empty() ? "" : "  " + at);
    }
    if (s.contention_size()) {
      uint64_t waits = 0, ns = 0;
      for (const auto& k : s.contention()) {
        waits += k.waits();
        ns += k.wait().sum_ns();
      }
      out += fmt::format("  contention (critical sections, interpreter mutexes): {} waits, {} "
                         "waiting in total\n",
                         waits, Duration(ns));
      int shown = 0;
      for (const auto& k : s.contention()) {
        // A row whose fast path failed but never slept (spins only) says nothing about waiting.
        if (!k.waits() || shown++ == 5) continue;
        std::string at = WhereText(k.stack());
        out += fmt::format("    {:<22} {:>6} waits, {:>9} total, {:>9} max, {} thread{}{}\n",
                           Printable(ContentionOn(k)), k.waits(), Duration(k.wait().sum_ns()),
                           Duration(k.wait().max_ns()), k.threads(), k.threads() == 1 ? "" : "s",
                           at.empty() ? "" : "  " + at);
      }
    }
    for (const auto& d : s.deadlocks()) {
      std::string cycle = DeadlockCycle(d);
      out += Paint(fmt::format("  DEADLOCK{}: {}\n", d.has_resolved_ns() ? " (resolved)" : "",
                               cycle),
                   "1;31", style);
    }
    for (const auto& inv : s.order_inversions()) {
      out += Paint(fmt::format("  lock order inversion: {} then {} (thread {}), {} then {} "
                               "(thread {}): potential deadlock\n",
                               inv.lock_a(), inv.lock_b(), inv.thread_ab(), inv.lock_b(),
                               inv.lock_a(), inv.thread_ba()),
                   "33", style);
    }
  }
  if (s.gil().traced() && s.gil().mode() == v1::GIL_MODE_WAITS) {
    // --gil waits: only the takes that waited were seen.
    const v1::Gil& g = s.gil();
    out += fmt::format("  GIL (waits only; --gil full for holds and switches): {} takes waited; "
                       "wait {} total, max {}\n",
                       g.acquisitions(), Duration(g.wait().sum_ns()), Duration(g.wait().max_ns()));
    for (int i = 0; i < std::min(5, g.per_thread_size()); ++i) {
      const auto& pt = g.per_thread(i);
      out += fmt::format("    tid {:>8}: waited {:>9} ({:>3.0f}%), {} waits\n", pt.native_tid(),
                         Duration(pt.wait_ns()), 100 * pt.wait_share(), pt.acquisitions());
    }
  } else if (s.gil().traced()) {
    const v1::Gil& g = s.gil();
    out += fmt::format("  GIL: {} acquisitions, {} switches ({:.0f}/s), {} forced; wait {} total, "
                       "max {}\n",
                       g.acquisitions(), g.switches(), g.switches_per_second(),
                       g.forced_switches(), Duration(g.wait().sum_ns()),
                       Duration(g.wait().max_ns()));
    for (int i = 0; i < std::min(5, g.per_thread_size()); ++i) {
      const auto& pt = g.per_thread(i);
      out += fmt::format("    tid {:>8}: held {:>9} ({:>3.0f}%), waited {:>9} ({:>3.0f}%), {} "
                         "acquisitions, {} forced / {} voluntary drops\n",
                         pt.native_tid(), Duration(pt.hold_ns()), 100 * pt.hold_share(),
                         Duration(pt.wait_ns()), 100 * pt.wait_share(), pt.acquisitions(),
                         pt.forced_drops(), pt.voluntary_drops());
    }
    if (!t.gil().drops_complete() || !t.gil().forced_known()) {
      out += fmt::format("    (partial: {})\n", t.gil().notes().empty()
                                                  ? "forced drops are not told apart"
                                                  : Printable(t.gil().notes()));
    }
  } else if (!t.gil().reason().empty()) {
    out += fmt::format("  GIL: not traced ({})\n", Printable(t.gil().reason()));
  }
  if (t.budget().enabled()) {
    const v1::OverheadBudget& b = t.budget();
    out += fmt::format("  overhead budget {:.2f}% of a core: stage {}{}; estimated cost {:.3f}% "
                       "(an estimate: {}; probes {:.3f}%, daemon {:.3f}%), {} stage changes\n",
                       100 * b.budget(), b.stage(), b.applied() ? "" : " (advisory)",
                       100 * b.estimated_cost(), Printable(b.calibration()),
                       100 * b.estimated_probes_cost(), 100 * b.estimated_daemon_cost(),
                       b.stage_changes());
  }
  int attached = 0;
  for (const auto& p : t.probes()) attached += p.attached();
  out += fmt::format("  probes: {}/{} attached; records: {}, dropped: {}\n", attached,
                     t.probes_size(), t.stats().records(), t.stats().drops());
  if (t.stats().drops()) {
    out += Paint("  warning: records were dropped; counts may be incomplete (raise "
                 "--ring-buffer)\n",
                 "33", style);
  }
  return out;
}

std::string EventLine(const v1::WatchEventsResponse& e, uint64_t base_ns) {
  if (e.has_gil_event()) {
    const auto& ge = e.gil_event();
    double since = (static_cast<double>(ge.ts_ns()) - static_cast<double>(base_ns)) / 1e9;
    std::string extra;
    if (ge.change() == v1::GIL_CHANGE_ACQUIRED) extra = " waited=" + Duration(ge.wait_ns());
    if (ge.change() == v1::GIL_CHANGE_DROPPED) {
      extra = " held=" + Duration(ge.hold_ns()) + (ge.forced() ? " forced" : " voluntary");
    }
    return fmt::format("{:+9.3f}s gil_{:<12} tid={}{}", since, GilChangeName(ge.change()),
                       ge.native_tid(), extra);
  }
  if (e.has_lock_event()) {
    const auto& le = e.lock_event();
    double since = (static_cast<double>(le.ts_ns()) - static_cast<double>(base_ns)) / 1e9;
    std::string who = le.has_other_native_tid() ? " other=" + std::to_string(le.other_native_tid())
                                                : "";
    if (le.change() == v1::LOCK_CHANGE_DEADLOCK) {
      std::string cycle;
      for (int i = 0; i < le.deadlock().native_tids_size(); ++i) {
        cycle += fmt::format("{}{} waits for {}", i ? ", " : "", le.deadlock().native_tids(i),
                             le.deadlock().lock_ids(i));
      }
      return fmt::format("{:+9.3f}s DEADLOCK         {}", since, cycle);
    }
    std::string extra = le.change() == v1::LOCK_CHANGE_WAIT_END
                            ? fmt::format(" waited={} {}", Duration(le.wait_ns()),
                                          le.acquired() ? "acquired" : "gave up")
                            : "";
    std::string at = WhereText(le.stack());
    return fmt::format("{:+9.3f}s lock_{:<11} tid={} lock={} ({}, {} wait){}{}{}", since,
                       LockChangeName(le.change()), le.native_tid(), le.lock_id(),
                       LockKindName(le.kind()), WaitKindName(le.wait_kind()), extra, who,
                       at.empty() ? "" : " at " + at);
  }
  if (e.has_lost_events()) {
    return fmt::format("lost {} events ({})", e.lost_events().count(),
                       LostSourceName(e.lost_events().source()));
  }
  if (e.has_target_finished()) {
    return e.target_finished().state() == v1::TARGET_STATE_EXITED ? "target exited"
                                                                   : "detached";
  }
  const auto& te = e.thread_event();
  const auto& th = te.thread();
  double since = (static_cast<double>(te.ts_ns()) - static_cast<double>(base_ns)) / 1e9;
  return fmt::format("{:+9.3f}s {:<16} tid={} ident={} name={} state={} by={}", since,
                     ChangeName(te.change()),
                     th.native_tid(), Ident(th), Printable(th.name()), StateName(th.state()),
                     te.actor_native_tid());
}

}  // namespace threadscope::client
