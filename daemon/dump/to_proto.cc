#include "daemon/dump/to_proto.h"

#include "daemon/common/text.h"

namespace threadscope::dump {

namespace {

v1::DumpThreadState StateOf(ThreadState s) {
  switch (s) {
    case ThreadState::kRunning: return v1::DUMP_THREAD_STATE_RUNNING;
    case ThreadState::kGilWait: return v1::DUMP_THREAD_STATE_GIL_WAIT;
    case ThreadState::kLockWait: return v1::DUMP_THREAD_STATE_LOCK_WAIT;
    case ThreadState::kConditionWait: return v1::DUMP_THREAD_STATE_CONDITION_WAIT;
    case ThreadState::kJoinWait: return v1::DUMP_THREAD_STATE_JOIN_WAIT;
    case ThreadState::kSleeping: return v1::DUMP_THREAD_STATE_SLEEPING;
    case ThreadState::kSyscall: return v1::DUMP_THREAD_STATE_SYSCALL;
    case ThreadState::kIdle: return v1::DUMP_THREAD_STATE_IDLE;
    case ThreadState::kUnknown: return v1::DUMP_THREAD_STATE_UNKNOWN;
  }
  return v1::DUMP_THREAD_STATE_UNKNOWN;
}

v1::DumpWaitKind KindOf(WaitKind k) {
  switch (k) {
    case WaitKind::kLock: return v1::DUMP_WAIT_KIND_LOCK;
    case WaitKind::kRLock: return v1::DUMP_WAIT_KIND_RLOCK;
    case WaitKind::kCondition: return v1::DUMP_WAIT_KIND_CONDITION;
    case WaitKind::kEvent: return v1::DUMP_WAIT_KIND_EVENT;
    case WaitKind::kSemaphore: return v1::DUMP_WAIT_KIND_SEMAPHORE;
    case WaitKind::kBarrier: return v1::DUMP_WAIT_KIND_BARRIER;
    case WaitKind::kQueue: return v1::DUMP_WAIT_KIND_QUEUE;
    case WaitKind::kJoin: return v1::DUMP_WAIT_KIND_JOIN;
    case WaitKind::kGil: return v1::DUMP_WAIT_KIND_GIL;
  }
  return v1::DUMP_WAIT_KIND_UNSPECIFIED;
}

v1::DumpOwnerSource SourceOf(OwnerSource s) {
  switch (s) {
    case OwnerSource::kRLockOwner: return v1::DUMP_OWNER_SOURCE_RLOCK_OWNER;
    case OwnerSource::kWithStatement: return v1::DUMP_OWNER_SOURCE_WITH_STATEMENT;
    case OwnerSource::kAcquireCall: return v1::DUMP_OWNER_SOURCE_ACQUIRE_CALL;
    case OwnerSource::kTrace: return v1::DUMP_OWNER_SOURCE_TRACE;
    case OwnerSource::kThreadHandle: return v1::DUMP_OWNER_SOURCE_THREAD_HANDLE;
    case OwnerSource::kSentinel: return v1::DUMP_OWNER_SOURCE_SENTINEL;
    case OwnerSource::kThreadObject: return v1::DUMP_OWNER_SOURCE_THREAD_OBJECT;
    case OwnerSource::kGilState: return v1::DUMP_OWNER_SOURCE_GIL_STATE;
    case OwnerSource::kUnknown: return v1::DUMP_OWNER_SOURCE_UNKNOWN;
  }
  return v1::DUMP_OWNER_SOURCE_UNKNOWN;
}

void SetLocation(const Frame& f, v1::CodeLocation* out) {
  out->set_file(ToValidUtf8(f.file));
  out->set_function(ToValidUtf8(f.function));
  if (f.line) out->set_line(*f.line);
}

}  // namespace

v1::ProcessDump ToProto(const DumpReport& r) {
  v1::ProcessDump out;
  out.set_pid(r.pid);
  out.set_python_version(ToValidUtf8(r.python_version));
  out.set_executable(ToValidUtf8(r.executable));
  out.set_source(r.source);
  out.set_core_file(ToValidUtf8(r.core_file));
  out.set_free_threaded(r.free_threaded);
  out.set_layout_source(ToValidUtf8(r.layout_source));
  if (r.pause_ns) out.set_pause_ns(*r.pause_ns);
  for (const auto& [name, ns] : r.pause_phases) {
    auto* p = out.add_pause_phases();
    p->set_name(name);
    p->set_ns(ns);
  }
  out.set_reads(r.reads);
  for (const auto& t : r.threads) {
    auto* o = out.add_threads();
    o->set_native_tid(t.tid);
    if (t.ident) o->set_ident(*t.ident);
    o->set_name(ToValidUtf8(t.name));
    o->set_os_name(ToValidUtf8(t.os_name));
    o->set_main(t.is_main);
    o->set_state(StateOf(t.state));
    if (t.holds_gil) o->set_holds_gil(*t.holds_gil);
    for (const auto& f : t.stack) SetLocation(f, o->add_stack());
    o->set_stack_truncated(t.stack_truncated);
    if (t.wait_frame) o->set_wait_frame(static_cast<uint32_t>(*t.wait_frame));
    if (t.waiting_for) {
      const Wait& w = *t.waiting_for;
      auto* ow = o->mutable_waiting_for();
      ow->set_kind(KindOf(w.kind));
      ow->set_lock_id(ToValidUtf8(w.lock_id));
      ow->set_object_id(ToValidUtf8(w.object_id));
      ow->set_object_type(ToValidUtf8(w.object_type));
      if (w.owner) ow->set_owner_native_tid(*w.owner);
      ow->set_owner_source(SourceOf(w.owner_source));
      ow->set_detail(ToValidUtf8(w.detail));
    }
    for (const auto& h : t.holds) {
      auto* oh = o->add_holds();
      oh->set_lock_id(ToValidUtf8(h.lock_id));
      oh->set_source(SourceOf(h.source));
      if (h.taken_at) SetLocation(*h.taken_at, oh->mutable_taken_at());
    }
    o->set_syscall(ToValidUtf8(t.syscall));
    for (const auto& n : t.native) {
      auto* on = o->add_native();
      on->set_pc(n.pc);
      on->set_symbol(ToValidUtf8(n.symbol));
      on->set_binary(ToValidUtf8(n.binary));
    }
    for (const auto& l : t.locals) {
      auto* ol = o->add_locals();
      ol->set_name(ToValidUtf8(l.name));
      ol->set_type(ToValidUtf8(l.type));
      ol->set_value(ToValidUtf8(l.value));
      ol->set_address(l.address);
    }
  }
  for (const auto& d : r.deadlocks) {
    auto* od = out.add_deadlocks();
    for (pid_t tid : d.threads) od->add_native_tids(tid);
    for (const auto& l : d.locks) od->add_lock_ids(ToValidUtf8(l));
    for (const auto& f : d.wait_at) {
      auto* loc = od->add_wait_at();
      if (f) SetLocation(*f, loc);
    }
    for (const auto& f : d.taken_at) {
      auto* loc = od->add_taken_at();
      if (f) SetLocation(*f, loc);
    }
  }
  for (const auto& n : r.notes) out.add_notes(ToValidUtf8(n));
  out.set_command_line(ToValidUtf8(r.command_line));
  return out;
}

v1::DumpErrorKind ErrorKindOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk: return v1::DUMP_ERROR_UNSPECIFIED;
    case StatusCode::kInvalidArgument: return v1::DUMP_ERROR_BAD_REQUEST;
    case StatusCode::kNotFound: return v1::DUMP_ERROR_NO_SUCH_PROCESS;
    case StatusCode::kFailedPrecondition: return v1::DUMP_ERROR_NOT_PYTHON;
    case StatusCode::kPermissionDenied: return v1::DUMP_ERROR_PERMISSION;
    case StatusCode::kAborted: return v1::DUMP_ERROR_EXITED;
    case StatusCode::kDataLoss: return v1::DUMP_ERROR_BAD_CORE;
    case StatusCode::kUnavailable: return v1::DUMP_ERROR_EXECUTABLE_MISSING;
    case StatusCode::kOutOfRange: return v1::DUMP_ERROR_EXECUTABLE_MISMATCH;
    default: return v1::DUMP_ERROR_INTERNAL;
  }
}

}  // namespace threadscope::dump
