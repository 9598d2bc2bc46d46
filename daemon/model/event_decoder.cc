#include "daemon/model/event_decoder.h"

#include <algorithm>
#include <cstring>
#include <sstream>

namespace threadscope::model {

// The ABI is fixed-width and explicitly padded; these guard against accidental drift.
static_assert(sizeof(ts_header) == 24);
static_assert(sizeof(ts_thread_start_begin) == 48);
static_assert(sizeof(ts_thread_start_end) == 56);
static_assert(sizeof(ts_thread_clone) == 48);
static_assert(sizeof(ts_thread_bootstrap) == 40);
static_assert(sizeof(ts_thread_body_done) == 32);
static_assert(sizeof(ts_thread_exit) == 48);
static_assert(sizeof(ts_thread_rename) == 48);
static_assert(sizeof(ts_thread_sentinel) == 40);
static_assert(sizeof(ts_thread_join) == 40);
static_assert(sizeof(ts_thread_detach) == 32);
static_assert(sizeof(ts_sem_wait) == 40);
static_assert(sizeof(ts_preexisting_thread) == 48);
static_assert(sizeof(ts_lost) == 40);
static_assert(sizeof(ts_trace_mark) == 32);
static_assert(sizeof(ts_lock_event) == 88);
static_assert(sizeof(ts_futex_wake) == 40);
static_assert(sizeof(ts_gil_event) == 32);
static_assert(sizeof(ts_py_stack) == 144);
static_assert(sizeof(ts_py_location) == 56);
static_assert(sizeof(ts_park) == 112);
static_assert(sizeof(ts_unpark) == 56);
static_assert(sizeof(ts_cs_slow) == 64);
static_assert(sizeof(ts_py_type) == 40);
// ABI 1 records that grew in ABI 2 (a recording made by ABI 1 still decodes: the new fields
// read as zero).
constexpr size_t kLockEventV1 = 64;

namespace {

// `min_size`: the smallest size an older ABI wrote for T (its later fields are then zero).
template <typename T>
StatusOr<DecodedEvent> Copy(const ts_header& h, const uint8_t* data, size_t min_size = sizeof(T)) {
  if (h.size < min_size) {
    return DataLossError("record type " + std::to_string(h.type) + " is " +
                         std::to_string(h.size) + " bytes, expected at least " +
                         std::to_string(sizeof(T)));
  }
  // A short record (an older ABI) carries a stack trailer right after its own body.
  size_t body = std::min<size_t>(sizeof(T), h.size);
  if ((h.flags & TS_HDR_PY_STACK) && h.size >= min_size + sizeof(ts_py_stack)) {
    body = std::min<size_t>(body, h.size - sizeof(ts_py_stack));
  }
  T value{};
  std::memcpy(&value, data, body);
  value.h = h;
  DecodedEvent out{h, value, std::nullopt};
  if (h.flags & TS_HDR_PY_STACK) {
    if (h.size < min_size + sizeof(ts_py_stack)) {
      return DataLossError("record type " + std::to_string(h.type) +
                           " says it carries a stack but is only " + std::to_string(h.size) +
                           " bytes");
    }
    ts_py_stack stack;
    std::memcpy(&stack, data + h.size - sizeof(ts_py_stack), sizeof(stack));
    if (stack.depth > TS_PY_MAX_FRAMES) return DataLossError("stack deeper than its frames");
    out.stack = stack;
  }
  return out;
}

StatusOr<DecodedEvent> DecodeType(const ts_header& h, const uint8_t* data) {
  if (h.size < sizeof(ts_py_type)) {
    return DataLossError("type record is " + std::to_string(h.size) + " bytes");
  }
  PyTypeRecord r;
  std::memcpy(&r.fixed, data, sizeof(r.fixed));
  if (h.size < sizeof(ts_py_type) + r.fixed.name_len) {
    return DataLossError("type record name runs past its end");
  }
  r.name.assign(reinterpret_cast<const char*>(data) + sizeof(ts_py_type), r.fixed.name_len);
  return DecodedEvent{h, std::move(r), std::nullopt};
}

StatusOr<DecodedEvent> DecodeLocation(const ts_header& h, const uint8_t* data) {
  if (h.size < sizeof(ts_py_location)) {
    return DataLossError("location record is " + std::to_string(h.size) + " bytes");
  }
  PyLocationRecord r;
  std::memcpy(&r.fixed, data, sizeof(r.fixed));
  size_t need = sizeof(ts_py_location) + r.fixed.file_len + r.fixed.function_len;
  if (h.size < need) return DataLossError("location record strings run past its end");
  const char* strings = reinterpret_cast<const char*>(data) + sizeof(ts_py_location);
  r.file.assign(strings, r.fixed.file_len);
  r.function.assign(strings + r.fixed.file_len, r.fixed.function_len);
  return DecodedEvent{h, std::move(r), std::nullopt};
}

}  // namespace

StatusOr<DecodedEvent> DecodeEvent(const uint8_t* data, size_t size) {
  if (size < sizeof(ts_header)) {
    return DataLossError("record of " + std::to_string(size) + " bytes is shorter than a header");
  }
  ts_header h;
  std::memcpy(&h, data, sizeof(h));
  if (h.size < sizeof(ts_header) || h.size > size) {
    return DataLossError("record header claims " + std::to_string(h.size) + " bytes, " +
                         std::to_string(size) + " available");
  }
  if (h.version == 0 || h.version > TS_ABI_VERSION + 16) {
    return DataLossError("record ABI version " + std::to_string(h.version) + " is not plausible");
  }
  switch (h.type) {
    case TS_EV_THREAD_START_BEGIN: return Copy<ts_thread_start_begin>(h, data);
    case TS_EV_THREAD_START_END: return Copy<ts_thread_start_end>(h, data);
    case TS_EV_THREAD_CLONE: return Copy<ts_thread_clone>(h, data);
    case TS_EV_THREAD_BOOTSTRAP: return Copy<ts_thread_bootstrap>(h, data);
    case TS_EV_THREAD_BODY_DONE: return Copy<ts_thread_body_done>(h, data);
    case TS_EV_THREAD_EXIT: return Copy<ts_thread_exit>(h, data);
    case TS_EV_THREAD_RENAME: return Copy<ts_thread_rename>(h, data);
    case TS_EV_THREAD_SENTINEL: return Copy<ts_thread_sentinel>(h, data);
    case TS_EV_THREAD_JOIN_BEGIN:
    case TS_EV_THREAD_JOIN_END: return Copy<ts_thread_join>(h, data);
    case TS_EV_THREAD_DETACH: return Copy<ts_thread_detach>(h, data);
    case TS_EV_SEM_WAIT_BEGIN:
    case TS_EV_SEM_WAIT_END:
    case TS_EV_SEM_DESTROY: return Copy<ts_sem_wait>(h, data);
    case TS_EV_PREEXISTING_THREAD: return Copy<ts_preexisting_thread>(h, data);
    case TS_EV_LOST: return Copy<ts_lost>(h, data);
    case TS_EV_TRACE_MARK: return Copy<ts_trace_mark>(h, data);
    case TS_EV_LOCK_NEW:
    case TS_EV_LOCK_ACQUIRE:
    case TS_EV_LOCK_RELEASE:
    case TS_EV_LOCK_FREE: return Copy<ts_lock_event>(h, data, kLockEventV1);
    case TS_EV_FUTEX_WAKE: return Copy<ts_futex_wake>(h, data);
    case TS_EV_GIL: return Copy<ts_gil_event>(h, data);
    case TS_EV_PARK_BEGIN:
    case TS_EV_PARK_END: return Copy<ts_park>(h, data);
    case TS_EV_UNPARK: return Copy<ts_unpark>(h, data);
    case TS_EV_CS_SLOW: return Copy<ts_cs_slow>(h, data);
    case TS_EV_PY_LOCATION: return DecodeLocation(h, data);
    case TS_EV_PY_TYPE: return DecodeType(h, data);
    default:
      return UnimplementedError("unknown record type " + std::to_string(h.type));
  }
}

std::string EventTypeName(uint16_t type) {
  switch (type) {
    case TS_EV_THREAD_START_BEGIN: return "thread_start_begin";
    case TS_EV_THREAD_START_END: return "thread_start_end";
    case TS_EV_THREAD_CLONE: return "thread_clone";
    case TS_EV_THREAD_BOOTSTRAP: return "thread_bootstrap";
    case TS_EV_THREAD_BODY_DONE: return "thread_body_done";
    case TS_EV_THREAD_EXIT: return "thread_exit";
    case TS_EV_THREAD_RENAME: return "thread_rename";
    case TS_EV_THREAD_SENTINEL: return "thread_sentinel";
    case TS_EV_THREAD_JOIN_BEGIN: return "thread_join_begin";
    case TS_EV_THREAD_JOIN_END: return "thread_join_end";
    case TS_EV_THREAD_DETACH: return "thread_detach";
    case TS_EV_SEM_WAIT_BEGIN: return "sem_wait_begin";
    case TS_EV_SEM_WAIT_END: return "sem_wait_end";
    case TS_EV_SEM_DESTROY: return "sem_destroy";
    case TS_EV_PREEXISTING_THREAD: return "preexisting_thread";
    case TS_EV_LOST: return "lost";
    case TS_EV_TRACE_MARK: return "trace_mark";
    case TS_EV_LOCK_NEW: return "lock_new";
    case TS_EV_LOCK_ACQUIRE: return "lock_acquire";
    case TS_EV_LOCK_RELEASE: return "lock_release";
    case TS_EV_FUTEX_WAKE: return "futex_wake";
    case TS_EV_GIL: return "gil";
    case TS_EV_PARK_BEGIN: return "park_begin";
    case TS_EV_PARK_END: return "park_end";
    case TS_EV_UNPARK: return "unpark";
    case TS_EV_LOCK_FREE: return "lock_free";
    case TS_EV_CS_SLOW: return "cs_slow";
    case TS_EV_PY_LOCATION: return "py_location";
    case TS_EV_PY_TYPE: return "py_type";
    default: return "type_" + std::to_string(type);
  }
}

std::string CommToString(const char (&comm)[TS_COMM_LEN]) {
  // A thread can name itself with any bytes (prctl PR_SET_NAME).
  return ToValidUtf8(std::string_view(comm, strnlen(comm, TS_COMM_LEN)));
}

std::string DescribeEvent(const DecodedEvent& e) {
  std::ostringstream out;
  out << e.header.ts_ns << " tid=" << e.header.tid << " " << EventTypeName(e.header.type);
  std::visit(
      [&](const auto& p) {
        using T = std::decay_t<decltype(p)>;
        out << std::hex;
        if constexpr (std::is_same_v<T, ts_thread_start_begin>) {
          out << " boot=0x" << p.boot << " func=0x" << p.func << std::dec << " api=" << p.api;
        } else if constexpr (std::is_same_v<T, ts_thread_start_end>) {
          out << " boot=0x" << p.boot << " ident=0x" << p.ident << std::dec << " ok=" << p.ok;
        } else if constexpr (std::is_same_v<T, ts_thread_clone>) {
          out << std::dec << " child=" << p.child_tid << " comm=" << CommToString(p.comm);
        } else if constexpr (std::is_same_v<T, ts_thread_bootstrap>) {
          out << " boot=0x" << p.boot << " ident=0x" << p.ident;
        } else if constexpr (std::is_same_v<T, ts_thread_body_done>) {
          out << std::dec << " how=" << p.how;
        } else if constexpr (std::is_same_v<T, ts_thread_exit>) {
          out << std::dec << " code=" << p.exit_code << " comm=" << CommToString(p.comm);
        } else if constexpr (std::is_same_v<T, ts_thread_rename>) {
          out << std::dec << " target=" << p.target_tid << " comm=" << CommToString(p.comm);
        } else if constexpr (std::is_same_v<T, ts_thread_sentinel>) {
          out << " lock=0x" << p.lock << " sem=0x" << p.sem;
        } else if constexpr (std::is_same_v<T, ts_thread_join>) {
          out << " ident=0x" << p.ident << std::dec << " ret=" << p.ret;
        } else if constexpr (std::is_same_v<T, ts_thread_detach>) {
          out << " ident=0x" << p.ident;
        } else if constexpr (std::is_same_v<T, ts_sem_wait>) {
          out << " sem=0x" << p.sem << std::dec << " ret=" << p.ret;
        } else if constexpr (std::is_same_v<T, ts_preexisting_thread>) {
          out << std::dec << " start=" << p.start_ns << " comm=" << CommToString(p.comm);
        } else if constexpr (std::is_same_v<T, ts_lost>) {
          out << std::dec << " count=" << p.count << " source=" << p.source;
        } else if constexpr (std::is_same_v<T, ts_trace_mark>) {
          out << std::dec << " kind=" << p.kind;
        } else if constexpr (std::is_same_v<T, ts_lock_event>) {
          out << " obj=0x" << p.obj << " sem=0x" << p.sem << std::dec << " kind=" << p.kind
              << " op=" << p.op << " result=" << p.result << " waited=" << p.waited
              << " flags=" << p.flags << std::hex << " type=0x" << p.obj_type;
          if (p.flags & TS_LOCK_F_OWNER) {
            out << " owner=0x" << p.owner_ident << std::dec << " depth=" << p.depth;
          }
        } else if constexpr (std::is_same_v<T, ts_park>) {
          out << " sema=0x" << p.sema << " addr=0x" << p.addr << " park_arg=0x" << p.park_arg
              << " fair=0x" << p.fair_ns << " obj=0x" << p.obj << " type=0x" << p.obj_type
              << " cs_type=0x" << p.cs_type << std::dec << " timeout=" << p.timeout_ns
              << " result=" << p.result << " handed_off=" << p.handed_off << " site=" << p.site;
        } else if constexpr (std::is_same_v<T, ts_unpark>) {
          out << " sema=0x" << p.sema << " addr=0x" << p.addr << " park_arg=0x" << p.park_arg
              << std::dec << " woken=" << p.woken_tid << " handed_off=" << p.handed_off;
        } else if constexpr (std::is_same_v<T, ts_cs_slow>) {
          out << " mutex=0x" << p.mutex << " type=0x" << p.obj_type << " mutex2=0x" << p.mutex2
              << std::dec << " locked=" << p.locked;
        } else if constexpr (std::is_same_v<T, PyTypeRecord>) {
          out << " type=0x" << p.fixed.type << " name=" << p.name;
        } else if constexpr (std::is_same_v<T, ts_futex_wake>) {
          out << " uaddr=0x" << p.uaddr << std::dec << " woken=" << p.woken;
        } else if constexpr (std::is_same_v<T, ts_gil_event>) {
          out << std::dec << " op=" << p.op;
        } else if constexpr (std::is_same_v<T, PyLocationRecord>) {
          out << " code=0x" << p.fixed.code << " instr=0x" << p.fixed.instr << std::dec << " "
              << p.file << ":" << p.fixed.line << " " << p.function << " flags=" << p.fixed.flags;
        }
      },
      e.payload);
  if (e.stack) {
    out << std::hex << " stack[tstate=0x" << e.stack->tstate << std::dec
        << " flags=" << int{e.stack->flags} << std::hex;
    for (int i = 0; i < e.stack->depth; ++i) {
      out << " 0x" << e.stack->frames[i].code << "+0x" << e.stack->frames[i].instr;
    }
    out << "]";
  }
  return out.str();
}

std::string MakePyTypeRecord(uint32_t pid, uint64_t ts_ns, uint64_t type, const std::string& name,
                             uint32_t flags) {
  ts_py_type body{};
  body.type = type;
  body.flags = flags;
  body.name_len = static_cast<uint16_t>(std::min<size_t>(name.size(), 256));
  size_t size = (sizeof(body) + body.name_len + 7) & ~size_t{7};
  body.h.type = TS_EV_PY_TYPE;
  body.h.version = TS_ABI_VERSION;
  body.h.flags = 0;
  body.h.size = static_cast<uint32_t>(size);
  body.h.ts_ns = ts_ns;
  body.h.pid = pid;
  body.h.tid = pid;
  std::string out(size, '\0');
  std::memcpy(out.data(), &body, sizeof(body));
  std::memcpy(out.data() + sizeof(body), name.data(), body.name_len);
  return out;
}

std::string MakePyLocationRecord(uint32_t pid, uint64_t ts_ns, const ts_py_location& fixed,
                                 const std::string& file, const std::string& function) {
  ts_py_location body = fixed;
  body.file_len = static_cast<uint16_t>(std::min<size_t>(file.size(), 4096));
  body.function_len = static_cast<uint16_t>(std::min<size_t>(function.size(), 1024));
  size_t size = (sizeof(body) + body.file_len + body.function_len + 7) & ~size_t{7};
  body.h.type = TS_EV_PY_LOCATION;
  body.h.version = TS_ABI_VERSION;
  body.h.flags = 0;
  body.h.size = static_cast<uint32_t>(size);
  body.h.ts_ns = ts_ns;
  body.h.pid = pid;
  body.h.tid = pid;
  std::string out(size, '\0');
  std::memcpy(out.data(), &body, sizeof(body));
  std::memcpy(out.data() + sizeof(body), file.data(), body.file_len);
  std::memcpy(out.data() + sizeof(body) + body.file_len, function.data(), body.function_len);
  return out;
}

}  // namespace threadscope::model
