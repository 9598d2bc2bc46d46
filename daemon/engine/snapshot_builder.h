// Turns the pure model into threadscope.v1 messages. The only place that knows both.
#pragma once

#include "daemon/model/trace_model.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::engine {

v1::Thread ToProto(const model::ThreadModel& threads, const model::ThreadRecord& t);
v1::ThreadChange ToProto(model::ThreadChange change);
v1::ThreadState ToProto(model::ThreadState state);
v1::JoinVisibility ToProto(model::JoinVisibility v);
model::JoinVisibility FromProto(v1::JoinVisibility v);
v1::TraceStats ToProto(const model::TraceStats& stats);

// Threads in order of appearance, plus the target with current stats.
v1::Snapshot BuildSnapshot(const model::TraceModel& model, const v1::Target& target,
                           uint64_t now_ns, bool final);

// Model configuration as recorded in a Target.
model::TraceModelConfig ModelConfigFromTarget(const v1::Target& target);

// "0x7f3a1c2b4d50:2": the lock's semaphore address and generation.
std::string LockId(const model::LockRecord& lock);
std::string ContentionId(uint64_t site_id);
v1::Contention ToProto(const model::LocationTable& where, const model::ContentionSite& c);
v1::LockKind ToProto(model::ContentionKind kind);
v1::Lock ToProto(const model::LockModel& locks, const model::LocationTable& where,
                 const model::LockRecord& lock);
v1::Deadlock ToProto(const model::LockModel& locks, const model::LocationTable& where,
                     const model::Deadlock& d);
v1::OrderInversion ToProto(const model::LockModel& locks, const model::OrderInversion& inv);
v1::LockEvent ToProto(const model::LockModel& locks, const model::LocationTable& where,
                      const model::LockChangeEvent& e);
v1::WaitKind ToProto(model::WaitKind kind);
v1::GilEvent ToProto(const model::LocationTable& where, const model::GilChangeEvent& e);
// GIL state at now_ns (the holder's and waiters' running time counts up to it).
v1::Gil BuildGil(const model::TraceModel& model, bool traced, uint64_t now_ns,
                 v1::GilMode mode = v1::GIL_MODE_FULL);
v1::LockKind ToProto(model::LockKind kind);

}  // namespace threadscope::engine
