// Over 600 lines for one reason: ProcessReader::Impl is one pass over a process's memory whose
// steps share its caches (code objects, types, lock objects seen) and its budget: interpreters
// and thread states, frames with their `with` blocks, the GIL, futex waits resolved to locks,
// acquire() calls. Apart, each step would re-read or pass the caches around.
#include "daemon/dump/reader.h"

#include <algorithm>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "daemon/dump/bytecode.h"
#include "daemon/dump/objects.h"
#include "daemon/target/py_code.h"

namespace threadscope::dump {

namespace {

constexpr int kMaxInterpreters = 8;
constexpr uint32_t kMaxSlots = 4096;      // locals + value stack of one frame
constexpr uint32_t kMaxCandidateSlots = 1024;
constexpr int kSetupFinally = 122;  // the block type 3.6-3.10's SETUP_WITH pushes
constexpr int kSetupWith = 143;     // ... and 2.7's (the opcode itself)
constexpr int kMaxBlocks = 20;             // CO_MAXBLOCKS
// glibc's struct pthread keeps the kernel tid at this offset on x86-64 (2.36 here and 2.42 in
// the Debian unstable root, measured: *(pid_t *)(pthread_self() + 720) == gettid()). Used
// only when no register says which thread a pthread_t is, and always checked against /proc.
constexpr uint64_t kPthreadTidOffset = 720;

struct CodeInfo {
  uint64_t filename_obj = 0;  // identity: a code object freed and its address reused differs
  std::string file = "?";
  std::string function = "?";
  int firstlineno = 0;
  std::string linetable;
  int argcount = 0;
  uint32_t nslots = 0;  // locals + cells + frees (localsplus)
  uint32_t stacksize = 0;
  int64_t code_units = 0;
  int firsttraceable = 0;
  std::vector<std::string> names;  // of the localsplus slots
  // co_names (globals and attributes the code uses), when it calls something `acquire`.
  bool calls_acquire = false;
  std::vector<std::string> global_names;
  std::vector<ExceptionEntry> exceptions;
  std::string code;  // <= 3.10: co_code
};

// A value a blocked thread's innermost frames hold, to tell which lock its futex belongs to.
// Examined lazily, most likely first: a local named like a lock, then the value stack from the
// top, then the other locals.
struct Candidate {
  uint64_t object = 0;
  int rank = 0;
};

bool IsStdlibFile(const std::string& file) {
  auto slash = file.rfind('/');
  std::string base = slash == std::string::npos ? file : file.substr(slash + 1);
  return base == "threading.py" || base == "queue.py";
}

}  // namespace

struct ReadCache::Impl {
  std::unordered_map<uint64_t, CodeInfo> codes;
  std::unordered_map<uint64_t, std::string> type_names;
};
ReadCache::ReadCache() : impl(std::make_unique<Impl>()) {}
ReadCache::~ReadCache() = default;

class ProcessReader::Impl {
 public:
  // Where a frame's values live, for the acquire() evidence read once waits are known.
  struct RawFrame {
    uint64_t code = 0;
    uint64_t slots = 0;
    uint32_t nslots = 0;
    uint64_t globals = 0;
  };
  Impl(const MemoryReader& memory, const ResolvedLayout& layout,
         const std::vector<TaskContext>& tasks, pid_t pid, const ReadOptions& options,
         const NativeSymbolizer& symbolize, ReadCache* cache, PendingReads* pending)
      : m_(memory), resolved_(layout), l_(layout.layout), a_(layout.addr),
        cache_(cache ? cache->impl.get() : &own_cache_),
        o_(memory, layout, &cache_->type_names), tasks_(tasks), pid_(pid), opt_(options),
        symbolize_(symbolize), pending_(pending ? pending : &own_pending_) {}

  StatusOr<ProcessFacts> Run() {
    TS_RETURN_IF_ERROR(ReadThreads());
    return Finish(tasks_);
  }
  // Phase 1: interpreters, thread states, frames. Needs no registers: it can run while the
  // interrupted threads are still on their way into the stop.
  Status ReadThreads();
  // Phase 2, with every thread stopped: which task each thread state is, system calls,
  // futexes, lock objects.
  StatusOr<ProcessFacts> Finish(const std::vector<TaskContext>& tasks);
  // The reads PendingReads holds, into facts.
  void Complete(const PendingReads& pending, ProcessFacts* facts);

 private:
  uint64_t Ptr(uint64_t addr) const { return ReadU64(m_, addr).value_or(0); }
  uint64_t Slot(uint64_t addr) const {
    uint64_t v = Ptr(addr);
    if (!l_.stackrefs) return v;
    if ((v & 3) == 3) return 0;  // a tagged int, not an object
    return v & ~uint64_t{3};
  }
  const CodeInfo* Code(uint64_t code);
  std::optional<int> LineAt(const CodeInfo& ci, int64_t units_or_bytes) const;
  void ReadFrames(uint64_t tstate, ThreadFacts& t, std::vector<Candidate>* candidates,
                  std::vector<RawFrame>* raw);
  void AddWith(FrameFacts& f, uint64_t object, const CodeInfo& ci, std::optional<uint32_t> at);
  uint64_t ConditionLock(uint64_t cond);
  // `rsp`: the thread's stack pointer when registers are known, else 0.
  void ResolveFutex(ThreadFacts& t, uint64_t uaddr, const std::vector<Candidate>& candidates,
                    uint64_t rsp);
  void ClassifySyscall(ThreadFacts& t, const TaskContext& task,
                       const std::vector<Candidate>& candidates);
  void ReadGil(const std::vector<uint64_t>& interps);
  void NoteLock(uint64_t obj);
  std::string StdlibClass(uint64_t obj);
  std::optional<pid_t> TidForIdent(uint64_t ident) const;

  const MemoryReader& m_;
  const ResolvedLayout& resolved_;
  const DumpLayout& l_;
  const RuntimeAddresses& a_;
  ReadCache::Impl own_cache_;
  ReadCache::Impl* cache_;
  ObjectReader o_;
  const std::vector<TaskContext>& tasks_;
  struct PyThread {
    uint64_t tstate;
    ThreadFacts facts;
    std::vector<Candidate> candidates;
    uint64_t sentinel_ref = 0;
    std::vector<RawFrame> raw;  // one per facts.frames entry
  };
  std::unordered_map<pid_t, std::vector<RawFrame>> raw_by_tid_;
  void FindAcquires();
  std::vector<PyThread> py_;
  pid_t pid_;
  ReadOptions opt_;
  const NativeSymbolizer& symbolize_;
  PendingReads* pending_;
  PendingReads own_pending_;

  ProcessFacts facts_;
  std::unordered_map<uint64_t, pid_t> tid_by_fsbase_;
  std::unordered_set<pid_t> task_tids_;
  std::unordered_map<uint64_t, pid_t> tid_by_ident_;
  // GIL: address ranges whose futexes mean "waiting for the GIL", and the holder's tstate.
  std::vector<std::pair<uint64_t, uint64_t>> gil_ranges_;
  uint64_t gil_sem_ = 0;  // 2.7
  std::optional<uint64_t> gil_holder_tstate_;
  bool gil_disabled_ = false;
};

const CodeInfo* ProcessReader::Impl::Code(uint64_t code) {
  if (!code || !a_.code_type || o_.TypeOf(code) != a_.code_type) return nullptr;
  const uint64_t filename_obj = Ptr(code + l_.code_filename);
  auto& codes = cache_->codes;
  auto it = codes.find(code);
  if (it != codes.end() && it->second.filename_obj == filename_obj) return &it->second;
  if (codes.size() > 65536) codes.clear();
  CodeInfo ci;
  ci.filename_obj = filename_obj;
  ci.file = o_.Str(filename_obj).value_or("?");
  uint32_t name_off = l_.code_qualname >= 0 ? static_cast<uint32_t>(l_.code_qualname)
                                            : l_.code_name;
  ci.function = o_.Str(Ptr(code + name_off)).value_or("?");
  ci.firstlineno = ReadI32(m_, code + l_.code_firstlineno).value_or(0);
  ci.linetable = o_.Bytes(Ptr(code + l_.code_linetable)).value_or("");
  ci.argcount = ReadI32(m_, code + l_.code_argcount).value_or(0);
  int32_t stacksize = ReadI32(m_, code + l_.code_stacksize).value_or(0);
  ci.stacksize = stacksize > 0 && stacksize < 65536 ? static_cast<uint32_t>(stacksize) : 0;
  auto names_of = [&](int32_t off) {
    std::vector<std::string> out;
    if (off < 0) return out;
    if (auto t = o_.Tuple(Ptr(code + static_cast<uint32_t>(off)), kMaxSlots)) {
      for (uint64_t n : *t) out.push_back(o_.Str(n, 128).value_or("?"));
    }
    return out;
  };
  {
    std::vector<std::string> co_names = names_of(static_cast<int32_t>(l_.code_names));
    ci.calls_acquire =
        std::find(co_names.begin(), co_names.end(), "acquire") != co_names.end();
    if (ci.calls_acquire && co_names.size() <= 64) ci.global_names = std::move(co_names);
  }
  if (l_.frame_objects) {
    int32_t nlocals = ReadI32(m_, code + static_cast<uint32_t>(l_.code_nlocals)).value_or(0);
    ci.names = names_of(l_.code_varnames);
    ci.names.resize(nlocals >= 0 && nlocals < static_cast<int32_t>(kMaxSlots)
                        ? static_cast<size_t>(nlocals) : ci.names.size());
    for (int32_t off : {l_.code_cellvars, l_.code_freevars}) {
      auto more = names_of(off);
      ci.names.insert(ci.names.end(), more.begin(), more.end());
    }
    ci.nslots = static_cast<uint32_t>(std::min<size_t>(ci.names.size(), kMaxSlots));
    ci.code = o_.Bytes(Ptr(code + static_cast<uint32_t>(l_.code_code))).value_or("");
    ci.code_units = static_cast<int64_t>(ci.code.size()) / (l_.py2_strings ? 1 : 2);
  } else {
    int32_t n = ReadI32(m_, code + static_cast<uint32_t>(l_.code_nlocalsplus)).value_or(0);
    ci.nslots = n > 0 && n < static_cast<int32_t>(kMaxSlots) ? static_cast<uint32_t>(n) : 0;
    ci.names = names_of(l_.code_localsplusnames);
    if (auto t = o_.Bytes(Ptr(code + static_cast<uint32_t>(l_.code_exceptiontable)))) {
      ci.exceptions = ParseExceptionTable(*t);
    }
    int64_t units = 0;
    if (m_.Read(code + l_.ob_size, &units, 8) && units > 0) ci.code_units = units;
    if (l_.code_firsttraceable >= 0) {
      ci.firsttraceable =
          ReadI32(m_, code + static_cast<uint32_t>(l_.code_firsttraceable)).value_or(0);
    }
  }
  return &(codes[code] = std::move(ci));
}

std::optional<int> ProcessReader::Impl::LineAt(const CodeInfo& ci, int64_t offset) const {
  if (offset < 0) return std::nullopt;
  switch (l_.line_format) {
    case LineFormat::kLnotab27:
      return Line27(ci.linetable, ci.firstlineno, offset);
    case LineFormat::kLnotab36:
      return target::LineForOffset(target::LineTableFormat::kLnotab36, ci.linetable,
                                   ci.firstlineno, offset);
    case LineFormat::kLinetable310:
      return target::LineForOffset(target::LineTableFormat::kLinetable310, ci.linetable,
                                   ci.firstlineno, offset);
    case LineFormat::kLocations311:
      return target::LineForOffset(target::LineTableFormat::kLocations311, ci.linetable,
                                   ci.firstlineno, offset);
  }
  return std::nullopt;
}

std::string ProcessReader::Impl::StdlibClass(uint64_t obj) {
  static const std::set<std::string> kKnown = {
      "Thread", "Condition", "_Condition", "Event", "_Event", "Semaphore", "_Semaphore",
      "BoundedSemaphore", "_BoundedSemaphore", "Barrier", "_RLock", "Queue", "LifoQueue",
      "PriorityQueue", "_MainThread", "_DummyThread", "Timer", "_Timer"};
  for (const auto& name : o_.TypeChain(o_.TypeOf(obj))) {
    if (kKnown.count(name)) {
      if (name == "_MainThread" || name == "_DummyThread" || name == "Timer" ||
          name == "_Timer") {
        return "Thread";
      }
      if (name == "LifoQueue" || name == "PriorityQueue") return "Queue";
      return name[0] == '_' && name != "_RLock" ? name.substr(1) : name;
    }
  }
  return "";
}

uint64_t ProcessReader::Impl::ConditionLock(uint64_t cond) {
  auto it = facts_.condition_locks.find(cond);
  if (it != facts_.condition_locks.end()) return it->second;
  if (StdlibClass(cond) != "Condition") return 0;
  auto lock = o_.GetAttr(cond, l_.major == 2 ? "_Condition__lock" : "_lock");
  uint64_t out = lock && o_.IsLock(*lock) ? *lock : 0;
  if (out) {
    facts_.condition_locks[cond] = out;
    NoteLock(out);
  }
  return out;
}

void ProcessReader::Impl::NoteLock(uint64_t obj) {
  if (!obj || facts_.locks.count(obj)) return;
  if (auto info = o_.Lock(obj)) facts_.locks[obj] = *info;
}

void ProcessReader::Impl::AddWith(FrameFacts& f, uint64_t object, const CodeInfo& ci,
                     std::optional<uint32_t> at) {
  if (!object) return;
  for (const auto& w : f.withs) {
    if (w.object == object) return;  // a try/finally inside the with shows the same exit
  }
  WithHold w;
  w.object = object;
  w.type = o_.TypeNameOf(object);
  if (o_.IsLock(object)) {
    w.lock = object;
    NoteLock(object);
  } else {
    w.lock = ConditionLock(object);
  }
  if (!w.lock) return;  // only locks (and the locks of Conditions) are held
  w.taken_at.file = ci.file;
  w.taken_at.function = ci.function;
  if (at) w.taken_at.line = LineAt(ci, *at);
  f.withs.push_back(std::move(w));
}

void ProcessReader::Impl::ReadFrames(uint64_t tstate, ThreadFacts& t,
                                     std::vector<Candidate>* candidates,
                                     std::vector<RawFrame>* raw) {
  uint64_t f = Ptr(tstate + l_.tstate_frame);
  if (l_.cframe_current >= 0 && f) f = Ptr(f + static_cast<uint32_t>(l_.cframe_current));
  std::unordered_set<uint64_t> seen;
  const uint8_t cstack_owner = l_.minor >= 14 ? 4 : 3;
  bool top_stdlib = true;  // still in the stdlib frames on top of the stack
  size_t steps = 0;
  while (f && steps++ < opt_.max_frames * 2) {
    if (!seen.insert(f).second) {
      facts_.notes.push_back("thread " + std::to_string(t.tid) + ": its frame chain loops");
      break;
    }
    if (t.frames.size() >= opt_.max_frames) {
      t.frames_truncated = true;
      break;
    }
    const uint64_t frame = f;
    f = Ptr(frame + l_.frame_back);
    uint64_t code;
    int64_t offset;       // what the line table takes: bytes (<= 3.9, 2.7) or code units
    uint32_t offset_units;  // the instruction, in units, for exception tables
    uint64_t slots;       // localsplus
    if (l_.frame_objects) {
      code = Ptr(frame + l_.frame_code);
      int32_t lasti = ReadI32(m_, frame + l_.frame_lasti).value_or(-1);
      offset = lasti;
      offset_units = static_cast<uint32_t>(std::max(lasti, 0));
      slots = frame + l_.frame_localsplus;
    } else {
      if (l_.frame_owner >= 0) {
        auto owner = ReadU8(m_, frame + static_cast<uint32_t>(l_.frame_owner));
        if (owner && *owner >= cstack_owner) continue;  // C-stack / interpreter entry frames
      }
      code = Slot(frame + l_.frame_code);
      if (!code || code == a_.none) continue;
      uint64_t instr = Ptr(frame + l_.frame_instr);
      uint64_t base = code + static_cast<uint64_t>(l_.code_adaptive);
      if (l_.code_tlbc >= 0 && l_.frame_tlbc_index >= 0) {
        int32_t idx = ReadI32(m_, frame + static_cast<uint32_t>(l_.frame_tlbc_index)).value_or(0);
        uint64_t arr = Ptr(code + static_cast<uint32_t>(l_.code_tlbc));
        int64_t n = 0;
        if (idx > 0 && arr && m_.Read(arr, &n, 8) && idx < n && n < 4096) {
          base = Ptr(arr + 8 + static_cast<uint64_t>(idx) * 8);
        }
      }
      offset = (static_cast<int64_t>(instr) - static_cast<int64_t>(base)) / 2;
      offset_units = static_cast<uint32_t>(std::max<int64_t>(offset, 0));
      slots = frame + l_.frame_localsplus;
    }
    const CodeInfo* ci = Code(code);
    FrameFacts ff;
    ff.code = code;
    if (!ci) {
      ff.where.file = "?";
      ff.where.function = "?";
      t.frames.push_back(std::move(ff));
      if (raw) raw->push_back({});
      continue;
    }
    if (!l_.frame_objects) {
      if (offset < -1 || offset >= ci->code_units) {
        // A frame whose instruction is outside its code: memory changed under us.
        ff.where.file = ci->file;
        ff.where.function = ci->function;
        t.frames.push_back(std::move(ff));
        if (raw) raw->push_back({});
        continue;
      }
      if (offset < ci->firsttraceable) continue;  // _PyFrame_IsIncomplete: not started yet
    }
    ff.where.file = ci->file;
    ff.where.function = ci->function;
    ff.where.line = LineAt(*ci, offset);

    // `self`: the first argument, when it is called that. What it is matters only for the
    // stdlib frames on top of the stack (which Condition, Event, Thread is waited on); the
    // others' types are not read, to keep the pause short.
    const bool stdlib = IsStdlibFile(ci->file);
    top_stdlib = top_stdlib && stdlib;
    if (ci->argcount >= 1 && !ci->names.empty() && ci->names[0] == "self") {
      uint64_t self = Slot(slots);
      if (self && top_stdlib && o_.TypeNameOf(self) == "cell") self = Ptr(self + l_.ob_type + 8);
      if (self) {
        ff.self = self;
        if (top_stdlib) {
          ff.self_type = o_.TypeNameOf(self);
          ff.self_stdlib_class = StdlibClass(self);
        }
      }
    }

    // The `with` blocks this frame is inside.
    const uint64_t stack = slots + static_cast<uint64_t>(ci->nslots) * 8;
    if (l_.frame_objects) {
      int32_t iblock = ReadI32(m_, frame + l_.frame_iblock).value_or(0);
      uint64_t valuestack = Ptr(frame + l_.frame_valuestack);
      if (iblock > 0 && iblock <= kMaxBlocks && valuestack) {
        std::vector<int32_t> blocks(static_cast<size_t>(iblock) * 3);
        if (m_.Read(frame + l_.frame_blockstack, blocks.data(), blocks.size() * 4)) {
          for (int32_t b = 0; b < iblock; ++b) {
            int32_t type = blocks[b * 3], handler = blocks[b * 3 + 1], level = blocks[b * 3 + 2];
            if ((type != kSetupFinally && type != kSetupWith) || level < 1 ||
                level > static_cast<int32_t>(ci->stacksize)) {
              continue;
            }
            // SETUP_WITH left the bound __exit__ just below the block's level.
            uint64_t exit = Ptr(valuestack + static_cast<uint64_t>(level - 1) * 8);
            std::string name;
            auto self = o_.BoundSelf(exit, &name);
            if (!self || (!name.empty() && name != "__exit__")) continue;
            AddWith(ff, *self, *ci,
                    SetupWithFor(ci->code, static_cast<uint32_t>(handler), l_.py2_strings,
                                 l_.lasti_in_units));
          }
        }
      }
    } else if (const ExceptionEntry* e = CoveringEntry(ci->exceptions, offset_units)) {
      // Items below the handler's depth are live at this instruction; a `with` keeps its
      // exit there (3.11-3.13: the bound __exit__; 3.14+: __exit__ and self, two slots).
      uint32_t depth = std::min<uint32_t>(e->depth, ci->stacksize);
      std::vector<uint64_t> live(depth);
      for (uint32_t s = 0; s < depth; ++s) live[s] = Slot(stack + s * 8);
      for (uint32_t s = 0; s < depth; ++s) {
        if (l_.minor >= 14) {
          if (s == 0 || !live[s] || !live[s - 1]) continue;
          std::string name;
          bool descr = o_.IsMethodDescriptor(live[s - 1], &name) && name == "__exit__";
          bool func = o_.TypeNameOf(live[s - 1]) == "function";
          if (!descr && !func) continue;
          AddWith(ff, live[s], *ci, WithStatementOffset(ci->exceptions, offset_units, s + 1));
        } else {
          std::string name;
          auto self = o_.BoundSelf(live[s], &name);
          if (!self || (!name.empty() && name != "__exit__")) continue;
          AddWith(ff, *self, *ci, WithStatementOffset(ci->exceptions, offset_units, s + 1));
        }
      }
    }

    // Values this frame holds, for telling which lock a futex belongs to (examined only if
    // the thread turns out to sleep on one).
    if (t.frames.size() < 2 && candidates) {
      uint32_t n = std::min<uint32_t>(ci->nslots + ci->stacksize, kMaxCandidateSlots);
      std::vector<uint64_t> raw(n);
      if (n && m_.Read(slots, raw.data(), n * 8)) {
        const int frame_rank = static_cast<int>(t.frames.size()) * 3;
        auto clean = [&](uint64_t v) { return l_.stackrefs ? ((v & 3) == 3 ? 0 : v & ~3ull) : v; };
        // The value stack from its top down, then the locals (a lock-like name first).
        for (uint32_t i = n; i-- > ci->nslots;) {
          if (uint64_t v = clean(raw[i])) candidates->push_back({v, frame_rank + 1});
        }
        for (uint32_t i = 0; i < std::min(n, ci->nslots); ++i) {
          uint64_t v = clean(raw[i]);
          if (!v) continue;
          const std::string& name = i < ci->names.size() ? ci->names[i] : "";
          bool lockish = name == "waiter" || name.find("lock") != std::string::npos;
          candidates->push_back({v, frame_rank + (lockish ? 0 : 2)});
        }
      }
    }

    if (opt_.locals && t.frames.empty()) {
      for (uint32_t i = 0; i < ci->nslots && i < ci->names.size() && i < 64; ++i) {
        uint64_t v = Slot(slots + i * 8);
        if (!v) continue;
        if (o_.TypeNameOf(v) == "cell") v = Ptr(v + l_.ob_type + 8);
        if (!v) continue;
        auto [type, value] = o_.Describe(v);
        ff.locals.push_back({ci->names[i], type, value, v});
      }
    }
    if (raw) {
      raw->push_back({ci->calls_acquire ? code : 0, slots, ci->nslots,
                      ci->calls_acquire ? Ptr(frame + l_.frame_globals) : 0});
    }
    t.frames.push_back(std::move(ff));
  }
}

void ProcessReader::Impl::ReadGil(const std::vector<uint64_t>& interps) {
  switch (l_.gil) {
    case GilKind::k27:
      if (a_.interpreter_lock) gil_sem_ = Ptr(a_.interpreter_lock);
      if (!a_.interpreter_lock) {
        facts_.notes.push_back("interpreter_lock is not in the symbol table: GIL waits are not "
                               "told apart from other waits");
      }
      if (a_.tstate_current) {
        uint64_t cur = Ptr(a_.tstate_current);
        if (cur) gil_holder_tstate_ = cur;
      }
      return;
    case GilKind::kStatics36: {
      if (a_.gil_statics[2]) gil_ranges_.push_back({a_.gil_statics[2], a_.gil_statics[2] + 48});
      if (a_.gil_statics[3]) gil_ranges_.push_back({a_.gil_statics[3], a_.gil_statics[3] + 40});
      if (a_.gil_statics[0] && a_.gil_statics[1]) {
        if (ReadI32(m_, a_.gil_statics[0]).value_or(0) == 1) {
          gil_holder_tstate_ = Ptr(a_.gil_statics[1]);
        }
      } else if (a_.tstate_current) {
        uint64_t cur = Ptr(a_.tstate_current);
        if (cur) gil_holder_tstate_ = cur;
      }
      return;
    }
    case GilKind::kRuntime:
    case GilKind::kInterpPtr: {
      std::vector<uint64_t> gils;
      if (l_.gil == GilKind::kRuntime) {
        gils.push_back(a_.runtime + l_.gil_offset);
      } else {
        for (uint64_t interp : interps) {
          uint64_t g = Ptr(interp + l_.gil_offset);
          if (g && std::find(gils.begin(), gils.end(), g) == gils.end()) gils.push_back(g);
        }
      }
      for (uint64_t g : gils) {
        gil_ranges_.push_back({g, g + l_.gil_size});
        if (l_.free_threaded && ReadI32(m_, g).value_or(0) == 0) {
          gil_disabled_ = true;  // `enabled` == 0: the free-threaded build runs without it
          continue;
        }
        if (ReadI32(m_, g + l_.gil_locked).value_or(0) == 1) {
          uint64_t holder = Ptr(g + l_.gil_last_holder);
          if (holder) gil_holder_tstate_ = holder;
        }
      }
      return;
    }
  }
}

std::optional<pid_t> ProcessReader::Impl::TidForIdent(uint64_t ident) const {
  if (auto it = tid_by_fsbase_.find(ident); it != tid_by_fsbase_.end()) return it->second;
  if (!ident) return std::nullopt;
  auto tid = ReadI32(m_, ident + kPthreadTidOffset);
  if (tid && task_tids_.count(*tid)) return *tid;
  return std::nullopt;
}

void ProcessReader::Impl::ResolveFutex(ThreadFacts& t, uint64_t uaddr,
                                       const std::vector<Candidate>& cand, uint64_t rsp) {
  Blocked& b = t.blocked;
  b.futex = uaddr;
  char hex[32];
  std::snprintf(hex, sizeof(hex), "0x%llx", static_cast<unsigned long long>(uaddr));
  for (const auto& [lo, hi] : gil_ranges_) {
    if (uaddr >= lo && uaddr < hi) {
      b.kind = BlockKind::kGil;
      uint64_t off = uaddr - lo - (l_.free_threaded ? 8 : 0);
      b.evidence = std::string("futex ") + hex +
                   (l_.gil == GilKind::kStatics36 ? " is the GIL's condition variable or mutex"
                    : off >= 120 ? " is the GIL's switch condition (dropping it on request)"
                    : off >= 80  ? " is the GIL's mutex"
                                 : " is the GIL's condition variable (take_gil)");
      return;
    }
  }
  if (gil_sem_ && uaddr == gil_sem_) {
    b.kind = BlockKind::kGil;
    b.evidence = std::string("futex ") + hex + " is interpreter_lock's semaphore (the GIL)";
    return;
  }
  // 3.13+ parking lot: the thread sleeps on the semaphore inside its wait_entry, whose `addr`
  // field (8 bytes before it) is what it parked on: a lock's PyMutex, a ThreadHandle's event.
  if (l_.major == 3 && l_.minor >= 13) {
    uint64_t parked = Ptr(uaddr - 8);
    if (parked) {
      uint64_t obj = parked - l_.lock_handle;
      if (o_.IsLock(obj)) {
        b.kind = BlockKind::kLock;
        b.object = obj;
        b.evidence = "parked on the lock's mutex (parking-lot entry at " + std::string(hex) + ")";
        return;
      }
      // ThreadHandle {..., ident@32, os_handle@40, has_os_handle@48, state@52, mutex@56,
      // thread_is_exiting@57}: Thread.join waits on thread_is_exiting.
      uint64_t handle = parked - 57;
      int32_t state = ReadI32(m_, handle + 52).value_or(0);
      int32_t has = ReadI32(m_, handle + 48).value_or(-1);
      uint64_t ident = Ptr(handle + 32);
      if (ident && state >= 1 && state <= 4 && (has == 0 || has == 1)) {
        b.kind = BlockKind::kJoinHandle;
        b.joined_ident = ident;
        b.evidence = "parked on a ThreadHandle's thread_is_exiting event";
        return;
      }
    }
  }
  // Semaphore-based locks (<= 3.13): the futex is the lock's sem_t; find the frame value whose
  // semaphore it is (a lock, or a bound method of one: `with L:` leaves L.__exit__ there).
  std::vector<Candidate> ordered(cand.begin(), cand.end());
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const Candidate& x, const Candidate& y) { return x.rank < y.rank; });
  std::unordered_set<uint64_t> tried;
  bool lockish = false;
  auto try_lock = [&](uint64_t obj) -> bool {
    if (!obj || !tried.insert(obj).second || !o_.IsLock(obj)) return false;
    lockish = true;
    uint64_t sem = o_.LockSemaphore(obj);
    if (!sem && o_.TypeNameOf(obj) == "_RLock") {
      // A Python RLock: its __block is the lock.
      if (auto block = o_.GetAttr(obj, l_.major == 2 ? "_RLock__block" : "_block")) {
        sem = o_.LockSemaphore(*block);
        if (sem == uaddr) obj = *block;
      }
    }
    if (!sem || sem != uaddr) return false;
    b.kind = BlockKind::kLock;
    b.object = obj;
    b.evidence = "futex " + std::string(hex) + " is the lock's semaphore";
    return true;
  };
  for (const auto& c : ordered) {
    if (try_lock(c.object)) return;
    if (auto self = o_.BoundSelf(c.object); self && try_lock(*self)) return;
  }
  // 3.13+ with the parking-lot entry unreadable (gdb 13's gcore writes no thread stack whose
  // mapping holds glibc 2.42's in-place guard pages): the futex is on the thread's own stack,
  // so it is parked; its frames say on what. Evidence, said as such.
  const bool on_stack = rsp ? uaddr >= rsp && uaddr - rsp < (1u << 20) : true;
  if (l_.major == 3 && l_.minor >= 13 && on_stack && !Ptr(uaddr - 8)) {
    for (const auto& f : t.frames) {
      if (!IsStdlibFile(f.where.file)) break;
      if (f.self_stdlib_class != "Thread" || f.where.function.find("join") == std::string::npos) {
        continue;
      }
      for (const char* attr : {"_handle", "_os_thread_handle"}) {
        auto h = o_.GetAttr(f.self, attr);
        uint64_t handle = h ? Ptr(*h + l_.ob_type + 8) : 0;  // PyThreadHandleObject.handle
        uint64_t ident = handle ? Ptr(handle + 32) : 0;
        if (ident) {
          b.kind = BlockKind::kJoinHandle;
          b.joined_ident = ident;
          b.evidence = "parked (its parking-lot entry is not readable here) in Thread.join "
                       "of the thread whose handle names ident " + ObjectId(ident);
          return;
        }
      }
    }
    tried.clear();
    for (const auto& c : ordered) {
      for (uint64_t obj : {c.object, o_.BoundSelf(c.object).value_or(0)}) {
        if (!obj || !tried.insert(obj).second || !o_.IsLock(obj) || o_.LockSemaphore(obj)) {
          continue;
        }
        auto mutex = ReadU8(m_, obj + l_.lock_handle);
        if (!mutex || !(*mutex & 1)) continue;  // not held: nothing to park on
        b.kind = BlockKind::kLock;
        b.object = obj;
        b.evidence = "parked (its parking-lot entry is not readable here) while its frame "
                     "acquires this lock, which is held" +
                     std::string(*mutex & 2 ? " with waiters parked" : "");
        return;
      }
    }
  }
  if (lockish) {
    b.kind = BlockKind::kUnidentifiedLock;
    b.evidence = "futex " + std::string(hex) + " (no lock object in its frames matches it)";
  } else {
    b.kind = BlockKind::kSyscall;
    b.syscall = "futex";
    b.evidence = "futex " + std::string(hex) + " (not a Python lock, not the GIL)";
  }
}

void ProcessReader::Impl::ClassifySyscall(ThreadFacts& t, const TaskContext& task,
                             const std::vector<Candidate>& cand) {
  if (!task.syscall) return;
  const SyscallState& s = *task.syscall;
  Blocked& b = t.blocked;
  switch (s.nr) {
    case 202: {  // futex(uaddr, op, ...)
      uint32_t op = static_cast<uint32_t>(s.args[1]) & 127;
      if (op == 0 || op == 9) {  // FUTEX_WAIT, FUTEX_WAIT_BITSET
        ResolveFutex(t, s.args[0], cand, task.regs ? task.regs->rsp : 0);
        return;
      }
      break;
    }
    case 35:   // nanosleep
    case 230:  // clock_nanosleep
      b.kind = BlockKind::kSleep;
      b.syscall = SyscallName(s.nr);
      return;
    case 23:   // select(nfds, ...): time.sleep before 3.11 is select(0, NULL, NULL, NULL, &tv)
    case 270:  // pselect6
    case 7:    // poll(fds, nfds, timeout)
    case 271:  // ppoll
      if ((s.nr == 7 || s.nr == 271 ? s.args[1] : s.args[0]) == 0) {
        b.kind = BlockKind::kSleep;
        b.syscall = SyscallName(s.nr);
        return;
      }
      break;
    default:
      break;
  }
  b.kind = BlockKind::kSyscall;
  b.syscall = SyscallName(s.nr);
}

Status ProcessReader::Impl::ReadThreads() {
  facts_.pid = pid_;
  facts_.free_threaded = l_.free_threaded;
  facts_.layout_source = l_.source;

  std::vector<uint64_t> interps;
  uint64_t interp = Ptr(a_.interp_head);
  for (int i = 0; i < kMaxInterpreters && interp; ++i) {
    if (std::find(interps.begin(), interps.end(), interp) != interps.end()) break;
    interps.push_back(interp);
    interp = Ptr(interp + l_.interp_next);
  }
  if (interps.empty()) {
    return FailedPreconditionError(
        "no interpreter state at the runtime's interpreter list: the interpreter is not "
        "initialized (or finalized), or this is not the layout it was built with");
  }
  ReadGil(interps);

  std::vector<PyThread>& py = py_;
  std::unordered_set<uint64_t> seen;
  for (uint64_t in : interps) {
    uint64_t ts = Ptr(in + l_.interp_tstate_head);
    while (ts && py.size() < opt_.max_threads && seen.insert(ts).second) {
      PyThread p;
      p.tstate = ts;
      ThreadFacts& t = p.facts;
      t.has_thread_state = true;
      uint64_t ident = Ptr(ts + l_.tstate_thread_id);
      if (ident) t.ident = ident;
      if (l_.tstate_native_id >= 0) {
        t.tid = static_cast<pid_t>(
            ReadI32(m_, ts + static_cast<uint32_t>(l_.tstate_native_id)).value_or(0));
      }
      if (l_.tstate_holds_gil >= 0 && !l_.free_threaded) {
        t.holds_gil = ReadI32(m_, ts + static_cast<uint32_t>(l_.tstate_holds_gil)).value_or(0) != 0;
      } else if (l_.tstate_status >= 0) {
        auto status = ReadU32(m_, ts + static_cast<uint32_t>(l_.tstate_status));
        if (status) t.holds_gil = (*status >> 5) & 1;
      } else if (!l_.free_threaded && (gil_holder_tstate_ || !gil_ranges_.empty() || gil_sem_ ||
                                       a_.tstate_current)) {
        t.holds_gil = gil_holder_tstate_ && *gil_holder_tstate_ == ts;
      }
      if (l_.tstate_gil_requested >= 0 && !l_.free_threaded) {
        t.gil_requested =
            ReadI32(m_, ts + static_cast<uint32_t>(l_.tstate_gil_requested)).value_or(0) != 0 &&
            t.holds_gil != true;
      }
      if (l_.free_threaded && !gil_disabled_) {
        // A free-threaded build with the GIL switched back on (PYTHON_GIL=1, an extension).
        t.holds_gil = ReadI32(m_, ts + static_cast<uint32_t>(l_.tstate_holds_gil)).value_or(0) != 0;
      }
      // <= 3.12: Thread.join's sentinel lock is released when this thread state goes. The
      // weakref does not change while the thread lives: it is followed later.
      if (l_.tstate_on_delete_data >= 0) {
        uint64_t wr = Ptr(ts + static_cast<uint32_t>(l_.tstate_on_delete_data));
        if (wr) p.sentinel_ref = wr;
      }
      ReadFrames(ts, t, &p.candidates, &p.raw);
      py.push_back(std::move(p));
      ts = Ptr(ts + l_.tstate_next);
    }
  }
  return OkStatus();
}

StatusOr<ProcessFacts> ProcessReader::Impl::Finish(const std::vector<TaskContext>& tasks) {
  std::vector<PyThread>& py = py_;
  for (const auto& task : tasks) {
    task_tids_.insert(task.tid);
    if (task.regs && task.regs->fs_base) tid_by_fsbase_[task.regs->fs_base] = task.tid;
  }
  for (auto& p : py) {
    ThreadFacts& t = p.facts;
    if (!t.tid && t.ident) t.tid = TidForIdent(*t.ident).value_or(0);
    if (t.ident && t.tid) tid_by_ident_[*t.ident] = t.tid;
    if (gil_holder_tstate_ && *gil_holder_tstate_ == p.tstate && t.tid) facts_.gil_holder = t.tid;
    if (t.holds_gil == true && t.tid) facts_.gil_holder = t.tid;
    if (p.sentinel_ref && t.tid) pending_->sentinel_refs.push_back({t.tid, p.sentinel_ref});
  }

  std::unordered_map<pid_t, size_t> py_by_tid;
  for (size_t i = 0; i < py.size(); ++i) {
    if (py[i].facts.tid) py_by_tid[py[i].facts.tid] = i;
  }
  for (const auto& task : tasks) {
    ThreadFacts t;
    std::vector<Candidate> cand;
    auto it = py_by_tid.find(task.tid);
    if (it != py_by_tid.end()) {
      t = std::move(py[it->second].facts);
      cand = std::move(py[it->second].candidates);
      raw_by_tid_[task.tid] = std::move(py[it->second].raw);
      py_by_tid.erase(it);
    } else {
      t.tid = task.tid;
    }
    t.os_name = task.comm;
    t.is_main = task.tid == pid_;
    ClassifySyscall(t, task, cand);
    if (opt_.native && task.regs && symbolize_) {
      t.native.push_back(symbolize_(task.regs->rip));
      uint64_t fp = task.regs->rbp;
      for (int i = 0; i < 64 && fp && fp >= task.regs->rsp && fp - task.regs->rsp < (8u << 20);
           ++i) {
        uint64_t next = Ptr(fp), ret = Ptr(fp + 8);
        if (!ret) break;
        t.native.push_back(symbolize_(ret));
        if (next <= fp) break;
        fp = next;
      }
    }
    facts_.threads.push_back(std::move(t));
  }
  // Thread states with no task (a thread that is ending, or one from before a fork).
  for (auto& [tid, i] : py_by_tid) {
    facts_.notes.push_back("thread state of tid " + std::to_string(tid) +
                           " has no running task (the thread is ending)");
  }
  size_t unmatched = 0;
  for (const auto& p : py) {
    if (!p.facts.tid) ++unmatched;
  }
  if (unmatched) {
    facts_.notes.push_back(std::to_string(unmatched) +
                           " thread state(s) could not be matched to a task");
  }

  std::stable_sort(facts_.threads.begin(), facts_.threads.end(),
                   [](const ThreadFacts& a, const ThreadFacts& b) {
                     if (a.is_main != b.is_main) return a.is_main;
                     return a.tid < b.tid;
                   });
  FindAcquires();
  // Everything the analysis will ask about: waited-for locks (now: they change), Thread
  // names and idents (later: they do not).
  for (size_t i = 0; i < facts_.threads.size(); ++i) {
    auto& t = facts_.threads[i];
    if (t.blocked.kind == BlockKind::kLock) NoteLock(t.blocked.object);
    for (auto& f : t.frames) {
      if (f.self_stdlib_class == "RLock" || f.self_type == "_RLock") NoteLock(f.self);
      if (f.self_stdlib_class == "Condition") ConditionLock(f.self);
      if (f.self_stdlib_class == "Thread" && f.self) pending_->thread_objects.push_back(f.self);
    }
    if (!t.frames.empty() && t.frames.back().self) {
      pending_->thread_names.push_back({i, t.frames.back().self});
    }
  }
  pending_->tid_by_ident = tid_by_ident_;
  if (pending_ == &own_pending_) Complete(own_pending_, &facts_);
  return std::move(facts_);
}

// A lock somebody waits for, that records no owner (a Lock, not an RLock), may have been
// taken by an explicit acquire(): a frame whose code calls `acquire` and that holds the very
// lock in a local variable or a module global. Evidence, not proof (the frame may have
// released it since): the analysis names such an owner only when one thread alone qualifies,
// says "acquire_call", and never builds a deadlock on it.
void ProcessReader::Impl::FindAcquires() {
  std::unordered_set<uint64_t> waited;
  for (const auto& t : facts_.threads) {
    if (t.blocked.kind != BlockKind::kLock) continue;
    NoteLock(t.blocked.object);
    auto it = facts_.locks.find(t.blocked.object);
    if (it != facts_.locks.end() && it->second.type == LockType::kLock &&
        it->second.locked != false) {
      waited.insert(t.blocked.object);
    }
  }
  if (waited.empty()) return;
  for (auto& t : facts_.threads) {
    auto raw = raw_by_tid_.find(t.tid);
    if (raw == raw_by_tid_.end()) continue;
    const uint64_t own = t.blocked.kind == BlockKind::kLock ? t.blocked.object : 0;
    for (size_t i = 0; i < t.frames.size() && i < raw->second.size(); ++i) {
      const RawFrame& r = raw->second[i];
      if (!r.code) continue;
      auto ci = cache_->codes.find(r.code);
      if (ci == cache_->codes.end()) continue;
      std::vector<uint64_t>& acquired = t.frames[i].acquired;
      auto note = [&](uint64_t v) {
        if (v && v != own && waited.count(v) &&
            std::find(acquired.begin(), acquired.end(), v) == acquired.end()) {
          acquired.push_back(v);
        }
      };
      uint32_t n = std::min<uint32_t>(r.nslots, 256);
      std::vector<uint64_t> values(n);
      if (n && m_.Read(r.slots, values.data(), n * 8)) {
        for (uint64_t v : values) note(l_.stackrefs ? v & ~uint64_t{3} : v);
      }
      size_t looked = 0;
      for (const auto& name : ci->second.global_names) {
        if (!r.globals || ++looked > 32) break;
        if (auto v = o_.DictGet(r.globals, name)) note(*v);
      }
    }
  }
}

void ProcessReader::Impl::Complete(const PendingReads& p, ProcessFacts* facts) {
  for (const auto& [tid, wr] : p.sentinel_refs) {
    if (auto lock = o_.WeakrefTarget(wr); lock && o_.IsLock(*lock)) facts->sentinels[*lock] = tid;
  }
  for (uint64_t thread : p.thread_objects) {
    if (auto id = o_.GetAttr(thread, l_.major == 2 ? "_Thread__ident" : "_ident")) {
      if (auto v = o_.Int(*id)) {
        auto it = p.tid_by_ident.find(static_cast<uint64_t>(*v));
        if (it != p.tid_by_ident.end()) facts->thread_objects[thread] = it->second;
      }
    }
  }
  for (const auto& [index, self] : p.thread_names) {
    if (index >= facts->threads.size() || StdlibClass(self) != "Thread") continue;
    if (auto name = o_.GetAttr(self, l_.major == 2 ? "_Thread__name" : "_name")) {
      facts->threads[index].python_name = o_.Str(*name, 128).value_or("");
    }
  }
}

StatusOr<ProcessFacts> ReadProcess(const MemoryReader& memory, const ResolvedLayout& layout,
                                   const std::vector<TaskContext>& tasks, pid_t pid,
                                   const ReadOptions& options, const NativeSymbolizer& symbolize,
                                   ReadCache* cache, PendingReads* pending) {
  ProcessReader::Impl r(memory, layout, tasks, pid, options, symbolize, cache, pending);
  return r.Run();
}

void CompleteReads(const MemoryReader& memory, const ResolvedLayout& layout,
                   const PendingReads& pending, ProcessFacts* facts, ReadCache* cache) {
  static const std::vector<TaskContext> kNoTasks;
  static const NativeSymbolizer kNone;
  ProcessReader::Impl r(memory, layout, kNoTasks, facts->pid, ReadOptions{}, kNone, cache, nullptr);
  r.Complete(pending, facts);
}

ProcessReader::ProcessReader(const MemoryReader& memory, const ResolvedLayout& layout, pid_t pid,
                             const ReadOptions& options, const NativeSymbolizer& symbolize,
                             ReadCache* cache, PendingReads* pending) {
  static const std::vector<TaskContext> kNoTasks;
  impl_ = std::make_unique<Impl>(memory, layout, kNoTasks, pid, options, symbolize, cache,
                                 pending);
}
ProcessReader::~ProcessReader() = default;
Status ProcessReader::ReadThreads() { return impl_->ReadThreads(); }
StatusOr<ProcessFacts> ProcessReader::Finish(const std::vector<TaskContext>& tasks) {
  return impl_->Finish(tasks);
}

std::string SyscallName(int64_t nr) {
  static const std::unordered_map<int64_t, const char*> kNames = {
      {0, "read"}, {1, "write"}, {2, "open"}, {3, "close"}, {7, "poll"}, {8, "lseek"},
      {16, "ioctl"}, {17, "pread64"}, {18, "pwrite64"}, {19, "readv"}, {20, "writev"},
      {23, "select"}, {24, "sched_yield"}, {34, "pause"}, {35, "nanosleep"}, {40, "sendfile"},
      {41, "socket"}, {42, "connect"}, {43, "accept"}, {44, "sendto"}, {45, "recvfrom"},
      {46, "sendmsg"}, {47, "recvmsg"}, {48, "shutdown"}, {49, "bind"}, {50, "listen"},
      {61, "wait4"}, {65, "semop"}, {70, "msgrcv"}, {72, "fcntl"}, {73, "flock"}, {74, "fsync"},
      {128, "rt_sigtimedwait"}, {130, "rt_sigsuspend"}, {202, "futex"}, {208, "io_getevents"},
      {220, "semtimedop"}, {230, "clock_nanosleep"}, {232, "epoll_wait"}, {247, "waitid"},
      {257, "openat"}, {270, "pselect6"}, {271, "ppoll"}, {281, "epoll_pwait"},
      {288, "accept4"}, {299, "recvmmsg"}, {307, "sendmmsg"}, {426, "io_uring_enter"},
      {441, "epoll_pwait2"}, {449, "futex_waitv"}};
  auto it = kNames.find(nr);
  return it != kNames.end() ? it->second : "syscall " + std::to_string(nr);
}

std::string FactsSignature(const ProcessFacts& facts) {
  std::string out;
  for (const auto& t : facts.threads) {
    out += std::to_string(t.tid) + ":" + std::to_string(static_cast<int>(t.blocked.kind)) + ":" +
           std::to_string(t.blocked.object) + ":" + (t.holds_gil == true ? "g" : "-");
    for (const auto& f : t.frames) {
      out += "|" + std::to_string(f.code) + "@" + std::to_string(f.where.line.value_or(-1));
      for (const auto& w : f.withs) out += "w" + std::to_string(w.lock);
    }
    out += "\n";
  }
  return out;
}

}  // namespace threadscope::dump
