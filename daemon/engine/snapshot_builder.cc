#include "daemon/engine/snapshot_builder.h"

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

v1::Snapshot BuildSnapshot(const model::TraceModel& model, const v1::Target& target,
                           uint64_t now_ns, bool final) {
  v1::Snapshot snap;
  *snap.mutable_target() = target;
  *snap.mutable_target()->mutable_stats() = ToProto(model.stats());
  for (const auto& t : model.threads().threads()) {
    *snap.add_threads() = ToProto(model.threads(), t);
  }
  snap.set_now_ns(now_ns);
  snap.set_final(final);
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
  config.threads.joins = FromProto(target.join_visibility());
  config.threads.body_done_visible = target.body_done_visible();
  return config;
}

}  // namespace threadscope::engine
