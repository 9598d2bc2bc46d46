#include "client/report_json.h"

#include <map>
#include <vector>

#include "client/report_common.h"

namespace threadscope::client {

using nlohmann::json;

namespace {

template <typename T>
json Opt(bool has, T value) {
  return has ? json(value) : json(nullptr);
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
  // The overhead budget's switches of a --gil full trace's probes (docs/PERFORMANCE.md).
  json mode_changes = json::array();
  for (const auto& c : g.mode_changes()) {
    mode_changes.push_back({{"ts_ns", c.ts_ns()},
                            {"mode", c.mode() == v1::GIL_MODE_WAITS ? "waits" : "full"},
                            {"cut_holds", c.cut_holds()},
                            {"cut_waits", c.cut_waits()}});
  }
  return json{
      {"traced", g.traced()},
      // "waits" (default): only takes that waited; holds, drops, switches not traced.
      {"mode", g.mode() == v1::GIL_MODE_WAITS ? "waits" : "full"},
      {"mode_changes", mode_changes},
      {"cut_holds", g.cut_holds()},
      {"cut_waits", g.cut_waits()},
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
      {"per_thread", per_thread},
      {"runtime", GilRuntimeName(g.runtime())},
      {"enabled_since_ns", Opt(g.has_enabled_since_ns(), g.enabled_since_ns())},
      {"transient_enables", g.transient_enables()},
      {"runtime_text", GilRuntimeText(s)}};
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
                            {"last_change", s.target().budget().last_change()},
                            // duty_cycle: GIL and lock counts are samples of this share of time
                            {"traced_fraction", s.target().budget().traced_fraction()},
                            {"paused_ns", s.target().budget().paused_ns()},
                            {"pauses", s.target().budget().pauses()},
                            {"paused", s.target().budget().paused()},
                            {"duty_on_ns", s.target().budget().duty_on_ns()},
                            {"duty_period_ns", s.target().budget().duty_period_ns()}}
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
    if (ge.change() == v1::GIL_CHANGE_ENABLED || ge.change() == v1::GIL_CHANGE_DISABLED) {
      out["runtime"] = GilRuntimeName(ge.runtime());
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

}  // namespace threadscope::client
