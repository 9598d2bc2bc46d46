#include "client/timeline.h"

#include "proto/stack_text.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "perfetto/trace.pb.h"

namespace threadscope::client::timeline {

namespace {

class Builder {
 public:
  explicit Builder(const v1::Snapshot& final) {
    t_.pid = final.target().pid();
    t_.process_name = final.target().executable();
    t_.start_ns = final.trace_start_ns();
    t_.end_ns = final.trace_end_ns() ? final.trace_end_ns() : final.now_ns();
    AddTrack({"events", "threadscope events", "", 0, false});
    for (const auto& th : final.threads()) {
      if (th.native_tid()) ThreadTracks(th.native_tid(), th.name());
      Lifecycle(th);
    }
    for (const auto& l : final.locks()) {
      std::string where = v1::ShortWhere(l.first_contended_at());
      if (where.empty()) where = v1::ShortWhere(l.created_at());
      lock_names_[l.id()] = where;
    }
  }

  void Apply(const v1::WatchEventsResponse& r) {
    if (r.has_lock_event()) Lock(r.lock_event());
    if (r.has_gil_event()) Gil(r.gil_event());
  }

  Timeline Finish() {
    for (auto& [tid, w] : lock_waits_) {
      AddSlice(ThreadKey(tid), w.name + " (still waiting)", "lock", w.begin, t_.end_ns, w.args, {},
               {});
    }
    for (auto& [lock, h] : holders_) {
      AddSlice(LockKey(lock), fmt::format("held by {}", h.first), "lock", h.second, t_.end_ns,
               {{"owner", std::to_string(h.first)}}, {}, {});
    }
    for (auto& [tid, since] : gil_waits_) {
      AddSlice("gil:" + std::to_string(tid), "GIL wait", "gil", since, t_.end_ns, {}, {}, {});
    }
    if (gil_holder_) {
      AddSlice("gil:" + std::to_string(gil_holder_->first), "GIL held", "gil",
               gil_holder_->second, t_.end_ns, {}, {}, {});
      AddSlice("gil", fmt::format("held by {}", gil_holder_->first), "gil", gil_holder_->second,
               t_.end_ns, {}, {}, {});
    }
    // Each track's slices in time order (outer first when they start together).
    std::stable_sort(t_.slices.begin(), t_.slices.end(), [](const Slice& a, const Slice& b) {
      if (a.track != b.track) return a.track < b.track;
      if (a.begin_ns != b.begin_ns) return a.begin_ns < b.begin_ns;
      return a.end_ns > b.end_ns;
    });
    return std::move(t_);
  }

 private:
  struct OpenWait {
    uint64_t begin = 0;
    std::string name;
    std::vector<std::pair<std::string, std::string>> args;
  };

  static std::string ThreadKey(int32_t tid) { return "thread:" + std::to_string(tid); }
  static std::string LockKey(const std::string& id) { return "lock:" + id; }

  void AddTrack(Track track) {
    if (!keys_.insert(track.key).second) return;
    t_.tracks.push_back(std::move(track));
  }

  void ThreadTracks(int32_t tid, const std::string& name) {
    std::string label = (name.empty() ? "thread" : name) + " " + std::to_string(tid);
    AddTrack({ThreadKey(tid), label, "", tid, false});
    AddTrack({"life:" + std::to_string(tid), "lifecycle", ThreadKey(tid), 0, false});
    AddTrack({"gil:" + std::to_string(tid), "GIL", ThreadKey(tid), 0, false});
  }

  void Lifecycle(const v1::Thread& th) {
    if (!th.native_tid()) return;  // a start that failed before the clone: no thread track
    std::string key = "life:" + std::to_string(th.native_tid());
    uint64_t end = th.has_done_ns() ? th.done_ns() : t_.end_ns;
    if (th.has_started_ns() && th.origin() == v1::THREAD_ORIGIN_STARTED) {
      uint64_t running = th.has_running_ns() ? th.running_ns() : end;
      AddSlice(key, "starting", "lifecycle", th.started_ns(), std::max(th.started_ns(), running),
               {}, {}, {});
    }
    uint64_t begin = th.has_running_ns() ? th.running_ns() : t_.start_ns;
    if (th.origin() == v1::THREAD_ORIGIN_PREEXISTING) begin = t_.start_ns;
    if (th.start_failed()) {
      AddSlice(key, "start failed", "lifecycle", end, end, {}, {}, {});
      return;
    }
    if (end > begin) {
      AddSlice(key, "running", "lifecycle", begin, end,
               {{"origin", th.origin() == v1::THREAD_ORIGIN_PREEXISTING ? "preexisting" : "started"}},
               {}, {});
    }
  }

  void AddSlice(std::string track, std::string name, std::string category, uint64_t begin,
                uint64_t end, std::vector<std::pair<std::string, std::string>> args,
                std::vector<uint64_t> out, std::vector<uint64_t> in) {
    t_.slices.push_back(Slice{std::move(track), std::move(name), std::move(category), begin,
                              std::max(begin, end), std::move(args), std::move(out),
                              std::move(in)});
  }

  void Count(const std::string& key, const std::string& name, uint64_t ts, int64_t delta,
             int64_t* value) {
    AddTrack({key, name, "", 0, true});
    *value = std::max<int64_t>(0, *value + delta);
    t_.counters.push_back({key, ts, *value});
  }

  void Lock(const v1::LockEvent& e) {
    const std::string& id = e.lock_id();
    int32_t tid = e.native_tid();
    if (tid) ThreadTracks(tid, "");
    auto lock_track = [&] {
      auto it = lock_names_.find(id);
      std::string where = it == lock_names_.end() ? "" : it->second;
      AddTrack({LockKey(id), "lock " + id + (where.empty() ? "" : " " + where), "", 0, false});
    };
    switch (e.change()) {
      case v1::LOCK_CHANGE_WAIT_BEGIN: {
        std::string what = e.wait_kind() == v1::WAIT_KIND_CONDITION ? "condition wait"
                           : e.wait_kind() == v1::WAIT_KIND_JOIN    ? "join wait"
                                                                    : "lock wait";
        // 3.13+: a critical section (an object's own mutex) or another interpreter mutex.
        if (e.wait_kind() == v1::WAIT_KIND_CONTENTION) {
          what = e.kind() == v1::LOCK_KIND_CRITICAL_SECTION
                     ? (e.object_type().empty() ? "object" : e.object_type()) +
                           " critical section"
                     : std::string("mutex wait");
        }
        std::string where = v1::ShortWhere(e.stack());
        OpenWait w{e.ts_ns(), what + (where.empty() ? "" : " at " + where), {{"lock", id}}};
        if (e.wait_kind() == v1::WAIT_KIND_CONTENTION && e.object()) {
          w.args.push_back({"object", fmt::format("0x{:x}", e.object())});
        }
        if (e.has_other_native_tid()) w.args.push_back({"owner", std::to_string(e.other_native_tid())});
        lock_waits_[tid] = std::move(w);
        if (e.wait_kind() == v1::WAIT_KIND_LOCK) {
          lock_track();
          Count("lockwaiters", "lock waiters", e.ts_ns(), +1, &lock_waiters_);
        }
        if (e.wait_kind() == v1::WAIT_KIND_CONTENTION) {
          Count("contentionwaiters", "contention waiters", e.ts_ns(), +1, &contention_waiters_);
        }
        break;
      }
      case v1::LOCK_CHANGE_WAIT_END: {
        auto it = lock_waits_.find(tid);
        OpenWait w = it != lock_waits_.end()
                         ? std::move(it->second)
                         : OpenWait{e.ts_ns() - std::min(e.ts_ns(), e.wait_ns()), "lock wait",
                                    {{"lock", id}}};
        if (it != lock_waits_.end()) lock_waits_.erase(it);
        w.args.push_back({"result", e.acquired() ? "acquired" : "gave up"});
        std::vector<uint64_t> in;
        if (e.has_other_native_tid()) {
          w.args.push_back({"woken_by", std::to_string(e.other_native_tid())});
          // An arrow only where the wake and the wait it ended are both known.
          auto f = pending_wakes_.find({id, e.other_native_tid()});
          if (f != pending_wakes_.end()) {
            uint64_t flow = ++t_.flows;
            t_.slices[f->second].flows_out.push_back(flow);
            in.push_back(flow);
            pending_wakes_.erase(f);
          }
        }
        AddSlice(ThreadKey(tid), w.name, "lock", w.begin, e.ts_ns(), w.args, {}, std::move(in));
        if (e.wait_kind() == v1::WAIT_KIND_CONTENTION) {
          Count("contentionwaiters", "contention waiters", e.ts_ns(), -1, &contention_waiters_);
        }
        if (e.wait_kind() == v1::WAIT_KIND_LOCK) {
          Count("lockwaiters", "lock waiters", e.ts_ns(), -1, &lock_waiters_);
          if (e.acquired()) {
            lock_track();
            holders_[id] = {tid, e.ts_ns()};
          }
        }
        break;
      }
      case v1::LOCK_CHANGE_WOKEN: {
        // The waker released the lock: its hold (if we saw it begin) ends, and an arrow goes to
        // the waiter that gets the lock next.
        auto h = holders_.find(id);
        if (h != holders_.end() && h->second.first == tid) {
          AddSlice(LockKey(id), fmt::format("held by {}", tid), "lock", h->second.second,
                   e.ts_ns(), {{"owner", std::to_string(tid)}}, {}, {});
          holders_.erase(h);
        }
        pending_wakes_[{id, tid}] = t_.slices.size();
        AddSlice(ThreadKey(tid), "release wakes a waiter", "lock", e.ts_ns(), e.ts_ns(),
                 {{"lock", id}}, {}, {});
        break;
      }
      case v1::LOCK_CHANGE_DEADLOCK: {
        std::string cycle;
        for (int i = 0; i < e.deadlock().native_tids_size(); ++i) {
          cycle += fmt::format("{}{} waits for {}", i ? ", " : "", e.deadlock().native_tids(i),
                               i < e.deadlock().lock_ids_size() ? e.deadlock().lock_ids(i) : "?");
        }
        AddSlice("events", "DEADLOCK", "deadlock", e.ts_ns(), e.ts_ns(), {{"cycle", cycle}}, {},
                 {});
        break;
      }
      default:
        break;
    }
  }

  void Gil(const v1::GilEvent& e) {
    int32_t tid = e.native_tid();
    ThreadTracks(tid, "");
    AddTrack({"gil", "GIL", "", 0, false});
    std::string key = "gil:" + std::to_string(tid);
    switch (e.change()) {
      case v1::GIL_CHANGE_WAIT_BEGIN:
        if (!gil_waits_.count(tid)) {
          gil_waits_[tid] = e.ts_ns();
          Count("gilwaiters", "GIL waiters", e.ts_ns(), +1, &gil_waiters_);
        }
        break;
      case v1::GIL_CHANGE_ACQUIRED: {
        auto w = gil_waits_.find(tid);
        if (w != gil_waits_.end()) {
          // With --gil-stacks, a long wait names the code that resumed after it.
          std::string where = v1::ShortWhere(e.stack());
          AddSlice(key, where.empty() ? "GIL wait" : "GIL wait at " + where, "gil", w->second,
                   e.ts_ns(), {}, {}, {});
          gil_waits_.erase(w);
          Count("gilwaiters", "GIL waiters", e.ts_ns(), -1, &gil_waiters_);
        }
        gil_holder_ = {tid, e.ts_ns()};
        break;
      }
      case v1::GIL_CHANGE_DROPPED:
        if (gil_holder_ && gil_holder_->first == tid) {
          std::vector<std::pair<std::string, std::string>> args = {
              {"drop", e.forced() ? "forced" : "voluntary"}};
          AddSlice(key, "GIL held", "gil", gil_holder_->second, e.ts_ns(), args, {}, {});
          AddSlice("gil", fmt::format("held by {}", tid), "gil", gil_holder_->second, e.ts_ns(),
                   args, {}, {});
          gil_holder_.reset();
        }
        break;
      case v1::GIL_CHANGE_ENABLED:
      case v1::GIL_CHANGE_DISABLED: {
        // Free-threaded builds: the GIL turned on (or a transient enable ended) at run time.
        const char* how = e.runtime() == v1::GIL_RUNTIME_PERMANENT
                              ? "GIL enabled (a module not marked free-threading safe)"
                          : e.runtime() == v1::GIL_RUNTIME_TRANSIENT
                              ? "GIL enabled for an extension import"
                          : e.runtime() == v1::GIL_RUNTIME_UNANNOUNCED
                              ? "GIL on (PYTHON_GIL=1 / -X gil=1, or before the attach)"
                              : "GIL disabled";
        AddSlice("gil", how, "gil", e.ts_ns(), e.ts_ns(), {{"by_thread", std::to_string(tid)}},
                 {}, {});
        break;
      }
      default:
        break;
    }
  }

  Timeline t_;
  std::set<std::string> keys_;
  std::map<std::string, std::string> lock_names_;
  std::map<int32_t, OpenWait> lock_waits_;
  std::map<std::string, std::pair<int32_t, uint64_t>> holders_;  // lock -> (owner, since)
  // (lock, waker) -> index in t_.slices of its latest wake (slices are sorted only at the end)
  std::map<std::pair<std::string, int32_t>, size_t> pending_wakes_;
  std::map<int32_t, uint64_t> gil_waits_;
  std::optional<std::pair<int32_t, uint64_t>> gil_holder_;
  int64_t lock_waiters_ = 0;
  int64_t contention_waiters_ = 0;
  int64_t gil_waiters_ = 0;
};

}  // namespace

Timeline Build(const v1::Snapshot& final, const std::vector<v1::WatchEventsResponse>& events) {
  Builder b(final);
  for (const auto& e : events) b.Apply(e);
  return b.Finish();
}

std::string ToPerfetto(const Timeline& t) {
  using perfetto::protos::TrackEvent;
  perfetto::protos::Trace trace;
  constexpr uint32_t kSequence = 1;
  constexpr uint32_t kClockMonotonic = 3;
  std::map<std::string, uint64_t> uuid;
  uint64_t next = 1;
  const uint64_t process_uuid = next++;
  {
    auto* p = trace.add_packet();
    p->set_trusted_packet_sequence_id(kSequence);
    auto* d = p->mutable_track_descriptor();
    d->set_uuid(process_uuid);
    d->mutable_process()->set_pid(t.pid);
    d->mutable_process()->set_process_name(t.process_name);
  }
  for (const auto& track : t.tracks) uuid[track.key] = next++;
  for (const auto& track : t.tracks) {
    auto* p = trace.add_packet();
    p->set_trusted_packet_sequence_id(kSequence);
    auto* d = p->mutable_track_descriptor();
    d->set_uuid(uuid[track.key]);
    if (track.tid) {
      d->mutable_thread()->set_pid(t.pid);
      d->mutable_thread()->set_tid(track.tid);
      d->mutable_thread()->set_thread_name(track.name);
    } else {
      d->set_name(track.name);
      d->set_parent_uuid(track.parent.empty() ? process_uuid : uuid[track.parent]);
    }
    if (track.counter) d->mutable_counter();
  }
  // Events in time order; on one track a slice's end comes before the next one's begin.
  struct Ev {
    uint64_t ts;
    int order;  // ends (0) before instants (1) before begins (2) at the same time
    const Slice* slice;
    const CounterPoint* counter;
  };
  std::vector<Ev> evs;
  for (const auto& s : t.slices) {
    if (s.begin_ns == s.end_ns) {
      evs.push_back({s.begin_ns, 1, &s, nullptr});
    } else {
      evs.push_back({s.begin_ns, 2, &s, nullptr});
      evs.push_back({s.end_ns, 0, &s, nullptr});
    }
  }
  for (const auto& c : t.counters) evs.push_back({c.ts_ns, 1, nullptr, &c});
  std::stable_sort(evs.begin(), evs.end(), [](const Ev& a, const Ev& b) {
    return a.ts != b.ts ? a.ts < b.ts : a.order < b.order;
  });
  for (const auto& ev : evs) {
    auto* p = trace.add_packet();
    p->set_trusted_packet_sequence_id(kSequence);
    p->set_timestamp(ev.ts);
    p->set_timestamp_clock_id(kClockMonotonic);
    auto* te = p->mutable_track_event();
    if (ev.counter) {
      te->set_type(TrackEvent::TYPE_COUNTER);
      te->set_track_uuid(uuid[ev.counter->track]);
      te->set_counter_value(ev.counter->value);
      continue;
    }
    const Slice& s = *ev.slice;
    te->set_track_uuid(uuid[s.track]);
    if (ev.order == 0) {
      te->set_type(TrackEvent::TYPE_SLICE_END);
      for (uint64_t f : s.flows_in) te->add_terminating_flow_ids(f);
      continue;
    }
    te->set_type(ev.order == 1 ? TrackEvent::TYPE_INSTANT : TrackEvent::TYPE_SLICE_BEGIN);
    te->set_name(s.name);
    te->add_categories(s.category);
    for (const auto& [k, v] : s.args) {
      auto* a = te->add_debug_annotations();
      a->set_name(k);
      a->set_string_value(v);
    }
    for (uint64_t f : s.flows_out) te->add_flow_ids(f);
    if (ev.order == 1) {
      for (uint64_t f : s.flows_in) te->add_terminating_flow_ids(f);
    }
  }
  return trace.SerializeAsString();
}

nlohmann::json ToChrome(const Timeline& t) {
  using nlohmann::json;
  json events = json::array();
  auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
  events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", t.pid}, {"tid", 0},
                    {"args", {{"name", t.process_name}}}});
  std::map<std::string, const Track*> tracks;
  for (const auto& track : t.tracks) {
    tracks[track.key] = &track;
    if (track.tid) {
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", t.pid}, {"tid", track.tid},
                        {"args", {{"name", track.name}}}});
    }
  }
  auto args_of = [](const Slice& s) {
    json a = json::object();
    for (const auto& [k, v] : s.args) a[k] = v;
    return a;
  };
  for (const auto& s : t.slices) {
    const Track* track = tracks.count(s.track) ? tracks[s.track] : nullptr;
    if (track && track->tid) {
      // Slices on a thread: complete events, which nest. Instants get 1 us so flows bind.
      events.push_back({{"ph", "X"}, {"name", s.name}, {"cat", s.category}, {"pid", t.pid},
                        {"tid", track->tid}, {"ts", us(s.begin_ns)},
                        {"dur", std::max(1.0, us(s.end_ns) - us(s.begin_ns))},
                        {"args", args_of(s)}});
      for (uint64_t f : s.flows_out) {
        events.push_back({{"ph", "s"}, {"name", "hand-off"}, {"cat", "lock"}, {"id", f},
                          {"pid", t.pid}, {"tid", track->tid}, {"ts", us(s.begin_ns)}});
      }
      for (uint64_t f : s.flows_in) {
        events.push_back({{"ph", "f"}, {"bp", "e"}, {"name", "hand-off"}, {"cat", "lock"},
                          {"id", f}, {"pid", t.pid}, {"tid", track->tid},
                          {"ts", std::max(us(s.begin_ns), us(s.end_ns) - 0.5)}});
      }
      continue;
    }
    // Everything else (GIL, lifecycle, lock owner tracks) overlaps across threads: async
    // events, one id per track.
    events.push_back({{"ph", "b"}, {"name", s.name}, {"cat", s.category}, {"id2", {{"local", s.track}}},
                      {"pid", t.pid}, {"tid", 0}, {"ts", us(s.begin_ns)}, {"args", args_of(s)}});
    events.push_back({{"ph", "e"}, {"name", s.name}, {"cat", s.category}, {"id2", {{"local", s.track}}},
                      {"pid", t.pid}, {"tid", 0}, {"ts", us(s.end_ns)}});
  }
  for (const auto& c : t.counters) {
    const Track* track = tracks.count(c.track) ? tracks[c.track] : nullptr;
    events.push_back({{"ph", "C"}, {"name", track ? track->name : c.track}, {"pid", t.pid},
                      {"ts", us(c.ts_ns)}, {"args", {{"value", c.value}}}});
  }
  return {{"traceEvents", events}, {"displayTimeUnit", "ns"}};
}

}  // namespace threadscope::client::timeline
