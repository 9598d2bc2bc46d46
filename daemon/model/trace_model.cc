#include "daemon/model/trace_model.h"

#include <algorithm>

namespace threadscope::model {

void TraceModel::ApplyRecord(const uint8_t* data, size_t size, std::vector<ModelEvent>* out) {
  auto decoded = DecodeEvent(data, size);
  if (!decoded.ok()) {
    if (decoded.status().code() == StatusCode::kUnimplemented) {
      ++stats_.unknown_records;
    } else {
      ++stats_.decode_errors;
    }
    return;
  }
  const DecodedEvent& e = *decoded;
  ++stats_.records;
  last_ts_ns_ = std::max<uint64_t>(last_ts_ns_, e.header.ts_ns);
  if (const auto* lost = std::get_if<ts_lost>(&e.payload)) {
    switch (lost->source) {
      case TS_LOST_STASH: stats_.lost_stash += lost->count; break;
      case TS_LOST_CONSUMER: stats_.lost_consumer += lost->count; break;
      default: stats_.lost_ringbuf += lost->count; break;
    }
    if (lost->count) threads_.NoteLoss();
  } else if (const auto* location = std::get_if<PyLocationRecord>(&e.payload)) {
    locations_.Define(*location);
    return;
  } else if (const auto* mark = std::get_if<ts_trace_mark>(&e.payload)) {
    switch (mark->kind) {
      case TS_MARK_ATTACHED: attached_ns_ = e.header.ts_ns; break;
      case TS_MARK_DETACHED: detached_ns_ = e.header.ts_ns; break;
      case TS_MARK_TARGET_EXITED: target_exited_ns_ = e.header.ts_ns; break;
      default: break;
    }
  }
  scratch_.clear();
  lock_scratch_.clear();
  gil_scratch_.clear();
  std::optional<PyStack> stack;
  if (e.stack) stack = locations_.Resolve(*e.stack);
  gil_.Apply(e, stack ? &*stack : nullptr, out ? &gil_scratch_ : nullptr);
  threads_.Apply(e, out ? &scratch_ : nullptr);
  locks_.Apply(e, stack ? &*stack : nullptr, out ? &lock_scratch_ : nullptr);
  if (out) {
    for (const auto& change : scratch_) {
      ModelEvent m;
      m.kind = ModelEvent::Kind::kThread;
      m.thread = change;
      out->push_back(m);
    }
    for (const auto& change : lock_scratch_) {
      ModelEvent m;
      m.kind = ModelEvent::Kind::kLock;
      m.lock = change;
      out->push_back(m);
    }
    for (const auto& change : gil_scratch_) {
      ModelEvent m;
      m.kind = ModelEvent::Kind::kGil;
      m.gil = change;
      out->push_back(m);
    }
  }
}

uint64_t TraceModel::end_ns() const {
  if (target_exited_ns_) return *target_exited_ns_;
  if (detached_ns_) return *detached_ns_;
  return last_ts_ns_;
}

}  // namespace threadscope::model
