#include "daemon/engine/snapshot_builder.h"

#include <algorithm>
#include <cstdio>

namespace threadscope::engine {

v1::ThreadState ToProto(model::ThreadState state) {
  switch (state) {
    case model::ThreadState::kNotStarted: return v1::THREAD_STATE_NOT_STARTED;
    case model::ThreadState::kStarting: return v1::THREAD_STATE_STARTING;
    case model::ThreadState::kRunning: return v1::THREAD_STATE_RUNNING;
    case model::ThreadState::kDone: return v1::THREAD_STATE_DONE;
  }
  return v1::THREAD_STATE_UNSPECIFIED;
}

v1::ThreadChange ToProto(model::ThreadChange change) {
  switch (change) {
    case model::ThreadChange::kDiscovered: return v1::THREAD_CHANGE_DISCOVERED;
    case model::ThreadChange::kStarting: return v1::THREAD_CHANGE_STARTING;
    case model::ThreadChange::kRunning: return v1::THREAD_CHANGE_RUNNING;
    case model::ThreadChange::kStartFailed: return v1::THREAD_CHANGE_START_FAILED;
    case model::ThreadChange::kDone: return v1::THREAD_CHANGE_DONE;
    case model::ThreadChange::kJoinWaitBegin: return v1::THREAD_CHANGE_JOIN_WAIT_BEGIN;
    case model::ThreadChange::kJoinWaitEnd: return v1::THREAD_CHANGE_JOIN_WAIT_END;
    case model::ThreadChange::kJoined: return v1::THREAD_CHANGE_JOINED;
    case model::ThreadChange::kDetached: return v1::THREAD_CHANGE_DETACHED;
    case model::ThreadChange::kRenamed: return v1::THREAD_CHANGE_RENAMED;
  }
  return v1::THREAD_CHANGE_UNSPECIFIED;
}

v1::JoinVisibility ToProto(model::JoinVisibility v) {
  switch (v) {
    case model::JoinVisibility::kNone: return v1::JOIN_VISIBILITY_NONE;
    case model::JoinVisibility::kBlockingOnly: return v1::JOIN_VISIBILITY_BLOCKING_ONLY;
    case model::JoinVisibility::kExact: return v1::JOIN_VISIBILITY_EXACT;
  }
  return v1::JOIN_VISIBILITY_UNSPECIFIED;
}

model::JoinVisibility FromProto(v1::JoinVisibility v) {
  switch (v) {
    case v1::JOIN_VISIBILITY_BLOCKING_ONLY: return model::JoinVisibility::kBlockingOnly;
    case v1::JOIN_VISIBILITY_EXACT: return model::JoinVisibility::kExact;
    default: return model::JoinVisibility::kNone;
  }
}

v1::TraceStats ToProto(const model::TraceStats& s) {
  v1::TraceStats out;
  out.set_records(s.records);
  out.set_lost_ringbuf(s.lost_ringbuf);
  out.set_lost_stash(s.lost_stash);
  out.set_decode_errors(s.decode_errors);
  out.set_unknown_records(s.unknown_records);
  out.set_lost_consumer(s.lost_consumer);
  out.set_drops(s.lost());
  return out;
}

std::string LockId(const model::LockRecord& lock) {
  // The object (id(lock)); a lock known only by the semaphore it was waited on says so.
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s0x%llx:%u", lock.id_is_sem ? "sem:" : "",
                static_cast<unsigned long long>(lock.id_address), lock.generation);
  return buf;
}

std::string ContentionId(uint64_t site_id) { return "cs:" + std::to_string(site_id); }

v1::WaitKind ToProto(model::WaitKind kind) {
  switch (kind) {
    case model::WaitKind::kLock: return v1::WAIT_KIND_LOCK;
    case model::WaitKind::kCondition: return v1::WAIT_KIND_CONDITION;
    case model::WaitKind::kJoin: return v1::WAIT_KIND_JOIN;
    case model::WaitKind::kContention: return v1::WAIT_KIND_CONTENTION;
  }
  return v1::WAIT_KIND_UNSPECIFIED;
}

v1::LockKind ToProto(model::LockKind kind) {
  switch (kind) {
    case model::LockKind::kLock: return v1::LOCK_KIND_LOCK;
    case model::LockKind::kRLock: return v1::LOCK_KIND_RLOCK;
    case model::LockKind::kUnknown: return v1::LOCK_KIND_UNKNOWN;
    case model::LockKind::kJoinSentinel: return v1::LOCK_KIND_JOIN_SENTINEL;
  }
  return v1::LOCK_KIND_UNSPECIFIED;
}

namespace {

void FillHistogram(const model::Log2Histogram& h, v1::Histogram* out) {
  int last = model::Log2Histogram::kBuckets - 1;
  while (last >= 0 && h.buckets[last] == 0) --last;
  for (int i = 0; i <= last; ++i) out->add_buckets(h.buckets[i]);
  out->set_count(h.count);
  out->set_sum_ns(h.sum);
  out->set_max_ns(h.max);
}

void FillStack(const model::LocationTable& where, const model::PyStack& stack, v1::PyStack* out) {
  for (uint32_t id : stack.frames) {
    const model::CodeLocation& l = where.Get(id);
    v1::CodeLocation* f = out->add_frames();
    f->set_file(l.file);
    if (l.line >= 0) f->set_line(l.line);
    f->set_function(l.function);
  }
  out->set_truncated(stack.truncated);
  out->set_primary(static_cast<uint32_t>(where.PrimaryFrame(stack)));
}

std::string IdOf(const model::LockModel& locks, uint64_t id) {
  const model::LockRecord* l = locks.FindLock(id);
  return l ? LockId(*l) : "lock#" + std::to_string(id);
}

}  // namespace

v1::Lock ToProto(const model::LockModel& locks, const model::LocationTable& where,
                 const model::LockRecord& l) {
  const bool exact = locks.config().exact_ownership;
  v1::Lock out;
  out.set_id(LockId(l));
  out.set_address(l.obj);
  out.set_semaphore(l.sem);
  out.set_generation(l.generation);
  out.set_kind(ToProto(l.kind));
  if (l.owner) {
    out.set_owner_native_tid(*l.owner);
    out.set_owner_since_ns(l.owner_since_ns);
    out.set_owner_exact(l.owner_exact);
    out.set_depth(l.depth);
  }
  for (const auto& w : l.waiters) {
    auto* lw = out.add_waiters();
    lw->set_native_tid(w.tid);
    lw->set_since_ns(w.since_ns);
    lw->set_kind(ToProto(w.kind));
    lw->set_woken(w.woken);
    if (!w.stack.empty()) FillStack(where, w.stack, lw->mutable_stack());
  }
  if (exact) {
    out.set_acquires(l.acquires);
    for (const auto& [tid, n] : l.acquires_by_thread) (*out.mutable_acquires_by_thread())[tid] = n;
    out.set_failed_trylocks(l.failed_trylocks);
    out.set_releases(l.releases);
    FillHistogram(l.hold, out.mutable_hold());
  }
  out.set_contended(l.contended);
  out.set_timeouts(l.timeouts);
  out.set_wakeups(l.wakeups);
  FillHistogram(l.wait, out.mutable_wait());
  if (l.creator) out.set_creator_native_tid(*l.creator);
  if (l.created_ns) out.set_created_ns(*l.created_ns);
  if (l.freed_ns) out.set_freed_ns(*l.freed_ns);
  out.set_condition_waiter(l.condition_waiter);
  if (l.last_waker) out.set_last_waker(*l.last_waker);
  if (!l.created_at.empty()) FillStack(where, l.created_at, out.mutable_created_at());
  if (l.owner && !l.owner_stack.empty()) FillStack(where, l.owner_stack, out.mutable_owner_stack());
  if (!l.first_contended_at.empty()) {
    FillStack(where, l.first_contended_at, out.mutable_first_contended_at());
  }
  out.set_pymutex(l.pymutex);
  out.set_parks(l.parks);
  out.set_reparks(l.reparks);
  out.set_handoffs(l.handoffs);
  out.set_barges(l.barges);
  out.set_interrupts(l.interrupts);
  out.set_signal(l.signal);
  return out;
}

v1::LockKind ToProto(model::ContentionKind kind) {
  return kind == model::ContentionKind::kCriticalSection ? v1::LOCK_KIND_CRITICAL_SECTION
                                                         : v1::LOCK_KIND_MUTEX;
}

v1::Contention ToProto(const model::LocationTable& where, const model::ContentionSite& c) {
  v1::Contention out;
  out.set_id(ContentionId(c.id));
  out.set_kind(ToProto(c.kind));
  out.set_type(c.type);
  if (!c.stack.empty()) FillStack(where, c.stack, out.mutable_stack());
  out.set_waits(c.waits);
  out.set_parks(c.parks);
  out.set_wakeups(c.wakeups);
  out.set_spins(c.spins);
  FillHistogram(c.wait, out.mutable_wait());
  out.set_threads(c.thread_count);
  for (const auto& w : c.waiters) {
    auto* lw = out.add_waiters();
    lw->set_native_tid(w.tid);
    lw->set_since_ns(w.since_ns);
    lw->set_kind(ToProto(w.kind));
    if (!w.stack.empty()) FillStack(where, w.stack, lw->mutable_stack());
  }
  out.set_other(c.other);
  out.set_last_object(c.last_object);
  return out;
}

v1::Deadlock ToProto(const model::LockModel& locks, const model::LocationTable& where,
                     const model::Deadlock& d) {
  v1::Deadlock out;
  for (const auto& st : d.wait_stacks) FillStack(where, st, out.add_wait_stacks());
  for (const auto& st : d.owner_stacks) FillStack(where, st, out.add_owner_stacks());
  out.set_id(d.id);
  for (pid_t t : d.threads) out.add_native_tids(t);
  for (uint64_t l : d.locks) out.add_lock_ids(IdOf(locks, l));
  out.set_since_ns(d.since_ns);
  out.set_detected_ns(d.detected_ns);
  if (d.resolved_ns) out.set_resolved_ns(*d.resolved_ns);
  return out;
}

v1::OrderInversion ToProto(const model::LockModel& locks, const model::OrderInversion& inv) {
  v1::OrderInversion out;
  out.set_lock_a(IdOf(locks, inv.lock_a));
  out.set_lock_b(IdOf(locks, inv.lock_b));
  out.set_thread_ab(inv.thread_ab);
  out.set_ab_ns(inv.ab_ns);
  out.set_thread_ba(inv.thread_ba);
  out.set_ba_ns(inv.ba_ns);
  return out;
}

v1::LockEvent ToProto(const model::LockModel& locks, const model::LocationTable& where,
                      const model::LockChangeEvent& e) {
  v1::LockEvent out;
  out.set_ts_ns(e.ts_ns);
  switch (e.change) {
    case model::LockChange::kWaitBegin: out.set_change(v1::LOCK_CHANGE_WAIT_BEGIN); break;
    case model::LockChange::kWaitEnd: out.set_change(v1::LOCK_CHANGE_WAIT_END); break;
    case model::LockChange::kWoken: out.set_change(v1::LOCK_CHANGE_WOKEN); break;
    case model::LockChange::kDeadlock: out.set_change(v1::LOCK_CHANGE_DEADLOCK); break;
    case model::LockChange::kDeadlockResolved:
      out.set_change(v1::LOCK_CHANGE_DEADLOCK_RESOLVED);
      break;
    case model::LockChange::kOrderInversion: out.set_change(v1::LOCK_CHANGE_ORDER_INVERSION); break;
    case model::LockChange::kReleased: out.set_change(v1::LOCK_CHANGE_RELEASED); break;
  }
  if (e.wait_kind == model::WaitKind::kContention) {
    out.set_lock_id(ContentionId(e.site_id));
    if (const model::ContentionSite* c = locks.FindSite(e.site_id)) {
      out.set_kind(ToProto(c->kind));
      out.set_object_type(c->type);
    }
    out.set_object(e.object);
  } else {
    out.set_lock_id(IdOf(locks, e.lock_id));
    if (const model::LockRecord* l = locks.FindLock(e.lock_id)) out.set_kind(ToProto(l->kind));
  }
  out.set_native_tid(e.tid);
  out.set_wait_kind(ToProto(e.wait_kind));
  out.set_wait_ns(e.wait_ns);
  out.set_acquired(e.acquired);
  out.set_hold_ns(e.hold_ns);
  if (e.other) out.set_other_native_tid(*e.other);
  if (const model::Deadlock* d = e.deadlock_id ? locks.FindDeadlock(e.deadlock_id) : nullptr) {
    *out.mutable_deadlock() = ToProto(locks, where, *d);
  }
  if (e.change == model::LockChange::kOrderInversion && e.inversion < locks.inversions().size()) {
    *out.mutable_inversion() = ToProto(locks, locks.inversions()[e.inversion]);
  }
  if (!e.stack.empty()) FillStack(where, e.stack, out.mutable_stack());
  return out;
}

v1::Thread ToProto(const model::ThreadModel& threads, const model::ThreadRecord& t) {
  v1::Thread out;
  out.set_id(t.id);
  out.set_native_tid(t.native_tid);
  if (t.ident) out.set_ident(*t.ident);
  if (t.parent_native_tid) out.set_parent_native_tid(*t.parent_native_tid);
  out.set_name(t.name);
  out.set_state(ToProto(t.state));
  switch (t.origin) {
    case model::ThreadOrigin::kStarted: out.set_origin(v1::THREAD_ORIGIN_STARTED); break;
    case model::ThreadOrigin::kPreexisting: out.set_origin(v1::THREAD_ORIGIN_PREEXISTING); break;
    case model::ThreadOrigin::kNative: out.set_origin(v1::THREAD_ORIGIN_NATIVE); break;
  }
  out.set_start_failed(t.start_failed);
  if (auto joined = threads.JoinedForReport(t)) out.set_joined(*joined);
  if (t.joined_ns) out.set_joined_ns(*t.joined_ns);
  if (t.joined_by) out.set_joined_by(*t.joined_by);
  out.set_detached(t.detached);
  out.set_observed_from_start(t.observed_from_start);
  if (t.started_ns) out.set_started_ns(*t.started_ns);
  if (t.running_ns) out.set_running_ns(*t.running_ns);
  if (t.done_ns) out.set_done_ns(*t.done_ns);
  if (t.exited_ns) out.set_exited_ns(*t.exited_ns);
  if (auto returned = threads.ReturnedForReport(t)) out.set_returned(*returned);
  if (t.exit_code) out.set_exit_code(*t.exit_code);
  if (t.bootstrap_ns) out.set_bootstrap_ns(*t.bootstrap_ns);
  for (const auto& w : t.join_waiters) {
    auto* jw = out.add_join_waiters();
    jw->set_native_tid(w.tid);
    jw->set_since_ns(w.since_ns);
  }
  return out;
}

static v1::GilRuntime ToProto(model::GilRuntime r) {
  switch (r) {
    case model::GilRuntime::kOff: return v1::GIL_RUNTIME_OFF;
    case model::GilRuntime::kTransient: return v1::GIL_RUNTIME_TRANSIENT;
    case model::GilRuntime::kPermanent: return v1::GIL_RUNTIME_PERMANENT;
    case model::GilRuntime::kUnannounced: return v1::GIL_RUNTIME_UNANNOUNCED;
  }
  return v1::GIL_RUNTIME_UNSPECIFIED;
}

v1::GilEvent ToProto(const model::LocationTable& where, const model::GilChangeEvent& e) {
  v1::GilEvent out;
  out.set_ts_ns(e.ts_ns);
  out.set_native_tid(e.tid);
  switch (e.kind) {
    case model::GilChangeEvent::Kind::kWaitBegin: out.set_change(v1::GIL_CHANGE_WAIT_BEGIN); break;
    case model::GilChangeEvent::Kind::kAcquired: out.set_change(v1::GIL_CHANGE_ACQUIRED); break;
    case model::GilChangeEvent::Kind::kDropped: out.set_change(v1::GIL_CHANGE_DROPPED); break;
    case model::GilChangeEvent::Kind::kEnabled: out.set_change(v1::GIL_CHANGE_ENABLED); break;
    case model::GilChangeEvent::Kind::kDisabled: out.set_change(v1::GIL_CHANGE_DISABLED); break;
  }
  if (e.kind == model::GilChangeEvent::Kind::kEnabled ||
      e.kind == model::GilChangeEvent::Kind::kDisabled) {
    out.set_runtime(ToProto(e.runtime));
  }
  out.set_wait_ns(e.wait_ns);
  out.set_hold_ns(e.hold_ns);
  out.set_forced(e.forced);
  if (e.previous_holder) out.set_previous_holder(*e.previous_holder);
  if (!e.stack.empty()) FillStack(where, e.stack, out.mutable_stack());
  return out;
}

v1::Gil BuildGil(const model::TraceModel& model, bool traced, uint64_t now_ns,
                 v1::GilMode mode) {
  const model::GilModel& gil = model.gil();
  v1::Gil out;
  out.set_traced(traced);
  out.set_mode(gil.waits_only() ? v1::GIL_MODE_WAITS : mode);
  for (const model::GilModeChange& c : gil.mode_changes()) {
    auto* m = out.add_mode_changes();
    m->set_ts_ns(c.ts_ns);
    m->set_mode(c.waits_only ? v1::GIL_MODE_WAITS : v1::GIL_MODE_FULL);
    m->set_cut_holds(c.cut_holds);
    m->set_cut_waits(c.cut_waits);
  }
  out.set_cut_holds(gil.cut_holds());
  out.set_cut_waits(gil.cut_waits());
  if (auto h = gil.holder()) out.set_holder_native_tid(*h);
  if (auto since = gil.holder_since()) out.set_holder_since_ns(*since);
  for (const auto& [tid, since] : gil.Waiters()) {
    auto* w = out.add_waiters();
    w->set_native_tid(tid);
    w->set_since_ns(since);
  }
  out.set_switches(gil.switches());
  out.set_acquisitions(gil.acquisitions());
  out.set_forced_switches(gil.forced_switches());
  FillHistogram(gil.wait_histogram(), out.mutable_wait());
  FillHistogram(gil.hold_histogram(), out.mutable_hold());
  out.set_overlaps(gil.overlaps());
  out.set_unmatched_drops(gil.unmatched_drops());
  if (model.config().gil.free_threaded) {
    out.set_runtime(ToProto(gil.runtime()));
    if (auto since = gil.enabled_since()) out.set_enabled_since_ns(*since);
    out.set_transient_enables(gil.transient_enables());
  }
  uint64_t start = model.attached_ns().value_or(0);
  if (now_ns > start && start) {
    out.set_switches_per_second(static_cast<double>(gil.switches()) * 1e9 /
                                static_cast<double>(now_ns - start));
  }
  std::vector<v1::GilThread> threads;
  for (const auto& [tid, t] : gil.threads()) {
    v1::GilThread g;
    g.set_native_tid(tid);
    g.set_acquisitions(t.acquisitions);
    // Time still running counts up to now, so a thread stuck waiting shows it.
    uint64_t wait = t.wait_ns, hold = t.hold_ns;
    if (t.waiting_since) wait += model::Elapsed(now_ns, *t.waiting_since);
    if (t.holding_since) hold += model::Elapsed(now_ns, *t.holding_since);
    g.set_wait_ns(wait);
    g.set_hold_ns(hold);
    g.set_forced_drops(t.forced_drops);
    g.set_voluntary_drops(t.voluntary_drops);
    if (t.waiting_since) g.set_waiting_since_ns(*t.waiting_since);
    g.set_holding(t.holding_since.has_value());
    uint64_t begin = std::max(start, t.first_ns), end = now_ns;
    if (const model::ThreadRecord* th = model.threads().FindByTid(tid)) {
      if (th->started_ns) begin = std::max(start, std::min(begin, *th->started_ns));
      if (th->exited_ns) end = std::min(end, *th->exited_ns);
      else if (th->done_ns) end = std::min(end, *th->done_ns);
    }
    uint64_t span = end > begin ? end - begin : 0;
    g.set_observed_ns(span);
    if (span) {
      g.set_hold_share(std::min(1.0, static_cast<double>(hold) / static_cast<double>(span)));
      g.set_wait_share(std::min(1.0, static_cast<double>(wait) / static_cast<double>(span)));
    }
    threads.push_back(std::move(g));
  }
  std::sort(threads.begin(), threads.end(), [](const auto& a, const auto& b) {
    if (a.wait_ns() != b.wait_ns()) return a.wait_ns() > b.wait_ns();
    return a.native_tid() < b.native_tid();
  });
  for (auto& g : threads) *out.add_per_thread() = std::move(g);
  return out;
}

v1::Snapshot BuildSnapshot(const model::TraceModel& model, const v1::Target& target,
                           uint64_t now_ns, bool final) {
  v1::Snapshot snap;
  *snap.mutable_target() = target;
  *snap.mutable_target()->mutable_stats() = ToProto(model.stats());
  const model::LockModel& locks = model.locks();
  for (const auto& t : model.threads().threads()) {
    v1::Thread* th = snap.add_threads();
    *th = ToProto(model.threads(), t);
    // Lock state belongs to the live thread with this tid (a reused tid's old thread is done).
    const model::ThreadLockState* ls = t.native_tid ? locks.FindThread(t.native_tid) : nullptr;
    if (!ls || model.threads().FindByTid(t.native_tid) != &t) continue;
    v1::ThreadLocks* out = th->mutable_locks();
    for (uint64_t id : ls->held) out->add_held(IdOf(locks, id));
    if (ls->waiting_site) {
      out->mutable_waiting()->set_lock_id(ContentionId(*ls->waiting_site));
      out->mutable_waiting()->set_since_ns(ls->waiting_since_ns);
      out->mutable_waiting()->set_kind(v1::WAIT_KIND_CONTENTION);
      if (!ls->waiting_stack.empty()) {
        FillStack(model.locations(), ls->waiting_stack, out->mutable_waiting()->mutable_stack());
      }
    }
    if (ls->waiting_lock) {
      out->mutable_waiting()->set_woken(ls->waiting_woken);
      out->mutable_waiting()->set_lock_id(IdOf(locks, *ls->waiting_lock));
      out->mutable_waiting()->set_since_ns(ls->waiting_since_ns);
      out->mutable_waiting()->set_kind(ToProto(ls->waiting_kind));
      if (!ls->waiting_stack.empty()) {
        FillStack(model.locations(), ls->waiting_stack, out->mutable_waiting()->mutable_stack());
      }
    }
    if (ls->last_woken_by) out->set_last_woken_by(*ls->last_woken_by);
    out->set_lock_waits(ls->lock_waits);
    out->set_lock_wait_ns(ls->lock_wait_ns);
    out->set_condition_waits(ls->condition_waits);
    out->set_condition_wait_ns(ls->condition_wait_ns);
    out->set_join_wait_ns(ls->join_wait_ns);
    out->set_contention_waits(ls->contention_waits);
    out->set_contention_wait_ns(ls->contention_wait_ns);
    if (locks.config().exact_ownership) out->set_acquires(ls->acquires);
  }
  // Locks worth listing: user locks that were contended or are held/waited on now, and every
  // lock when every acquire is traced. Most waited-for first.
  std::vector<const model::LockRecord*> listed;
  uint64_t not_listed = locks.freed_locks_dropped();
  for (const auto& [id, l] : locks.locks()) {
    bool user_lock = !l.condition_waiter && l.kind != model::LockKind::kJoinSentinel;
    bool active = l.owner || !l.waiters.empty() || l.contended || l.timeouts ||
                  (locks.config().exact_ownership && (l.acquires || l.failed_trylocks));
    if (user_lock && active) {
      listed.push_back(&l);
    } else {
      ++not_listed;
    }
  }
  std::sort(listed.begin(), listed.end(), [](const auto* a, const auto* b) {
    if (a->wait.sum != b->wait.sum) return a->wait.sum > b->wait.sum;
    if (a->acquires != b->acquires) return a->acquires > b->acquires;
    return a->id < b->id;
  });
  for (const auto* l : listed) *snap.add_locks() = ToProto(locks, model.locations(), *l);
  snap.set_locks_not_listed(not_listed);
  for (const auto& d : locks.deadlocks()) {
    *snap.add_deadlocks() = ToProto(locks, model.locations(), d);
  }
  for (const auto& inv : locks.inversions()) *snap.add_order_inversions() = ToProto(locks, inv);
  std::vector<const model::ContentionSite*> sites;
  for (const auto& [id, c] : locks.contention()) sites.push_back(&c);
  std::sort(sites.begin(), sites.end(), [](const auto* a, const auto* b) {
    if (a->wait.sum != b->wait.sum) return a->wait.sum > b->wait.sum;
    if (a->waits != b->waits) return a->waits > b->waits;
    return a->id < b->id;
  });
  for (const auto* c : sites) *snap.add_contention() = ToProto(model.locations(), *c);
  snap.set_now_ns(now_ns);
  snap.set_final(final);
  const model::ThreadCounts& gone = model.threads().evicted();
  if (gone.seen) {
    v1::ThreadCounts* c = snap.mutable_threads_not_listed();
    c->set_seen(gone.seen);
    c->set_started(gone.started);
    c->set_start_failed(gone.start_failed);
    c->set_preexisting(gone.preexisting);
    c->set_native(gone.native);
    c->set_joined(gone.joined);
    c->set_not_joined(gone.not_joined);
    c->set_joined_unknown(gone.joined_unknown);
    c->set_returned(gone.returned);
    c->set_did_not_return(gone.did_not_return);
  }
  snap.set_deadlocks_not_listed(locks.deadlocks_dropped());
  *snap.mutable_gil() = BuildGil(model, target.gil().enabled(), now_ns, target.gil().mode());
  if (model.attached_ns()) snap.set_trace_start_ns(*model.attached_ns());
  if (model.target_exited_ns()) {
    snap.set_ended_by(v1::TRACE_END_EXITED);
    snap.set_trace_end_ns(*model.target_exited_ns());
  } else if (model.detached_ns()) {
    snap.set_ended_by(v1::TRACE_END_DETACHED);
    snap.set_trace_end_ns(*model.detached_ns());
  }
  return snap;
}

model::TraceModelConfig ModelConfigFromTarget(const v1::Target& target) {
  model::TraceModelConfig config;
  config.locks.exact_ownership = target.lock_mode() == "all";
  config.threads.joins = FromProto(target.join_visibility());
  config.threads.body_done_visible = target.body_done_visible();
  config.gil.free_threaded = target.free_threaded();
  return config;
}

}  // namespace threadscope::engine
