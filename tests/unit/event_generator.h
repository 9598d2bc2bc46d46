// Builds raw records exactly as the BPF programs (and the daemon) write them, for tests that
// drive the model, sessions and recordings without a kernel.
#pragma once

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <utility>
#include <string>
#include <utility>
#include <vector>

#include "daemon/model/event_decoder.h"
#include "daemon/model/record_builder.h"
#include "probes/threadscope_events.h"

namespace threadscope::testing {

class EventGenerator {
 public:
  explicit EventGenerator(uint32_t pid = 1000, uint64_t start_ns = 1'000'000'000)
      : pid_(pid), now_(start_ns) {}

  uint64_t now() const { return now_; }
  void Advance(uint64_t ns) { now_ += ns; }
  uint32_t pid() const { return pid_; }

  std::string StartBegin(uint32_t parent, uint64_t boot, uint32_t api = TS_START_API_NEW_THREAD) {
    ts_thread_start_begin e{};
    e.boot = boot;
    e.func = 0x400000;
    e.api = api;
    return Make(TS_EV_THREAD_START_BEGIN, parent, e);
  }
  std::string StartEnd(uint32_t parent, uint64_t boot, bool ok, uint64_t ident,
                       uint32_t api = TS_START_API_NEW_THREAD) {
    ts_thread_start_end e{};
    e.boot = boot;
    e.ident = ok ? ident : 0;
    e.ret = ok ? static_cast<int64_t>(api == TS_START_API_NEW_THREAD ? ident : 0) : -1;
    e.api = api;
    e.ok = ok;
    return Make(TS_EV_THREAD_START_END, parent, e);
  }
  std::string Clone(uint32_t parent, uint32_t child, const char* comm = "python3") {
    ts_thread_clone e{};
    e.child_tid = child;
    std::strncpy(e.comm, comm, sizeof(e.comm) - 1);
    return Make(TS_EV_THREAD_CLONE, parent, e);
  }
  std::string Bootstrap(uint32_t child, uint64_t boot, uint64_t ident = 0) {
    ts_thread_bootstrap e{};
    e.boot = boot;
    e.ident = ident;
    return Make(TS_EV_THREAD_BOOTSTRAP, child, e);
  }
  std::string BodyDone(uint32_t child, uint32_t how = TS_BODY_RETURNED) {
    ts_thread_body_done e{};
    e.how = how;
    return Make(TS_EV_THREAD_BODY_DONE, child, e);
  }
  std::string Exit(uint32_t tid, const char* comm = "python3", int32_t code = 0) {
    ts_thread_exit e{};
    e.exit_code = code;
    std::strncpy(e.comm, comm, sizeof(e.comm) - 1);
    return Make(TS_EV_THREAD_EXIT, tid, e);
  }
  std::string Rename(uint32_t by, uint32_t target, const char* comm) {
    ts_thread_rename e{};
    e.target_tid = target;
    std::strncpy(e.comm, comm, sizeof(e.comm) - 1);
    return Make(TS_EV_THREAD_RENAME, by, e);
  }
  std::string Sentinel(uint32_t child, uint64_t lock, uint64_t sem) {
    ts_thread_sentinel e{};
    e.lock = lock;
    e.sem = sem;
    return Make(TS_EV_THREAD_SENTINEL, child, e);
  }
  std::string SemWait(uint16_t type, uint32_t tid, uint64_t sem, int64_t ret = 0) {
    ts_sem_wait e{};
    e.sem = sem;
    e.ret = ret;
    return Make(type, tid, e);
  }
  std::string LockNew(uint32_t tid, uint64_t obj, uint64_t sem, uint32_t kind = TS_LOCK_LOCK) {
    ts_lock_event e{};
    e.obj = obj;
    e.sem = sem;
    e.kind = kind;
    return Make(TS_EV_LOCK_NEW, tid, e);
  }
  // An acquire call's return (--locks=all); `waited` says it blocked in a semaphore wait.
  std::string LockAcquire(uint32_t tid, uint64_t obj, uint64_t sem, int32_t result = 1,
                          bool waited = false, uint32_t kind = TS_LOCK_LOCK,
                          uint32_t op = TS_LOCK_OP_ACQUIRE) {
    ts_lock_event e{};
    e.obj = obj;
    e.sem = sem;
    e.kind = kind;
    e.op = op;
    e.result = result;
    e.waited = waited;
    e.begin_ns = now_;
    return Make(TS_EV_LOCK_ACQUIRE, tid, e);
  }
  std::string LockRelease(uint32_t tid, uint64_t obj, uint64_t sem, uint32_t kind = TS_LOCK_LOCK,
                          uint32_t op = TS_LOCK_OP_RELEASE) {
    ts_lock_event e{};
    e.obj = obj;
    e.sem = sem;
    e.kind = kind;
    e.op = op;
    return Make(TS_EV_LOCK_RELEASE, tid, e);
  }
  std::string LockFree(uint32_t tid, uint64_t obj, uint32_t kind = TS_LOCK_LOCK) {
    ts_lock_event e{};
    e.obj = obj;
    e.kind = kind;
    e.flags = TS_LOCK_F_PYMUTEX;
    return Make(TS_EV_LOCK_FREE, tid, e);
  }
  // 3.13+ PyMutex builds: a creation, an acquire's return and a release carry no semaphore,
  // the object's type, and (RLock) its owner and depth.
  std::string MutexNew(uint32_t tid, uint64_t obj, uint64_t type, uint32_t kind = TS_LOCK_LOCK) {
    ts_lock_event e{};
    e.obj = obj;
    e.kind = kind;
    e.flags = TS_LOCK_F_PYMUTEX;
    e.obj_type = type;
    return Make(TS_EV_LOCK_NEW, tid, e);
  }
  std::string MutexAcquire(uint32_t tid, uint64_t obj, int32_t result = 1, bool waited = false,
                           uint32_t kind = TS_LOCK_LOCK, uint32_t op = TS_LOCK_OP_ACQUIRE,
                           uint64_t owner_ident = 0, uint32_t depth = 0) {
    ts_lock_event e{};
    e.obj = obj;
    e.kind = kind;
    e.op = op;
    e.result = result;
    e.waited = waited;
    e.begin_ns = now_;
    e.flags = TS_LOCK_F_PYMUTEX | (owner_ident || depth ? TS_LOCK_F_OWNER : 0);
    e.owner_ident = owner_ident;
    e.depth = depth;
    return Make(TS_EV_LOCK_ACQUIRE, tid, e);
  }
  std::string MutexRelease(uint32_t tid, uint64_t obj, uint32_t kind = TS_LOCK_LOCK,
                           uint32_t op = TS_LOCK_OP_RELEASE, uint64_t owner_ident = 0,
                           uint32_t depth = 0, bool owner = false) {
    ts_lock_event e{};
    e.obj = obj;
    e.kind = kind;
    e.op = op;
    e.flags = TS_LOCK_F_PYMUTEX | (owner ? TS_LOCK_F_OWNER : 0);
    e.owner_ident = owner_ident;
    e.depth = depth;
    return Make(TS_EV_LOCK_RELEASE, tid, e);
  }
  // A park on a lock object (its mutex 16 bytes in), as ts_park writes it. `fair` with
  // `park_arg` names the acquire call (re-parks repeat them).
  std::string Park(uint32_t tid, uint64_t sema, uint64_t obj, uint64_t type, uint64_t park_arg,
                   uint64_t fair, int64_t timeout = -1'000'000'000,
                   uint32_t site = TS_PARK_SITE_PARK) {
    ts_park e{};
    e.sema = sema;
    e.addr = obj + 16;
    e.park_arg = park_arg;
    e.fair_ns = fair;
    e.timeout_ns = timeout;
    e.obj = obj;
    e.obj_type = type;
    e.site = site;
    return Make(TS_EV_PARK_BEGIN, tid, e);
  }
  // Free-threaded: a park on an object's ob_mutex (10 bytes in).
  std::string CsPark(uint32_t tid, uint64_t sema, uint64_t obj, uint64_t type, uint64_t park_arg,
                     uint64_t fair) {
    ts_park e{};
    e.sema = sema;
    e.addr = obj + 10;
    e.park_arg = park_arg;
    e.fair_ns = fair;
    e.timeout_ns = -1;
    e.obj = e.addr - 32;
    e.cs_obj = obj;
    e.cs_type = type;
    e.flags = TS_PARK_F_FREE_THREADED;
    e.site = TS_PARK_SITE_PARK;
    return Make(TS_EV_PARK_BEGIN, tid, e);
  }
  // An event park (no mutex_entry): thread-start handshakes, joins.
  std::string EventPark(uint32_t tid, uint64_t sema, uint64_t addr) {
    ts_park e{};
    e.sema = sema;
    e.addr = addr;
    e.timeout_ns = -1;
    e.site = TS_PARK_SITE_PARK;
    return Make(TS_EV_PARK_BEGIN, tid, e);
  }
  std::string ParkEnd(uint32_t tid, uint64_t sema, int32_t result = TS_PARK_OK,
                      bool handed_off = false, uint32_t site = TS_PARK_SITE_PARK) {
    ts_park e{};
    e.sema = sema;
    e.result = result;
    e.handed_off = handed_off;
    e.site = site;
    return Make(TS_EV_PARK_END, tid, e);
  }
  std::string Unpark(uint32_t waker, uint64_t sema, bool handed_off, uint32_t woken = 0) {
    ts_unpark e{};
    e.sema = sema;
    e.woken_tid = woken;
    e.handed_off = handed_off;
    return Make(TS_EV_UNPARK, waker, e);
  }
  std::string CsSlow(uint32_t tid, uint64_t obj, uint64_t type) {
    ts_cs_slow e{};
    e.mutex = obj + 10;
    e.obj_type = type;
    e.locked = 1;
    return Make(TS_EV_CS_SLOW, tid, e);
  }
  std::string PyType(uint64_t type, const std::string& name) {
    now_ += 1000;
    return model::MakePyTypeRecord(pid_, now_, type, name);
  }
  std::string Gil(uint32_t tid, uint32_t op) {
    ts_gil_event e{};
    e.op = op;
    return Make(TS_EV_GIL, tid, e);
  }
  std::string FutexWake(uint32_t waker, uint64_t uaddr) {
    ts_futex_wake e{};
    e.uaddr = uaddr;
    return Make(TS_EV_FUTEX_WAKE, waker, e);
  }
  std::string JoinBegin(uint32_t joiner, uint64_t ident) {
    ts_thread_join e{};
    e.ident = ident;
    return Make(TS_EV_THREAD_JOIN_BEGIN, joiner, e);
  }
  std::string JoinEnd(uint32_t joiner, int64_t ret = 0) {
    ts_thread_join e{};
    e.ret = ret;
    return Make(TS_EV_THREAD_JOIN_END, joiner, e);
  }
  std::string Detach(uint32_t by, uint64_t ident) {
    ts_thread_detach e{};
    e.ident = ident;
    return Make(TS_EV_THREAD_DETACH, by, e);
  }
  std::string Preexisting(uint32_t tid, uint64_t start_ns, const char* comm = "python3") {
    ts_preexisting_thread e{};
    e.start_ns = start_ns;
    std::strncpy(e.comm, comm, sizeof(e.comm) - 1);
    return Make(TS_EV_PREEXISTING_THREAD, tid, e);
  }
  std::string Lost(uint64_t count, uint32_t source = TS_LOST_RINGBUF) {
    ts_lost e{};
    e.count = count;
    e.source = source;
    return Make(TS_EV_LOST, 0, e);
  }
  std::string Mark(uint32_t kind) {
    ts_trace_mark e{};
    e.kind = kind;
    return Make(TS_EV_TRACE_MARK, pid_, e);
  }
  // What the daemon writes the first time a (code object, instruction) pair is seen.
  std::string Location(uint64_t code, uint64_t instr, int32_t line, const std::string& file,
                       const std::string& function) {
    ts_py_location fixed{};
    fixed.code = code;
    fixed.instr = instr;
    fixed.line = line;
    return model::MakePyLocationRecord(pid_, now_, fixed, file, function);
  }
  // `record` carrying a Python stack: (code, instr) pairs, innermost first.
  static std::string WithStack(std::string record,
                               const std::vector<std::pair<uint64_t, uint64_t>>& frames,
                               bool truncated = false) {
    ts_py_stack st{};
    st.depth = static_cast<uint8_t>(frames.size());
    st.flags = truncated ? TS_STACK_TRUNCATED : 0;
    for (size_t i = 0; i < frames.size() && i < TS_PY_MAX_FRAMES; ++i) {
      st.frames[i].code = frames[i].first;
      st.frames[i].instr = frames[i].second;
    }
    ts_header h;
    std::memcpy(&h, record.data(), sizeof(h));
    h.flags |= TS_HDR_PY_STACK;
    h.size = static_cast<uint32_t>(record.size() + sizeof(st));
    std::memcpy(record.data(), &h, sizeof(h));
    record.append(reinterpret_cast<const char*>(&st), sizeof(st));
    return record;
  }

 private:
  template <typename T>
  std::string Make(uint16_t type, uint32_t tid, const T& e) {
    now_ += 1000;  // records are 1 us apart unless the test advances the clock
    return model::MakeRecord(type, pid_, tid, now_, e);
  }

  uint32_t pid_;
  uint64_t now_;
};

// `record` with a Python stack trailer of (code, instr) frames, innermost first, as the probes
// append it (the header's size and TS_HDR_PY_STACK flag updated).
inline std::string WithStack(std::string record,
                             const std::vector<std::pair<uint64_t, uint64_t>>& frames) {
  ts_py_stack st{};
  st.tstate = 0x7000;
  st.depth = static_cast<uint8_t>(std::min<size_t>(frames.size(), TS_PY_MAX_FRAMES));
  for (size_t i = 0; i < st.depth; ++i) {
    st.frames[i].code = frames[i].first;
    st.frames[i].instr = frames[i].second;
  }
  record.append(reinterpret_cast<const char*>(&st), sizeof(st));
  ts_header h;
  std::memcpy(&h, record.data(), sizeof(h));
  h.size = static_cast<uint32_t>(record.size());
  h.flags |= TS_HDR_PY_STACK;
  std::memcpy(record.data(), &h, sizeof(h));
  return record;
}

// Concatenation of records, as one ring-buffer batch.
inline std::string Batch(const std::vector<std::string>& records) {
  std::string out;
  for (const auto& r : records) out += r;
  return out;
}

}  // namespace threadscope::testing
