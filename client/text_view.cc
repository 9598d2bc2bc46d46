#include "client/text_view.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "client/report_common.h"
#include "daemon/common/text.h"

namespace threadscope::client {

namespace {

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

// Where(), for a terminal: the short form, every control character escaped.
std::string WhereText(const v1::PyStack& st) { return Printable(Where(st, true)); }

}  // namespace

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
  std::string runtime = GilRuntimeText(s);
  if (g.runtime() == v1::GIL_RUNTIME_OFF) return Paint("GIL:", "1", style) + " " + runtime;
  if (!runtime.empty()) holder = runtime + " · " + holder;
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
  // The overhead budget switched the GIL probes: say what was traced when, first.
  for (const auto& c : s.gil().mode_changes()) {
    const double at = c.ts_ns() > s.target().attached_ns()
                          ? static_cast<double>(c.ts_ns() - s.target().attached_ns()) / 1e9
                          : 0.0;
    if (c.mode() == v1::GIL_MODE_WAITS) {
      out += fmt::format(
          "  GIL: holds traced until +{:.3f}s, waits only after (overhead budget); "
          "{} hold(s) and {} take(s) in progress cut, end unknown\n",
          at, c.cut_holds(), c.cut_waits());
    } else {
      out += fmt::format(
          "  GIL: every take and drop traced again from +{:.3f}s (overhead "
          "budget); {} wait(s) in progress cut\n",
          at, c.cut_waits());
    }
  }
  if (s.gil().traced() && s.gil().runtime() == v1::GIL_RUNTIME_OFF) {
    out += fmt::format("  GIL: {}\n", GilRuntimeText(s));
  } else if (s.gil().traced() && s.gil().mode() == v1::GIL_MODE_WAITS) {
    // --gil waits: only the takes that waited were seen.
    const v1::Gil& g = s.gil();
    if (std::string rt = GilRuntimeText(s); !rt.empty()) out += fmt::format("  GIL: {}\n", rt);
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
    if (std::string rt = GilRuntimeText(s); !rt.empty()) out += fmt::format("  GIL: {}\n", rt);
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
    if (b.pauses()) {
      // Sampled, not total: say it where the counts are read.
      out += fmt::format(
          "  duty cycle: GIL and locks traced {:.1f} s of every {:.1f} s since "
          "+{:.1f}s ({:.1f}% of the time{}); GIL and lock counts are samples\n",
          b.duty_on_ns() / 1e9, b.duty_period_ns() / 1e9,
          b.duty_since_ns() > t.attached_ns() ? (b.duty_since_ns() - t.attached_ns()) / 1e9 : 0.0,
          100 * b.traced_fraction(), b.paused() ? ", paused now" : "");
    }
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
    if (ge.change() == v1::GIL_CHANGE_ENABLED || ge.change() == v1::GIL_CHANGE_DISABLED) {
      extra = std::string(" runtime=") + GilRuntimeName(ge.runtime());
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
