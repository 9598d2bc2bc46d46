#include "daemon/model/gil_model.h"

#include <algorithm>

namespace threadscope::model {

GilThreadStats& GilModel::Thread(pid_t tid, uint64_t ts) {
  auto [it, inserted] = threads_.try_emplace(tid);
  if (inserted) it->second.first_ns = ts;
  return it->second;
}

const GilThreadStats* GilModel::FindThread(pid_t tid) const {
  auto it = threads_.find(tid);
  return it == threads_.end() ? nullptr : &it->second;
}

std::optional<uint64_t> GilModel::holder_since() const {
  if (!holder_) return std::nullopt;
  const GilThreadStats* t = FindThread(*holder_);
  return t ? t->holding_since : std::nullopt;
}

std::vector<std::pair<pid_t, uint64_t>> GilModel::Waiters() const {
  std::vector<std::pair<pid_t, uint64_t>> out;
  for (const auto& [tid, t] : threads_) {
    if (t.waiting_since) out.emplace_back(tid, *t.waiting_since);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second < b.second : a.first < b.first;
  });
  return out;
}

void GilModel::EndHold(pid_t tid, GilThreadStats& t, uint64_t ts, bool forced, bool count_drop,
                       std::vector<GilChangeEvent>* out) {
  uint64_t held = 0;
  if (t.holding_since) {
    held = Elapsed(ts, *t.holding_since);
    t.hold_ns += held;
    hold_.Add(held);
  }
  t.holding_since.reset();
  if (holder_ == tid) holder_.reset();
  if (count_drop) {
    if (forced) {
      ++t.forced_drops;
      ++forced_drops_;
    } else {
      ++t.voluntary_drops;
    }
  }
  t.forced_pending = false;
  if (out) {
    GilChangeEvent c;
    c.kind = GilChangeEvent::Kind::kDropped;
    c.ts_ns = ts;
    c.tid = tid;
    c.hold_ns = held;
    c.forced = forced;
    out->push_back(c);
  }
}

void GilModel::SetRuntime(GilRuntime r, uint64_t ts, pid_t tid,
                          std::vector<GilChangeEvent>* out) {
  if (r == runtime_) return;
  const bool was_on = runtime_ != GilRuntime::kOff;
  runtime_ = r;
  if (r == GilRuntime::kOff) {
    enabled_since_.reset();
    transient_depth_ = 0;
    // _PyEval_DisableGIL wakes the waiters in take_gil, which return without the GIL.
    for (auto& [other, t] : threads_) t.waiting_since.reset();
  } else if (!was_on || r == GilRuntime::kPermanent) {
    enabled_since_ = ts;
  }
  if (out) {
    GilChangeEvent c;
    c.kind = r == GilRuntime::kOff ? GilChangeEvent::Kind::kDisabled
                                   : GilChangeEvent::Kind::kEnabled;
    c.ts_ns = ts;
    c.tid = tid;
    c.runtime = r;
    out->push_back(c);
  }
}

void GilModel::SwitchMode(bool waits_only, uint64_t ts) {
  GilModeChange c;
  c.ts_ns = ts;
  c.waits_only = waits_only;
  for (auto& [tid, t] : threads_) {
    // A take begun before the mark may have ended unseen (its return probe went, or it never
    // waited): keeping it would make a waiter of a thread that is not, and a later return
    // would add the gap to its wait. Neither end is known: cut, not counted.
    if (t.waiting_since && *t.waiting_since <= ts) {
      t.waiting_since.reset();
      ++c.cut_waits;
    }
    if (waits_only && t.holding_since) {
      // Its drop will not be seen: the hold's length is unknown, not the time to the mark.
      t.holding_since.reset();
      ++c.cut_holds;
    }
    t.forced_pending = false;
    t.take_unseen = !waits_only;
  }
  if (waits_only) {
    holder_.reset();
    last_holder_.reset();
  }
  waits_only_ = waits_only;
  cut_holds_ += c.cut_holds;
  cut_waits_ += c.cut_waits;
  // Bounded: the budget backs off between steps up, so a trace has few; keep the first ones.
  constexpr size_t kMaxModeChanges = 256;
  if (mode_changes_.size() < kMaxModeChanges) mode_changes_.push_back(c);
}

void GilModel::Pause(uint64_t ts) {
  ++pauses_;
  for (auto& [tid, t] : threads_) {
    // Neither end of a take or hold in progress will be seen: cut, not counted (as at a switch
    // to --gil waits).
    if (t.waiting_since && *t.waiting_since <= ts) {
      t.waiting_since.reset();
      ++cut_waits_;
    }
    if (t.holding_since) {
      t.holding_since.reset();
      ++cut_holds_;
    }
    t.forced_pending = false;
  }
  holder_.reset();
  last_holder_.reset();
}

void GilModel::Resume() {
  // A thread that holds the GIL now took it unseen: its first drop is a hold of unknown start.
  for (auto& [tid, t] : threads_) t.take_unseen = !waits_only_;
}

void GilModel::Apply(const DecodedEvent& e, const PyStack* stack,
                     std::vector<GilChangeEvent>* out) {
  const uint64_t ts = e.header.ts_ns;
  const pid_t tid = static_cast<pid_t>(e.header.tid);
  if (const auto* mark = std::get_if<ts_trace_mark>(&e.payload)) {
    if (mark->kind == TS_MARK_GIL_WAITS_ONLY || mark->kind == TS_MARK_GIL_FULL) {
      SwitchMode(mark->kind == TS_MARK_GIL_WAITS_ONLY, ts);
    }
    if (mark->kind == TS_MARK_TRACE_PAUSED) Pause(ts);
    if (mark->kind == TS_MARK_TRACE_RESUMED) Resume();
    return;
  }
  if (std::holds_alternative<ts_thread_exit>(e.payload)) {
    // A thread that ends inside take_gil (a daemon thread at finalization) never returns from it;
    // one that still holds the GIL is gone with it.
    auto it = threads_.find(tid);
    if (it == threads_.end()) return;
    GilThreadStats& t = it->second;
    if (t.waiting_since) {
      t.wait_ns += Elapsed(ts, *t.waiting_since);
      t.waiting_since.reset();
    }
    if (t.holding_since || holder_ == tid) EndHold(tid, t, ts, false, false, out);
    // Bounded: past kMaxThreads, the oldest exited threads' own rows go (the totals stay).
    exited_.push_back(tid);
    while (threads_.size() > kMaxThreads && !exited_.empty()) {
      auto old = threads_.find(exited_.front());
      exited_.pop_front();
      if (old != threads_.end() && !old->second.waiting_since && !old->second.holding_since) {
        threads_.erase(old);
      }
    }
    if (exited_.size() > 4 * kMaxThreads) exited_.erase(exited_.begin(), exited_.begin() + kMaxThreads);
    return;
  }
  if (const auto* clone = std::get_if<ts_thread_clone>(&e.payload)) {
    // A new thread reusing the tid of one that exited starts from nothing.
    auto it = threads_.find(static_cast<pid_t>(clone->child_tid));
    if (it != threads_.end() && !it->second.waiting_since && !it->second.holding_since) {
      threads_.erase(it);
    }
    return;
  }
  const auto* g = std::get_if<ts_gil_event>(&e.payload);
  if (!g) return;
  ++records_;
  GilThreadStats& t = Thread(tid, ts);
  switch (g->op) {
    case TS_GIL_ENABLE_TRANSIENT:
      if (!config_.free_threaded) break;
      // Called for every extension import, at its entry: it returns at once (nothing enabled)
      // when PYTHON_GIL / -X gil forced the GIL either way, or it is on for good. So the
      // transient enable is the first take that follows (the importer re-attaches), and nested
      // ones count for the disables that end them.
      if (runtime_ == GilRuntime::kOff) {
        transient_pending_ = true;
      } else if (runtime_ == GilRuntime::kTransient) {
        ++transient_depth_;
      }
      break;
    case TS_GIL_ENABLE_PERMANENT:
      // _PyEval_EnableGILPermanent returned 1: it turned the GIL on for good (a module not
      // marked free-threading safe).
      if (runtime_ == GilRuntime::kOff || runtime_ == GilRuntime::kTransient) {
        SetRuntime(GilRuntime::kPermanent, ts, tid, out);
      }
      break;
    case TS_GIL_DISABLE:
      transient_pending_ = false;
      if (runtime_ == GilRuntime::kTransient && --transient_depth_ == 0) {
        SetRuntime(GilRuntime::kOff, ts, tid, out);
      }
      break;
    case TS_GIL_TAKE_BEGIN:
      // Free-threaded builds report takes only past take_gil's test of gil->enabled: one with
      // no enable seen means the GIL was on from start-up or since before the attach.
      if (config_.free_threaded && runtime_ == GilRuntime::kOff) {
        if (transient_pending_) {
          transient_pending_ = false;
          transient_depth_ = 1;
          ++transient_enables_;
          SetRuntime(GilRuntime::kTransient, ts, tid, out);
        } else {
          SetRuntime(GilRuntime::kUnannounced, ts, tid, out);
        }
      }
      // A compiler clone calling the original (or a nested probe) reports the same take twice:
      // the first entry is when the wait began.
      if (t.waiting_since || t.holding_since) break;
      t.waiting_since = ts;
      if (out) {
        GilChangeEvent c;
        c.kind = GilChangeEvent::Kind::kWaitBegin;
        c.ts_ns = ts;
        c.tid = tid;
        out->push_back(c);
      }
      break;
    case TS_GIL_TAKE_END: {
      if (t.holding_since) break;  // the same take seen through a second return
      uint64_t waited = 0;
      if (t.waiting_since) {
        waited = Elapsed(ts, *t.waiting_since);
        t.waiting_since.reset();
        t.wait_ns += waited;
        wait_.Add(waited);
      }
      if (holder_ && *holder_ != tid) {
        // Another thread's drop went unseen: end its hold here, so no two threads hold at once.
        ++overlaps_;
        EndHold(*holder_, threads_[*holder_], ts, false, false, out);
      }
      std::optional<pid_t> previous = last_holder_;
      if (last_holder_ && *last_holder_ != tid) ++switches_;
      ++acquisitions_;
      ++t.acquisitions;
      t.holding_since = ts;
      t.forced_pending = false;
      t.take_unseen = false;
      holder_ = tid;
      last_holder_ = tid;
      if (out) {
        GilChangeEvent c;
        c.kind = GilChangeEvent::Kind::kAcquired;
        c.ts_ns = ts;
        c.tid = tid;
        c.wait_ns = waited;
        c.previous_holder = previous;
        if (stack) c.stack = *stack;
        out->push_back(std::move(c));
      }
      break;
    }
    case TS_GIL_WAITED: {
      // --gil waits: a take that waited got the GIL. Its hold is not traced (no drop probe), so
      // nobody becomes the holder and acquisitions count waited takes only.
      if (!t.waiting_since) break;  // its wait began before the attach
      uint64_t waited = Elapsed(ts, *t.waiting_since);
      t.waiting_since.reset();
      t.wait_ns += waited;
      wait_.Add(waited);
      ++waited_takes_;
      ++acquisitions_;
      ++t.acquisitions;
      if (out) {
        GilChangeEvent c;
        c.kind = GilChangeEvent::Kind::kAcquired;
        c.ts_ns = ts;
        c.tid = tid;
        c.wait_ns = waited;
        if (stack) c.stack = *stack;
        out->push_back(std::move(c));
      }
      break;
    }
    case TS_GIL_FORCED:
      t.forced_pending = true;
      break;
    case TS_GIL_DROP:
    case TS_GIL_DROP_FORCED: {
      bool forced = g->op == TS_GIL_DROP_FORCED || t.forced_pending;
      if (!t.holding_since) {
        if (holder_ && *holder_ != tid) {
          ++unmatched_drops_;  // a drop by a thread we never saw take it while another holds
        } else if (t.acquisitions == 0 && !t.held_at_attach) {
          t.held_at_attach = true;  // it held the GIL when the probes went live
        } else if (t.take_unseen) {
          t.take_unseen = false;  // it held the GIL when every take was traced again
        } else {
          ++unmatched_drops_;
        }
      }
      last_holder_ = tid;
      EndHold(tid, t, ts, forced, true, out);
      break;
    }
    default:
      break;
  }
}

}  // namespace threadscope::model
