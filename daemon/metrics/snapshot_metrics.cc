#include "daemon/metrics/snapshot_metrics.h"

#include "proto/stack_text.h"

#include <algorithm>
#include <cmath>

namespace threadscope::metrics {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Bucket i of a v1::Histogram counts [2^i, 2^(i+1)) ns. Exposed bounds: 2^kFirst .. 2^kLast ns.
constexpr int kFirstBound = 10;  // 1.024 us
constexpr int kLastBound = 36;   // 68.7 s


class Families {
 public:
  // Appends a family built elsewhere (a retained target's), merged with its namesake.
  void Add(const MetricFamily& family) {
    MetricFamily& into = Get(family.name, family.help, family.type);
    into.metric.insert(into.metric.end(), family.metric.begin(), family.metric.end());
  }
  MetricFamily& Get(const std::string& name, const std::string& help, MetricType type) {
    auto it = index_.find(name);
    if (it != index_.end()) return families_[it->second];
    index_[name] = families_.size();
    families_.push_back(MetricFamily{name, help, type, {}});
    return families_.back();
  }
  std::vector<MetricFamily> Take() { return std::move(families_); }

 private:
  std::map<std::string, size_t> index_;
  std::vector<MetricFamily> families_;
};

using Labels = std::vector<prometheus::ClientMetric::Label>;

Labels With(Labels base, std::initializer_list<std::pair<const char*, std::string>> extra) {
  for (const auto& [k, v] : extra) base.push_back({k, v});
  std::sort(base.begin(), base.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return base;
}

void Gauge(Families& f, const std::string& name, const std::string& help, const Labels& labels,
           double value) {
  ClientMetric m;
  m.label = labels;
  m.gauge.value = value;
  f.Get(name, help, MetricType::Gauge).metric.push_back(std::move(m));
}

void Counter(Families& f, const std::string& name, const std::string& help, const Labels& labels,
             double value) {
  ClientMetric m;
  m.label = labels;
  m.counter.value = value;
  f.Get(name, help, MetricType::Counter).metric.push_back(std::move(m));
}

void Histogram(Families& f, const std::string& name, const std::string& help,
               const Labels& labels, const v1::Histogram& h) {
  ClientMetric m;
  m.label = labels;
  m.histogram = ToPrometheus(h);
  f.Get(name, help, MetricType::Histogram).metric.push_back(std::move(m));
}

v1::Histogram Merge(const v1::Histogram& a, const v1::Histogram& b) {
  v1::Histogram out = a;
  for (int i = 0; i < b.buckets_size(); ++i) {
    if (i < out.buckets_size()) {
      out.set_buckets(i, out.buckets(i) + b.buckets(i));
    } else {
      out.add_buckets(b.buckets(i));
    }
  }
  out.set_count(a.count() + b.count());
  out.set_sum_ns(a.sum_ns() + b.sum_ns());
  out.set_max_ns(std::max(a.max_ns(), b.max_ns()));
  return out;
}

const char* StateLabel(v1::ThreadState s) {
  switch (s) {
    case v1::THREAD_STATE_NOT_STARTED: return "not_started";
    case v1::THREAD_STATE_STARTING: return "starting";
    case v1::THREAD_STATE_RUNNING: return "running";
    case v1::THREAD_STATE_DONE: return "done";
    default: return "unknown";
  }
}

void TargetMetrics(const v1::Snapshot& s, const MetricsOptions& options, Families& f,
                   std::set<std::string>* own_series) {
  const v1::Target& t = s.target();
  // One value per name (a duplicate label makes Prometheus reject the page): the target's own
  // labels over the daemon's.
  std::map<std::string, std::string> user(options.labels.begin(), options.labels.end());
  for (const auto& [k, v] : t.labels()) user[k] = v;
  Labels base;
  for (const auto& [k, v] : user) base.push_back({k, v});
  base.push_back({"pid", std::to_string(t.pid())});
  base.push_back({"executable", t.executable()});
  base = With(base, {});

  Gauge(f, "threadscope_target_info",
        "A traced process: its interpreter and how it is traced (value 1)",
        With(base, {{"python_version", t.python_version()},
                    {"symbols", t.symbols() == v1::SYMBOL_LEVEL_FULL ? "full" : "dynamic-only"},
                    {"lock_mode", t.lock_mode()},
                    {"gil", t.gil().enabled() ? "traced" : "off"}}),
        1);

  // Hook for the overhead budget (issue 15 item 2, not here): its per-target series is
  // threadscope_budget_stage{target,...,stage} (value 1), emitted here from the target message
  // with the `base` labels, so retained targets keep their last stage too. The fleet
  // dashboard's budget panel already queries it.

  // Threads.
  std::map<std::string, double> by_state = {
      {"starting", 0}, {"running", 0}, {"done", 0}};
  double started = 0, failed = 0;
  for (const auto& th : s.threads()) {
    by_state[StateLabel(th.state())] += 1;
    if (th.origin() == v1::THREAD_ORIGIN_STARTED) ++started;
    if (th.start_failed()) ++failed;
  }
  for (const auto& [state, n] : by_state) {
    Gauge(f, "threadscope_threads", "Threads of the process by lifecycle state (done: seen ending)",
          With(base, {{"state", state}}), n);
  }
  Counter(f, "threadscope_thread_starts_total",
          "Threads started through _thread/threading since the attach", base, started);
  Counter(f, "threadscope_thread_start_failures_total",
          "Thread starts that failed (\"can't start new thread\")", base, failed);

  // Locks: the top contended ones keep their own series (sticky), the rest fold into "other".
  std::vector<const v1::Lock*> locks;
  for (const auto& l : s.locks()) locks.push_back(&l);
  std::sort(locks.begin(), locks.end(), [](const v1::Lock* a, const v1::Lock* b) {
    if (a->wait().sum_ns() != b->wait().sum_ns()) return a->wait().sum_ns() > b->wait().sum_ns();
    return a->id() < b->id();
  });
  size_t own_locks = 0;  // (contention rows share the set, as "cs:" ids)
  for (const auto& id : *own_series) own_locks += id.rfind("cs:", 0) != 0;
  for (const v1::Lock* l : locks) {
    if (own_locks >= options.top_locks) break;
    if ((l->contended() || l->acquires()) && own_series->insert(l->id()).second) ++own_locks;
  }
  struct Fold {
    double acquires = 0, contended = 0, timeouts = 0;
    bool have_acquires = false, have_hold = false;
    v1::Histogram wait, hold;
  } other;
  bool exact = t.lock_mode() == "all";
  auto lock_series = [&](const Labels& labels, double acquires, bool have_acquires,
                         double contended, double timeouts, const v1::Histogram& wait,
                         const v1::Histogram* hold) {
    Counter(f, "threadscope_lock_contentions_total",
            "Acquisitions that had to wait because the lock was held", labels, contended);
    Counter(f, "threadscope_lock_timeouts_total", "Acquisitions that gave up (timeout)", labels,
            timeouts);
    if (have_acquires) {
      Counter(f, "threadscope_lock_acquisitions_total",
              "Acquisitions (--locks all: every one; not observed in contended mode)", labels,
              acquires);
    }
    Histogram(f, "threadscope_lock_wait_seconds", "Time waiting for a held lock", labels, wait);
    if (hold) {
      Histogram(f, "threadscope_lock_hold_seconds", "Time a lock was held (--locks all)",
                labels, *hold);
    }
  };
  if (t.lock_mode() != "off" && !t.lock_mode().empty()) {
    for (const v1::Lock* l : locks) {
      if (!own_series->count(l->id())) {
        other.acquires += l->acquires();
        other.contended += l->contended();
        other.timeouts += l->timeouts();
        other.wait = Merge(other.wait, l->wait());
        if (l->has_hold()) other.hold = Merge(other.hold, l->hold());
        continue;
      }
      std::string site = v1::ShortWhere(l->first_contended_at());
      if (site.empty()) site = v1::ShortWhere(l->created_at());
      const char* kind = l->kind() == v1::LOCK_KIND_RLOCK  ? "RLock"
                         : l->kind() == v1::LOCK_KIND_LOCK ? "Lock"
                                                           : "unknown";
      lock_series(With(base, {{"lock", l->id()}, {"site", site}, {"kind", kind}}),
                  l->acquires(), exact, l->contended(), l->timeouts(), l->wait(),
                  l->has_hold() ? &l->hold() : nullptr);
    }
    lock_series(With(base, {{"lock", "other"}, {"site", ""}, {"kind", ""}}), other.acquires,
                exact, other.contended, other.timeouts, other.wait, exact ? &other.hold : nullptr);
  }
  // 3.13+ contention on critical sections and interpreter mutexes, by (kind, type, line): the
  // same sticky top-N as locks (their own N), the rest in one "other" series.
  if (t.lock_mode() != "off" && !t.lock_mode().empty() && s.contention_size()) {
    size_t own = 0;
    for (const auto& id : *own_series) own += id.rfind("cs:", 0) == 0;
    for (const auto& c : s.contention()) {  // most waited-for first
      if (own >= options.top_locks) break;
      if (!c.other() && c.waits() && own_series->insert(c.id()).second) ++own;
    }
    double other_waits = 0;
    v1::Histogram other_wait;
    auto series = [&](const Labels& labels, double waits, const v1::Histogram& wait) {
      Counter(f, "threadscope_contention_waits_total",
              "Blocked waits on a critical section (free-threaded: an object's own mutex) or "
              "another interpreter mutex, by object type and Python line",
              labels, waits);
      Histogram(f, "threadscope_contention_wait_seconds",
                "Time blocked on a critical section or an interpreter mutex", labels, wait);
    };
    for (const auto& c : s.contention()) {
      if (!own_series->count(c.id())) {
        other_waits += c.waits();
        other_wait = Merge(other_wait, c.wait());
        continue;
      }
      const char* kind =
          c.kind() == v1::LOCK_KIND_CRITICAL_SECTION ? "critical_section" : "mutex";
      series(With(base, {{"contention", c.id()},
                         {"kind", kind},
                         {"type", c.type()},
                         {"site", v1::ShortWhere(c.stack())}}),
             c.waits(), c.wait());
    }
    series(With(base, {{"contention", "other"}, {"kind", ""}, {"type", ""}, {"site", ""}}),
           other_waits, other_wait);
  }
  double active = 0;
  for (const auto& d : s.deadlocks()) active += d.has_resolved_ns() ? 0 : 1;
  Gauge(f, "threadscope_deadlocks", "Wait-for cycles present now", base, active);
  Counter(f, "threadscope_deadlocks_total", "Wait-for cycles detected since the attach", base,
          s.deadlocks_size());
  Counter(f, "threadscope_lock_order_inversions_total",
          "Pairs of locks seen taken in both orders (potential deadlocks, --locks all)", base,
          s.order_inversions_size());

  // The GIL.
  if (s.gil().traced()) {
    const v1::Gil& g = s.gil();
    double wait = 0, hold = 0, forced = 0, voluntary = 0;
    for (const auto& pt : g.per_thread()) {
      wait += static_cast<double>(pt.wait_ns()) / 1e9;
      hold += static_cast<double>(pt.hold_ns()) / 1e9;
      forced += static_cast<double>(pt.forced_drops());
      voluntary += static_cast<double>(pt.voluntary_drops());
    }
    Counter(f, "threadscope_gil_acquisitions_total", "GIL acquisitions", base,
            static_cast<double>(g.acquisitions()));
    Counter(f, "threadscope_gil_switches_total",
            "GIL acquisitions by a thread other than the last holder", base,
            static_cast<double>(g.switches()));
    Counter(f, "threadscope_gil_drops_total",
            "GIL drops: forced (a waiter asked) or voluntary (a blocking call)",
            With(base, {{"kind", "forced"}}), forced);
    Counter(f, "threadscope_gil_drops_total",
            "GIL drops: forced (a waiter asked) or voluntary (a blocking call)",
            With(base, {{"kind", "voluntary"}}), voluntary);
    Counter(f, "threadscope_gil_wait_seconds_total",
            "Time threads spent waiting for the GIL, summed over threads", base, wait);
    Counter(f, "threadscope_gil_hold_seconds_total",
            "Time threads held the GIL, summed over threads", base, hold);
    Gauge(f, "threadscope_gil_waiters", "Threads waiting for the GIL now", base,
          g.waiters_size());
    Histogram(f, "threadscope_gil_wait_seconds", "Time each GIL acquisition waited", base,
              g.wait());
    Histogram(f, "threadscope_gil_hold_seconds", "Time each GIL hold lasted", base, g.hold());
  }

  // --overhead-budget: the stage, and the cost estimate that decides it (an estimate, and
  // labelled so: estimate="true").
  if (t.budget().enabled()) {
    const v1::OverheadBudget& b = t.budget();
    Gauge(f, "threadscope_budget_stage",
          "Overhead-budget stage (0 as_asked, 1 gil_waits, 2 no_acquire_stacks, "
          "3 lock_threshold, 4 duty_cycle); applied=\"false\": advisory",
          With(base, {{"stage", b.stage()}, {"applied", b.applied() ? "true" : "false"}}),
          b.stage_index());
    Gauge(f, "threadscope_budget_estimated_cost_ratio",
          "Estimated tracing cost as a share of one core (an estimate: probe records x "
          "calibrated cost + the daemon's consumer CPU)",
          With(base, {{"estimate", "true"}}), b.estimated_cost());
    Gauge(f, "threadscope_budget_ratio", "The overhead budget, as a share of one core", base,
          b.budget());
    Gauge(f, "threadscope_budget_traced_ratio",
          "Share of the time since the attach that the GIL and lock probes were attached (the "
          "duty cycle detaches them): below 1, GIL and lock counts are samples, not totals",
          base, b.traced_fraction());
    Gauge(f, "threadscope_budget_paused",
          "1 while the duty cycle has the GIL and lock probes "
          "detached",
          base, b.paused() ? 1 : 0);
  }

  // Probe coverage and the trace itself.
  double attached = 0, missing = 0, required_missing = 0;
  for (const auto& p : t.probes()) {
    if (p.attached()) {
      ++attached;
    } else {
      ++missing;
      if (p.required()) ++required_missing;
    }
  }
  Gauge(f, "threadscope_probes", "Planned probes by state", With(base, {{"state", "attached"}}),
        attached);
  Gauge(f, "threadscope_probes", "Planned probes by state", With(base, {{"state", "missing"}}),
        missing);
  Gauge(f, "threadscope_probes_required_missing",
        "Probes the thread lifecycle cannot do without that are not attached", base,
        required_missing);
  Counter(f, "threadscope_records_total", "Records received from the probes", base,
          static_cast<double>(t.stats().records()));
  Counter(f, "threadscope_records_dropped_total",
          "Records lost (kernel ring full, probe stash full)", base,
          static_cast<double>(t.stats().drops()));
}

// Series the daemon exports with nothing attached: what it is, what it traces, what
// auto-attach did, and what it costs itself.
void DaemonMetrics(const DaemonState& d, const MetricsOptions& options, Families& f) {
  Labels base;
  for (const auto& [k, v] : options.labels) base.push_back({k, v});
  base = With(base, {});
  Gauge(f, "threadscope_build_info", "The daemon's version (value 1)",
        With(base, {{"version", d.version}}), 1);
  for (const char* state : {"attached", "exited", "detached", "execed", "retained"}) {
    auto it = d.targets_by_state.find(state);
    Gauge(f, "threadscope_targets",
          "Targets by state: attached (traced now), exited/detached/execed (ended, still held by "
          "a client), retained (ended, last values kept on /metrics)",
          With(base, {{"state", state}}), it == d.targets_by_state.end() ? 0 : it->second);
  }
  Counter(f, "threadscope_daemon_cpu_seconds_total",
          "CPU time the daemon used (user and system), all its threads", base, d.cpu_seconds);
  Gauge(f, "threadscope_daemon_resident_memory_bytes", "The daemon's resident memory", base,
        d.resident_bytes);
  Gauge(f, "threadscope_daemon_start_time_seconds", "When the daemon started (Unix time)", base,
        d.start_time_seconds);
  if (!d.auto_attach) return;
  const AutoAttachMetrics& a = *d.auto_attach;
  Gauge(f, "threadscope_autoattach_targets", "Targets auto-attach traces now", base, a.targets);
  Gauge(f, "threadscope_autoattach_max_targets",
        "Auto-attached targets at once; past it, matches are refused", base, a.max_targets);
  Counter(f, "threadscope_autoattach_execs_total",
          "Exec events auto-attach read from the kernel", base, a.execs_seen);
  Counter(f, "threadscope_autoattach_execs_lost_total",
          "Execs auto-attach never saw (the kernel's ring was full)", base, a.execs_lost);
  for (const auto& r : a.rules) {
    Labels rule = With(base, {{"rule", r.name}});
    Counter(f, "threadscope_autoattach_matches_total",
            "Processes whose new image matched the rule", rule, r.matches);
    Counter(f, "threadscope_autoattach_attaches_total", "Matched processes attached", rule,
            r.attaches);
    for (const auto& [reason, n] : r.refusals) {
      Counter(f, "threadscope_autoattach_refusals_total",
              "Matched, not attached because of a limit (limit: auto-attach's; daemon_limit: "
              "the daemon's traces; busy: too many waiting for their interpreter)",
              With(base, {{"rule", r.name}, {"reason", reason}}), n);
    }
    for (const auto& [reason, n] : r.failures) {
      Counter(f, "threadscope_autoattach_failures_total",
              "Matched, not attached: not_cpython, cpython_timeout (no interpreter mapped in "
              "time), exited, execed, unsupported, error",
              With(base, {{"rule", r.name}, {"reason", reason}}), n);
    }
  }
}

}  // namespace

const std::vector<double>& HistogramBounds() {
  static const std::vector<double> bounds = [] {
    std::vector<double> b;
    for (int i = kFirstBound; i <= kLastBound; ++i) b.push_back(std::ldexp(1.0, i) / 1e9);
    return b;
  }();
  return bounds;
}

prometheus::ClientMetric::Histogram ToPrometheus(const v1::Histogram& h) {
  prometheus::ClientMetric::Histogram out;
  out.sample_count = h.count();
  out.sample_sum = static_cast<double>(h.sum_ns()) / 1e9;
  // Bucket i holds [2^i, 2^(i+1)) ns, so everything in buckets < b is below 2^b ns.
  uint64_t cumulative = 0;
  int next = 0;
  for (int b = kFirstBound; b <= kLastBound; ++b) {
    for (; next < b && next < h.buckets_size(); ++next) cumulative += h.buckets(next);
    out.bucket.push_back({cumulative, std::ldexp(1.0, b) / 1e9});
  }
  out.bucket.push_back({h.count(), std::numeric_limits<double>::infinity()});
  return out;
}

std::vector<prometheus::MetricFamily> TargetFamilies(const v1::Snapshot& snapshot,
                                                     const MetricsOptions& options,
                                                     std::set<std::string>* own_series) {
  Families f;
  TargetMetrics(snapshot, options, f, own_series);
  return f.Take();
}

std::vector<prometheus::MetricFamily> BuildMetrics(const std::vector<v1::Snapshot>& snapshots,
                                                   const MetricsOptions& options,
                                                   LockSeries* lock_series,
                                                   const DaemonState* daemon,
                                                   const std::vector<MetricFamily>* retained) {
  Families f;
  if (daemon) DaemonMetrics(*daemon, options, f);
  for (const auto& s : snapshots) {
    TargetMetrics(s, options, f, &(*lock_series)[s.target().target_id()]);
  }
  if (retained) {
    for (const auto& family : *retained) f.Add(family);
  }
  // Forget the series of targets that are gone.
  for (auto it = lock_series->begin(); it != lock_series->end();) {
    bool present = std::any_of(snapshots.begin(), snapshots.end(), [&](const v1::Snapshot& s) {
      return s.target().target_id() == it->first;
    });
    it = present ? std::next(it) : lock_series->erase(it);
  }
  return f.Take();
}

}  // namespace threadscope::metrics
