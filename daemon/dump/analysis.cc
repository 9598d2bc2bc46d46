#include "daemon/dump/analysis.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <unordered_map>

namespace threadscope::dump {

const char* ThreadStateName(ThreadState s) {
  switch (s) {
    case ThreadState::kRunning: return "running";
    case ThreadState::kGilWait: return "gil_wait";
    case ThreadState::kLockWait: return "lock_wait";
    case ThreadState::kConditionWait: return "condition_wait";
    case ThreadState::kJoinWait: return "join_wait";
    case ThreadState::kSleeping: return "sleeping";
    case ThreadState::kSyscall: return "syscall";
    case ThreadState::kIdle: return "idle";
    case ThreadState::kUnknown: return "unknown";
  }
  return "unknown";
}

const char* WaitKindName(WaitKind k) {
  switch (k) {
    case WaitKind::kLock: return "lock";
    case WaitKind::kRLock: return "rlock";
    case WaitKind::kCondition: return "condition";
    case WaitKind::kEvent: return "event";
    case WaitKind::kSemaphore: return "semaphore";
    case WaitKind::kBarrier: return "barrier";
    case WaitKind::kQueue: return "queue";
    case WaitKind::kJoin: return "join";
    case WaitKind::kGil: return "gil";
  }
  return "lock";
}

const char* OwnerSourceName(OwnerSource s) {
  switch (s) {
    case OwnerSource::kRLockOwner: return "rlock_owner";
    case OwnerSource::kWithStatement: return "with_statement";
    case OwnerSource::kAcquireCall: return "acquire_call";
    case OwnerSource::kTrace: return "trace";
    case OwnerSource::kThreadHandle: return "thread_handle";
    case OwnerSource::kSentinel: return "sentinel";
    case OwnerSource::kThreadObject: return "thread_object";
    case OwnerSource::kGilState: return "gil_state";
    case OwnerSource::kUnknown: return "unknown";
  }
  return "unknown";
}

bool IsProven(OwnerSource s) {
  switch (s) {
    case OwnerSource::kRLockOwner:
    case OwnerSource::kWithStatement:
    case OwnerSource::kTrace:
    case OwnerSource::kThreadHandle:
    case OwnerSource::kSentinel:
    case OwnerSource::kThreadObject:
    case OwnerSource::kGilState:
      return true;
    case OwnerSource::kAcquireCall:
    case OwnerSource::kUnknown:
      return false;
  }
  return false;
}

std::string ObjectId(uint64_t address) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(address));
  return buf;
}

namespace {

std::string Basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool InStdlib(const Frame& f) {
  std::string base = Basename(f.file);
  return base == "threading.py" || base == "queue.py";
}

bool InThreading(const Frame& f) { return Basename(f.file) == "threading.py"; }

// "Condition.wait" -> "wait"; 3.11+ names are qualified, older ones are not.
std::string ShortName(const std::string& function) {
  auto dot = function.rfind('.');
  return dot == std::string::npos ? function : function.substr(dot + 1);
}

// The class a stdlib frame belongs to: its qualified name (3.11+) or the type of its `self`
// (2.7's classes are _Condition, _Event, ...: the underscore goes).
std::string ClassOf(const FrameFacts& f) {
  auto dot = f.where.function.rfind('.');
  std::string cls = dot != std::string::npos        ? f.where.function.substr(0, dot)
                    : !f.self_stdlib_class.empty() ? f.self_stdlib_class
                                                   : f.self_type;
  auto inner = cls.rfind('.');
  if (inner != std::string::npos) cls = cls.substr(inner + 1);
  while (!cls.empty() && cls[0] == '_') cls = cls.substr(1);
  return cls;
}

bool IsConditionWait(const FrameFacts& f) {
  if (!InThreading(f.where)) return false;
  std::string fn = ShortName(f.where.function);
  return (fn == "wait" || fn == "wait_for") && ClassOf(f) == "Condition";
}

struct Index {
  std::unordered_map<uint64_t, pid_t> by_ident;
  std::unordered_map<pid_t, const ThreadFacts*> by_tid;
};

// The Condition a thread is waiting in (Condition.wait releases that condition's lock), if any.
uint64_t WaitingCondition(const ThreadFacts& t) {
  if (t.blocked.kind != BlockKind::kLock && t.blocked.kind != BlockKind::kUnidentifiedLock) {
    return 0;
  }
  for (const auto& f : t.frames) {
    if (!InStdlib(f.where)) break;
    if (IsConditionWait(f)) return f.self;
  }
  return 0;
}

struct HeldLock {
  uint64_t lock = 0;
  OwnerSource source = OwnerSource::kWithStatement;
  std::optional<Frame> taken_at;
};

// Locks a thread holds, with the evidence for each.
std::vector<HeldLock> HeldBy(const ThreadFacts& t, const ProcessFacts& p) {
  std::vector<HeldLock> out;
  uint64_t cond = WaitingCondition(t);
  uint64_t released = 0;
  if (cond) {
    auto it = p.condition_locks.find(cond);
    if (it != p.condition_locks.end()) released = it->second;
  }
  auto add = [&](uint64_t lock, OwnerSource source, std::optional<Frame> at) {
    for (auto& h : out) {
      if (h.lock != lock) continue;
      // Keep the strongest evidence, and the place it was taken wherever it is known.
      if (!h.taken_at && at) h.taken_at = at;
      if (source == OwnerSource::kRLockOwner || source == OwnerSource::kTrace) h.source = source;
      return;
    }
    out.push_back({lock, source, std::move(at)});
  };
  // Outermost frames first: the order the locks were taken.
  for (auto f = t.frames.rbegin(); f != t.frames.rend(); ++f) {
    for (const auto& w : f->withs) {
      if (!w.lock) continue;
      if (cond && (w.object == cond || w.lock == released)) continue;  // released by the wait
      add(w.lock, OwnerSource::kWithStatement, w.taken_at);
    }
    for (uint64_t a : f->acquired) {
      if (cond && a == released) continue;
      add(a, OwnerSource::kAcquireCall, std::nullopt);
    }
  }
  if (t.ident) {
    for (const auto& [addr, lock] : p.locks) {
      if (lock.type != LockType::kRLock || !lock.owner_ident || *lock.owner_ident != *t.ident) {
        continue;
      }
      if (lock.locked == false) continue;
      if (cond && addr == released) continue;
      add(addr, OwnerSource::kRLockOwner, std::nullopt);
    }
  }
  for (const auto& [lock, tid] : p.trace_owners) {
    if (tid == t.tid) add(lock, OwnerSource::kTrace, std::nullopt);
  }
  return out;
}

struct OwnerAnswer {
  std::optional<pid_t> tid;
  OwnerSource source = OwnerSource::kUnknown;
  std::string detail;
};

OwnerAnswer OwnerOf(uint64_t lock, const ProcessFacts& p, const Index& idx,
                    const std::unordered_map<pid_t, std::vector<HeldLock>>& held) {
  OwnerAnswer a;
  if (auto it = p.trace_owners.find(lock); it != p.trace_owners.end()) {
    a.tid = it->second;
    a.source = OwnerSource::kTrace;
    a.detail = "threadscoped traces this process with --locks all";
    return a;
  }
  auto info = p.locks.find(lock);
  if (info != p.locks.end() && info->second.type == LockType::kRLock) {
    const LockInfo& l = info->second;
    if (l.owner_ident && *l.owner_ident != 0 && l.locked != false) {
      auto t = idx.by_ident.find(*l.owner_ident);
      if (t != idx.by_ident.end()) {
        a.tid = t->second;
        a.source = OwnerSource::kRLockOwner;
        a.detail = "the RLock's owner field";
        return a;
      }
      a.detail = "the RLock's owner field names ident " + ObjectId(*l.owner_ident) +
                 ", which is no thread of this process";
    }
  }
  for (OwnerSource source : {OwnerSource::kWithStatement, OwnerSource::kAcquireCall}) {
    std::vector<pid_t> holders;
    for (const auto& [tid, locks] : held) {
      for (const auto& h : locks) {
        if (h.lock == lock && h.source == source) holders.push_back(tid);
      }
    }
    if (holders.size() == 1) {
      a.tid = holders[0];
      a.source = source;
      a.detail = source == OwnerSource::kWithStatement
                     ? "a frame of the owner is inside `with` on this lock"
                     : "inferred: a frame of the owner holds this lock in a variable and its "
                       "code calls acquire() (it may have released it since)";
      return a;
    }
    if (holders.size() > 1) {
      a.detail = std::to_string(holders.size()) + " threads appear to hold it; not deciding";
      return a;
    }
  }
  if (a.detail.empty()) {
    a.detail = "no thread's frames or fields show who took it (a plain Lock records no owner)";
  }
  return a;
}

WaitKind KindFromStdlibClass(const std::string& cls, const std::string& file) {
  if (Basename(file) == "queue.py") return WaitKind::kQueue;
  if (cls == "Event") return WaitKind::kEvent;
  if (cls == "Semaphore" || cls == "BoundedSemaphore") return WaitKind::kSemaphore;
  if (cls == "Barrier") return WaitKind::kBarrier;
  if (cls == "Thread") return WaitKind::kJoin;
  return WaitKind::kCondition;
}

ThreadReport Classify(const ThreadFacts& t, const ProcessFacts& p, const Index& idx,
                      const std::unordered_map<pid_t, std::vector<HeldLock>>& held) {
  ThreadReport r;
  r.tid = t.tid;
  r.ident = t.ident;
  r.os_name = t.os_name;
  r.name = t.python_name.empty() ? t.os_name : t.python_name;
  r.is_main = t.is_main;
  r.holds_gil = t.holds_gil;
  r.stack_truncated = t.frames_truncated;
  r.native = t.native;
  for (const auto& f : t.frames) r.stack.push_back(f.where);
  if (!t.frames.empty()) r.locals = t.frames.front().locals;
  r.wait_frame = UserFrame(r.stack);
  r.syscall = t.blocked.syscall;
  if (auto it = held.find(t.tid); it != held.end()) {
    for (const auto& h : it->second) r.holds.push_back({ObjectId(h.lock), h.source, h.taken_at});
  }

  // The stdlib frames on top of the stack (threading.py, queue.py), innermost first.
  size_t stdlib = 0;
  while (stdlib < t.frames.size() && InStdlib(t.frames[stdlib].where)) ++stdlib;
  const bool in_futex =
      t.blocked.kind == BlockKind::kLock || t.blocked.kind == BlockKind::kUnidentifiedLock ||
      t.blocked.kind == BlockKind::kJoinHandle;

  switch (t.blocked.kind) {
    case BlockKind::kGil: {
      r.state = ThreadState::kGilWait;
      Wait w;
      w.kind = WaitKind::kGil;
      w.lock_id = "gil";
      w.detail = t.blocked.evidence;
      if (p.gil_holder && *p.gil_holder != t.tid) {
        w.owner = p.gil_holder;
        w.owner_source = OwnerSource::kGilState;
      }
      r.waiting_for = w;
      return r;
    }
    case BlockKind::kSleep:
      r.state = ThreadState::kSleeping;
      return r;
    case BlockKind::kSyscall:
      r.state = ThreadState::kSyscall;
      return r;
    case BlockKind::kNone:
      if (t.gil_requested == true) {
        r.state = ThreadState::kGilWait;
        Wait w;
        w.kind = WaitKind::kGil;
        w.lock_id = "gil";
        w.detail = "the thread state's gil_requested flag";
        if (p.gil_holder && *p.gil_holder != t.tid) {
          w.owner = p.gil_holder;
          w.owner_source = OwnerSource::kGilState;
        }
        r.waiting_for = w;
      } else if (t.holds_gil == true) {
        r.state = ThreadState::kRunning;
      } else if (t.frames.empty()) {
        r.state = ThreadState::kIdle;
      } else if (p.free_threaded) {
        r.state = ThreadState::kRunning;  // not in a system call: on a CPU, attached
      } else {
        r.state = ThreadState::kUnknown;
      }
      return r;
    case BlockKind::kLock:
    case BlockKind::kUnidentifiedLock:
    case BlockKind::kJoinHandle:
      break;
  }
  (void)in_futex;

  Wait w;
  w.detail = t.blocked.evidence;
  const uint64_t lock = t.blocked.kind == BlockKind::kLock ? t.blocked.object : 0;
  if (lock) w.lock_id = ObjectId(lock);

  // 3.13+: Thread.join parks on the handle's event; the handle names the thread.
  if (t.blocked.kind == BlockKind::kJoinHandle) {
    r.state = ThreadState::kJoinWait;
    w.kind = WaitKind::kJoin;
    for (size_t i = 0; i < stdlib; ++i) {
      if (ClassOf(t.frames[i]) == "Thread" && t.frames[i].self) {
        w.object_id = ObjectId(t.frames[i].self);
        w.object_type = t.frames[i].self_type;
      }
    }
    auto it = idx.by_ident.find(t.blocked.joined_ident);
    if (it != idx.by_ident.end()) {
      w.owner = it->second;
      w.owner_source = OwnerSource::kThreadHandle;
    } else {
      w.detail += "; the joined thread (ident " + ObjectId(t.blocked.joined_ident) +
                  ") has no thread state any more: it is finishing";
    }
    r.waiting_for = w;
    return r;
  }

  // Inside threading.py / queue.py: what the user called decides the kind.
  if (stdlib > 0) {
    const FrameFacts& top = t.frames[0];
    std::string fn = ShortName(top.where.function);
    if (InThreading(top.where) && fn == "_wait_for_tstate_lock") {
      // 3.4-3.12 Thread.join: acquires the sentinel lock the joined thread's end releases.
      r.state = ThreadState::kJoinWait;
      w.kind = WaitKind::kJoin;
      if (top.self) {
        w.object_id = ObjectId(top.self);
        w.object_type = top.self_type;
      }
      if (auto it = p.sentinels.find(lock); lock && it != p.sentinels.end()) {
        w.owner = it->second;
        w.owner_source = OwnerSource::kSentinel;
      } else {
        w.detail += "; no thread state holds this sentinel: the joined thread is finishing";
      }
      r.waiting_for = w;
      return r;
    }
    size_t cond_frame = stdlib;
    for (size_t i = 0; i < stdlib; ++i) {
      if (IsConditionWait(t.frames[i])) {
        cond_frame = i;
        break;
      }
    }
    if (cond_frame < stdlib) {
      // Condition.wait blocks on its private waiter lock until notify(). The object the user
      // waits on is the outermost stdlib frame's self (the Event, the Queue...).
      w.kind = WaitKind::kCondition;
      const FrameFacts* outer = &t.frames[cond_frame];
      for (size_t i = cond_frame; i < stdlib; ++i) {
        if (!t.frames[i].self) continue;
        WaitKind k = KindFromStdlibClass(ClassOf(t.frames[i]), t.frames[i].where.file);
        if (k != WaitKind::kCondition || i == cond_frame) {
          w.kind = k;
          outer = &t.frames[i];
        }
      }
      if (outer->self) {
        w.object_id = ObjectId(outer->self);
        w.object_type = outer->self_type;
      }
      if (w.kind == WaitKind::kJoin) {
        // 2.7's Thread.join waits on a Condition; the Thread object knows its thread.
        r.state = ThreadState::kJoinWait;
        if (auto it = p.thread_objects.find(outer->self); it != p.thread_objects.end()) {
          w.owner = it->second;
          w.owner_source = OwnerSource::kThreadObject;
        }
      } else {
        r.state = ThreadState::kConditionWait;
        w.detail += w.detail.empty() ? "" : "; ";
        w.detail += "woken by notify() from any thread: no owner";
      }
      r.waiting_for = w;
      return r;
    }
    if (ClassOf(top) == "RLock" && top.self) {
      // 2.7's threading.RLock is Python code around a plain lock: the RLock is `self`.
      auto info = p.locks.find(top.self);
      if (info != p.locks.end()) {
        r.state = ThreadState::kLockWait;
        w.kind = WaitKind::kRLock;
        w.lock_id = ObjectId(top.self);
        OwnerAnswer o = OwnerOf(top.self, p, idx, held);
        w.owner = o.tid;
        w.owner_source = o.source;
        if (!o.detail.empty()) w.detail += (w.detail.empty() ? "" : "; ") + o.detail;
        r.waiting_for = w;
        return r;
      }
    }
  }

  r.state = ThreadState::kLockWait;
  auto info = lock ? p.locks.find(lock) : p.locks.end();
  w.kind = info != p.locks.end() && info->second.type == LockType::kRLock ? WaitKind::kRLock
                                                                          : WaitKind::kLock;
  if (!lock) {
    w.detail += (w.detail.empty() ? "" : "; ") +
                std::string("which lock could not be told from the frames");
    r.waiting_for = w;
    return r;
  }
  OwnerAnswer o = OwnerOf(lock, p, idx, held);
  w.owner = o.tid;
  w.owner_source = o.source;
  if (!o.detail.empty()) w.detail += (w.detail.empty() ? "" : "; ") + o.detail;
  r.waiting_for = w;
  return r;
}

std::vector<DeadlockReport> Cycles(const std::vector<ThreadReport>& threads) {
  std::unordered_map<pid_t, const ThreadReport*> by_tid;
  for (const auto& t : threads) by_tid[t.tid] = &t;
  auto next = [&](pid_t tid) -> std::optional<pid_t> {
    auto it = by_tid.find(tid);
    if (it == by_tid.end() || !it->second->waiting_for) return std::nullopt;
    const Wait& w = *it->second->waiting_for;
    if (!w.owner || !IsProven(w.owner_source)) return std::nullopt;
    return w.owner;
  };
  std::vector<DeadlockReport> out;
  std::set<std::vector<pid_t>> seen;
  for (const auto& start : threads) {
    std::vector<pid_t> path;
    std::optional<pid_t> cur = start.tid;
    while (cur && path.size() <= threads.size()) {
      auto pos = std::find(path.begin(), path.end(), *cur);
      if (pos != path.end()) {
        std::vector<pid_t> cycle(pos, path.end());
        auto min = std::min_element(cycle.begin(), cycle.end());
        std::rotate(cycle.begin(), min, cycle.end());
        if (seen.insert(cycle).second) {
          DeadlockReport d;
          d.threads = cycle;
          for (size_t i = 0; i < cycle.size(); ++i) {
            const ThreadReport& t = *by_tid.at(cycle[i]);
            const Wait& w = *t.waiting_for;
            std::string id = !w.lock_id.empty() ? w.lock_id : w.object_id;
            d.locks.push_back(id);
            d.wait_at.push_back(t.wait_frame ? std::optional<Frame>(t.stack[*t.wait_frame])
                                             : std::nullopt);
            std::optional<Frame> taken;
            const ThreadReport& owner = *by_tid.at(cycle[(i + 1) % cycle.size()]);
            for (const auto& h : owner.holds) {
              if (h.lock_id == w.lock_id) taken = h.taken_at;
            }
            d.taken_at.push_back(taken);
          }
          out.push_back(std::move(d));
        }
        break;
      }
      path.push_back(*cur);
      cur = next(*cur);
    }
  }
  return out;
}

}  // namespace

std::optional<size_t> UserFrame(const std::vector<Frame>& stack) {
  for (size_t i = 0; i < stack.size(); ++i) {
    if (!InStdlib(stack[i])) return i;
  }
  return stack.empty() ? std::nullopt : std::optional<size_t>(0);
}

DumpReport Analyze(const ProcessFacts& p) {
  DumpReport r;
  r.pid = p.pid;
  r.python_version = p.python_version;
  r.executable = p.executable;
  r.free_threaded = p.free_threaded;
  r.layout_source = p.layout_source;
  r.notes = p.notes;
  Index idx;
  for (const auto& t : p.threads) {
    if (t.ident) idx.by_ident[*t.ident] = t.tid;
    idx.by_tid[t.tid] = &t;
  }
  std::unordered_map<pid_t, std::vector<HeldLock>> held;
  for (const auto& t : p.threads) {
    auto h = HeldBy(t, p);
    if (!h.empty()) held[t.tid] = std::move(h);
  }
  for (const auto& t : p.threads) r.threads.push_back(Classify(t, p, idx, held));
  r.deadlocks = Cycles(r.threads);
  return r;
}

}  // namespace threadscope::dump
