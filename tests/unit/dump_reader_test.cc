// The dump's reading, from synthetic memory images laid out as each interpreter lays them out:
// thread states, frames, `with` blocks (3.8's block stack, 3.11's exception table, 3.14's
// two-slot exits in tagged stack references), futexes resolved to locks (3.8/3.11 semaphores,
// 3.14's parking lot), the GIL, and hostile memory (loops, garbage) read without harm.
#include "daemon/dump/reader.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "daemon/dump/analysis.h"
#include "daemon/dump/bytecode.h"

namespace threadscope::dump {
namespace {

// A bump allocator over FakeMemory that writes objects the way a given layout reads them.
class Image {
 public:
  explicit Image(const target::PythonVersion& v) {
    resolved_.layout = *BuiltinDumpLayout(v, false);
    RuntimeAddresses& a = resolved_.addr;
    a.code_type = Type("code");
    a.str_type = Type("str");
    a.bytes_type = Type("bytes");
    a.tuple_type = Type("tuple");
    a.dict_type = Type("dict");
    a.cfunction_type = Type("builtin_function_or_method");
    a.method_type = Type("method");
    a.method_descr_type = Type("method_descriptor");
    a.long_type = Type("int");
    a.none = Alloc(64);
    lock_type_ = Type("_thread.lock");
    interp_head_ = Alloc(8);
    a.interp_head = interp_head_;
    a.runtime = Alloc(4096);
  }

  const DumpLayout& l() const { return resolved_.layout; }
  const ResolvedLayout& resolved() const { return resolved_; }
  FakeMemory& mem() { return mem_; }
  uint64_t lock_type() const { return lock_type_; }

  uint64_t Alloc(size_t n) {
    uint64_t at = next_;
    next_ += (n + 63) & ~size_t{63};
    std::vector<uint8_t> zero(n, 0);
    mem_.Put(at, zero.data(), n);
    return at;
  }
  void U64(uint64_t addr, uint64_t v) { mem_.PutU64(addr, v); }
  void I32(uint64_t addr, int32_t v) { mem_.PutU32(addr, static_cast<uint32_t>(v)); }
  uint64_t Object(uint64_t type, size_t size) {
    uint64_t o = Alloc(size);
    U64(o + l().ob_type, type);
    return o;
  }
  uint64_t CStr(const std::string& s) {
    uint64_t at = Alloc(s.size() + 1);
    mem_.Put(at, s.c_str(), s.size() + 1);
    return at;
  }
  uint64_t Type(const std::string& name) {
    uint64_t t = Alloc(1024);
    U64(t + l().tp_name, CStr(name));
    return t;
  }
  uint64_t Str(const std::string& s) {
    uint64_t o = Object(resolved_.addr.str_type, l().str_ascii_data + s.size() + 1);
    U64(o + l().str_length, s.size());
    const uint32_t shift = l().str_kind_shift;
    mem_.PutU32(o + l().str_state, (1u << shift) | (1u << (shift + 3)) | (1u << (shift + 4)));
    mem_.Put(o + l().str_ascii_data, s.data(), s.size());
    return o;
  }
  uint64_t Bytes(const std::string& s) {
    uint64_t o = Object(resolved_.addr.bytes_type, l().bytes_data + s.size() + 1);
    U64(o + l().ob_size, s.size());
    mem_.Put(o + l().bytes_data, s.data(), s.size());
    return o;
  }
  uint64_t Tuple(const std::vector<uint64_t>& items) {
    uint64_t o = Object(resolved_.addr.tuple_type, l().tuple_items + 8 * items.size() + 8);
    U64(o + l().ob_size, items.size());
    for (size_t i = 0; i < items.size(); ++i) U64(o + l().tuple_items + 8 * i, items[i]);
    return o;
  }
  // A code object: `names` are its locals (the first is an argument when args > 0).
  uint64_t Code(const std::string& file, const std::string& name, int firstline,
                const std::vector<std::string>& names, int args, int stacksize,
                const std::string& exceptions = "", const std::string& bytecode = "",
                const std::vector<std::string>& co_names = {}) {
    const DumpLayout& L = l();
    uint64_t c = Object(resolved_.addr.code_type, 512);
    std::vector<uint64_t> co_name_objs;
    for (const auto& n : co_names) co_name_objs.push_back(Str(n));
    U64(c + L.code_names, Tuple(co_name_objs));
    U64(c + L.code_filename, Str(file));
    U64(c + L.code_name, Str(name));
    if (L.code_qualname >= 0) U64(c + static_cast<uint32_t>(L.code_qualname), Str(name));
    I32(c + L.code_firstlineno, firstline);
    I32(c + L.code_argcount, args);
    I32(c + L.code_stacksize, stacksize);
    std::vector<uint64_t> name_objs;
    for (const auto& n : names) name_objs.push_back(Str(n));
    if (L.frame_objects) {
      // <= 3.10: an empty lnotab maps everything to firstlineno.
      U64(c + L.code_linetable, Bytes(""));
      I32(c + static_cast<uint32_t>(L.code_nlocals), static_cast<int32_t>(names.size()));
      U64(c + static_cast<uint32_t>(L.code_varnames), Tuple(name_objs));
      U64(c + static_cast<uint32_t>(L.code_cellvars), Tuple({}));
      U64(c + static_cast<uint32_t>(L.code_freevars), Tuple({}));
      U64(c + static_cast<uint32_t>(L.code_code),
          Bytes(bytecode.empty() ? std::string(64, '\x09') : bytecode));
    } else {
      // One PEP 657 entry per 8 code units, all on firstline (code 10: one-line form + two
      // column bytes).
      std::string table;
      for (int i = 0; i < 8; ++i) table += std::string("\xd7\x00\x00", 3);
      U64(c + L.code_linetable, Bytes(table));
      I32(c + static_cast<uint32_t>(L.code_nlocalsplus), static_cast<int32_t>(names.size()));
      U64(c + static_cast<uint32_t>(L.code_localsplusnames), Tuple(name_objs));
      U64(c + static_cast<uint32_t>(L.code_exceptiontable), Bytes(exceptions));
      U64(c + L.ob_size, 64);  // code units
      I32(c + static_cast<uint32_t>(L.code_firsttraceable), 0);
    }
    return c;
  }
  // A bound builtin method (lock.__exit__ and the like).
  uint64_t Bound(uint64_t self, const std::string& name) {
    uint64_t def = Alloc(32);
    U64(def, CStr(name));
    uint64_t m = Object(resolved_.addr.cfunction_type, 64);
    U64(m + l().cfunc_self - 8, def);
    U64(m + l().cfunc_self, self);
    return m;
  }
  uint64_t Descriptor(const std::string& name) {
    uint64_t d = Object(resolved_.addr.method_descr_type, 64);
    U64(d + l().descr_name, Str(name));
    return d;
  }
  uint64_t Lock(uint64_t sem) {
    uint64_t o = Object(lock_type_, 48);
    if (sem) U64(o + l().lock_handle, sem);
    return o;
  }

  // Interpreter and thread states.
  uint64_t Interp() {
    uint64_t interp = Alloc(8192);
    U64(interp_head_, interp);
    return interp;
  }
  uint64_t ThreadState(uint64_t interp, uint64_t ident, pid_t tid, uint64_t frame) {
    const DumpLayout& L = l();
    uint64_t ts = Alloc(1024);
    uint64_t head = ReadU64(mem_, interp + L.interp_tstate_head).value_or(0);
    U64(ts + L.tstate_next, head);
    U64(interp + L.interp_tstate_head, ts);
    U64(ts + L.tstate_thread_id, ident);
    if (L.tstate_native_id >= 0) I32(ts + static_cast<uint32_t>(L.tstate_native_id), tid);
    if (L.cframe_current >= 0) {
      uint64_t cframe = Alloc(64);
      U64(ts + L.tstate_frame, cframe);
      U64(cframe + static_cast<uint32_t>(L.cframe_current), frame);
    } else {
      U64(ts + L.tstate_frame, frame);
    }
    return ts;
  }
  // A frame running `code` at instruction `units` (code units; bytes = 2x before 3.10), with
  // `slots` as its locals followed by its value stack.
  uint64_t Frame(uint64_t code, uint64_t back, uint32_t units, const std::vector<uint64_t>& slots,
                 uint32_t nlocals) {
    const DumpLayout& L = l();
    uint64_t f = Alloc(L.frame_localsplus + 8 * slots.size() + 64);
    U64(f + L.frame_code, code);
    U64(f + L.frame_back, back);
    if (L.frame_objects) {
      I32(f + L.frame_lasti, static_cast<int32_t>(L.lasti_in_units ? units : units * 2));
      U64(f + L.frame_valuestack, f + L.frame_localsplus + 8 * nlocals);
    } else {
      U64(f + L.frame_instr, code + static_cast<uint64_t>(L.code_adaptive) + units * 2);
    }
    for (size_t i = 0; i < slots.size(); ++i) U64(f + L.frame_localsplus + 8 * i, slots[i]);
    return f;
  }
  void Block(uint64_t frame, int index, int type, int handler, int level) {
    const DumpLayout& L = l();
    I32(frame + L.frame_iblock, index + 1);
    uint64_t b = frame + L.frame_blockstack + 12 * index;
    I32(b, type);
    I32(b + 4, handler);
    I32(b + 8, level);
  }

 private:
  FakeMemory mem_;
  ResolvedLayout resolved_;
  uint64_t next_ = 0x10000000;
  uint64_t lock_type_ = 0;
  uint64_t interp_head_ = 0;
};

TaskContext FutexTask(pid_t tid, uint64_t uaddr) {
  TaskContext t;
  t.tid = tid;
  SyscallState s;
  s.nr = 202;
  s.args = {uaddr, 0x80, 0, 0, 0, 0};  // FUTEX_WAIT | FUTEX_PRIVATE_FLAG
  t.syscall = s;
  return t;
}

std::string ExceptionEntryBytes(uint32_t start, uint32_t size, uint32_t target, uint32_t depth) {
  // Single 6-bit groups suffice for these small numbers; bit 7 marks the entry's start.
  return std::string{static_cast<char>(0x80 | start), static_cast<char>(size),
                     static_cast<char>(target), static_cast<char>(depth << 1)};
}

TEST(DumpReaderTest, Python38BlockStackAndSemaphores) {
  Image img({3, 8, 18, ""});
  uint64_t sem_a = img.Alloc(32), sem_b = img.Alloc(32);
  uint64_t lock_a = img.Lock(sem_a), lock_b = img.Lock(sem_b);
  uint64_t interp = img.Interp();
  // SETUP_WITH (143) at byte 4 jumping +10 to the handler at byte 16.
  std::string bytecode(64, '\x09');
  bytecode[4] = static_cast<char>(143);
  bytecode[5] = 10;
  auto thread = [&](uint64_t held, uint64_t waited, pid_t tid, uint64_t ident, int line) {
    uint64_t code = img.Code("/srv/app.py", "worker", line, {}, 0, 4, "", bytecode);
    // value stack: [held.__exit__, waited.__exit__ (being entered)]
    uint64_t f = img.Frame(code, 0, 12, {img.Bound(held, "__exit__"),
                                         img.Bound(waited, "__exit__")}, 0);
    img.Block(f, 0, 122, 16, 1);
    img.ThreadState(interp, ident, tid, f);
  };
  thread(lock_a, lock_b, 101, 0x7f0000a000, 10);
  thread(lock_b, lock_a, 102, 0x7f0000b000, 20);
  // <= 3.10 thread states carry no native tid: registers tie them to tasks.
  TaskContext t1 = FutexTask(101, sem_b), t2 = FutexTask(102, sem_a);
  t1.regs = Registers{};
  t1.regs->fs_base = 0x7f0000a000;
  t2.regs = Registers{};
  t2.regs->fs_base = 0x7f0000b000;

  auto facts = ReadProcess(img.mem(), img.resolved(), {t1, t2}, 101, ReadOptions{});
  ASSERT_TRUE(facts.ok()) << facts.status().ToString();
  ASSERT_EQ(facts->threads.size(), 2u);
  const ThreadFacts& a = facts->threads[0];
  EXPECT_EQ(a.tid, 101);
  EXPECT_TRUE(a.is_main);
  EXPECT_EQ(a.blocked.kind, BlockKind::kLock);
  EXPECT_EQ(a.blocked.object, lock_b);
  ASSERT_EQ(a.frames.size(), 1u);
  EXPECT_EQ(a.frames[0].where.function, "worker");
  EXPECT_EQ(a.frames[0].where.line, 10);
  ASSERT_EQ(a.frames[0].withs.size(), 1u);
  EXPECT_EQ(a.frames[0].withs[0].lock, lock_a);

  DumpReport r = Analyze(*facts);
  ASSERT_EQ(r.deadlocks.size(), 1u);
  EXPECT_EQ(r.deadlocks[0].threads, (std::vector<pid_t>{101, 102}));
}

TEST(DumpReaderTest, Python311ExceptionTableAndGil) {
  Image img({3, 11, 7, ""});
  uint64_t sem_a = img.Alloc(32), sem_b = img.Alloc(32);
  uint64_t lock_a = img.Lock(sem_a), lock_b = img.Lock(sem_b);
  uint64_t interp = img.Interp();
  // The body of `with A:` is units [4, 12), handler 20, one live item (A.__exit__).
  std::string table = ExceptionEntryBytes(4, 8, 20, 1);
  uint64_t code = img.Code("/srv/app.py", "Worker.run", 30, {"self", "other"}, 1, 3, table);
  // locals [self, other=B], stack [A.__exit__, B.__exit__ (entering)]
  uint64_t f = img.Frame(code, 0, 8, {0x1234, lock_b, img.Bound(lock_a, "__exit__"),
                                      img.Bound(lock_b, "__exit__")}, 2);
  uint64_t ts = img.ThreadState(interp, 0x7f0000a000, 201, f);
  // A second thread runs Python and holds the GIL.
  uint64_t code2 = img.Code("/srv/app.py", "spin", 50, {}, 0, 2);
  uint64_t f2 = img.Frame(code2, 0, 2, {}, 0);
  uint64_t ts2 = img.ThreadState(interp, 0x7f0000b000, 202, f2);
  uint64_t gil = img.resolved().addr.runtime + img.l().gil_offset;
  img.I32(gil + img.l().gil_locked, 1);
  img.U64(gil + img.l().gil_last_holder, ts2);
  (void)ts;
  TaskContext running;
  running.tid = 202;

  auto facts = ReadProcess(img.mem(), img.resolved(), {FutexTask(201, sem_b), running}, 201,
                           ReadOptions{});
  ASSERT_TRUE(facts.ok()) << facts.status().ToString();
  const ThreadFacts& t = facts->threads[0];
  EXPECT_EQ(t.blocked.object, lock_b);
  ASSERT_EQ(t.frames.size(), 1u);
  EXPECT_EQ(t.frames[0].where.function, "Worker.run");
  ASSERT_EQ(t.frames[0].withs.size(), 1u) << "only A: B's __exit__ is above the live depth";
  EXPECT_EQ(t.frames[0].withs[0].lock, lock_a);
  EXPECT_EQ(t.holds_gil, false);
  EXPECT_EQ(facts->threads[1].holds_gil, true);
  EXPECT_EQ(facts->gil_holder, 202);
  DumpReport r = Analyze(*facts);
  EXPECT_EQ(r.threads[1].state, ThreadState::kRunning);
}

TEST(DumpReaderTest, Python314StackRefsWithPairsAndParkingLot) {
  Image img({3, 14, 7, ""});
  uint64_t lock_a = img.Lock(0), lock_b = img.Lock(0);
  img.mem().PutU8(lock_a + 16, 1);  // PyMutex held
  uint64_t interp = img.Interp();
  std::string table = ExceptionEntryBytes(4, 8, 20, 2);  // live: [A.__exit__ descr, A]
  uint64_t code = img.Code("/srv/app.py", "job", 7, {}, 0, 4, table);
  uint64_t exit_descr = img.Descriptor("__exit__");
  // _PyStackRef slots: the low bit tags deferred references.
  uint64_t f = img.Frame(code, 0, 8, {exit_descr | 1, lock_a, exit_descr | 1, lock_b | 1}, 0);
  uint64_t ts = img.ThreadState(interp, 0x7f0000a000, 301, f);
  img.I32(ts + static_cast<uint32_t>(img.l().tstate_holds_gil), 0);
  // The thread sleeps in _PySemaphore_Wait: its wait_entry's `addr` (8 bytes before the
  // semaphore) is B's mutex.
  uint64_t entry = img.Alloc(64);
  img.U64(entry + 8, lock_b + 16);
  auto facts = ReadProcess(img.mem(), img.resolved(), {FutexTask(301, entry + 16)}, 301,
                           ReadOptions{});
  ASSERT_TRUE(facts.ok()) << facts.status().ToString();
  const ThreadFacts& t = facts->threads[0];
  EXPECT_EQ(t.blocked.kind, BlockKind::kLock);
  EXPECT_EQ(t.blocked.object, lock_b);
  ASSERT_EQ(t.frames.size(), 1u);
  ASSERT_EQ(t.frames[0].withs.size(), 1u);
  EXPECT_EQ(t.frames[0].withs[0].lock, lock_a);
  ASSERT_TRUE(facts->locks.count(lock_a));
  EXPECT_EQ(facts->locks.at(lock_a).locked, true);
  EXPECT_EQ(t.holds_gil, false);
}

TEST(DumpReaderTest, AnExplicitAcquireIsInferredFromAFrameHoldingTheLock) {
  Image img({3, 11, 7, ""});
  uint64_t sem = img.Alloc(32);
  img.mem().PutU32(sem, 0);  // the semaphore's value: 0, held
  uint64_t lock = img.Lock(sem);
  uint64_t interp = img.Interp();
  // 501 waits in `lk.acquire()`; 502's frame holds the lock in `lk` and calls acquire().
  uint64_t wcode = img.Code("/srv/app.py", "waiter", 10, {"lk"}, 1, 2, "", "", {"acquire"});
  uint64_t wf = img.Frame(wcode, 0, 4, {lock, img.Bound(lock, "acquire")}, 1);
  img.ThreadState(interp, 0x7f0000a000, 501, wf);
  uint64_t hcode = img.Code("/srv/app.py", "holder", 20, {"lk"}, 1, 2, "", "",
                            {"acquire", "release"});
  uint64_t hf = img.Frame(hcode, 0, 4, {lock}, 1);
  img.ThreadState(interp, 0x7f0000b000, 502, hf);
  TaskContext sleeping;
  sleeping.tid = 502;
  sleeping.syscall = SyscallState{230, {}};
  auto facts = ReadProcess(img.mem(), img.resolved(), {FutexTask(501, sem), sleeping}, 501,
                           ReadOptions{});
  ASSERT_TRUE(facts.ok()) << facts.status().ToString();
  EXPECT_TRUE(facts->threads[0].frames[0].acquired.empty()) << "the waiter does not hold it";
  ASSERT_EQ(facts->threads[1].frames[0].acquired, (std::vector<uint64_t>{lock}));
  DumpReport r = Analyze(*facts);
  ASSERT_TRUE(r.threads[0].waiting_for);
  EXPECT_EQ(r.threads[0].waiting_for->owner, 502);
  EXPECT_EQ(r.threads[0].waiting_for->owner_source, OwnerSource::kAcquireCall);
  EXPECT_TRUE(r.deadlocks.empty());
}

TEST(DumpReaderTest, HostileMemoryEndsInNotesNotCrashes) {
  Image img({3, 11, 7, ""});
  uint64_t interp = img.Interp();
  // A frame whose `previous` points to itself, a code pointer to garbage, and a thread state
  // list that loops back on itself.
  uint64_t garbage = img.Alloc(256);
  for (int i = 0; i < 32; ++i) img.U64(garbage + 8 * i, 0xdeadbeefcafe0000ull + i);
  uint64_t f = img.Frame(garbage, 0, 3, {}, 0);
  img.U64(f + img.l().frame_back, f);
  uint64_t ts = img.ThreadState(interp, 0x7f0000a000, 401, f);
  img.U64(ts + img.l().tstate_next, ts);
  TaskContext task;
  task.tid = 401;
  auto facts = ReadProcess(img.mem(), img.resolved(), {task}, 401, ReadOptions{});
  ASSERT_TRUE(facts.ok());
  ASSERT_EQ(facts->threads.size(), 1u);
  EXPECT_EQ(facts->threads[0].frames.size(), 1u);
  EXPECT_EQ(facts->threads[0].frames[0].where.file, "?");
  bool loop_noted = false;
  for (const auto& n : facts->notes) loop_noted |= n.find("loops") != std::string::npos;
  EXPECT_TRUE(loop_noted);

  // No interpreter at all: the runtime is not there.
  Image empty({3, 11, 7, ""});
  EXPECT_EQ(ReadProcess(empty.mem(), empty.resolved(), {task}, 401, ReadOptions{})
                .status()
                .code(),
            StatusCode::kFailedPrecondition);
}

TEST(DumpBytecodeTest, ExceptionTablesAndWithLines) {
  std::string t = ExceptionEntryBytes(4, 8, 20, 1) + ExceptionEntryBytes(14, 2, 20, 1) +
                  ExceptionEntryBytes(12, 2, 30, 2);
  auto entries = ParseExceptionTable(t);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].start, 4u);
  EXPECT_EQ(entries[0].end, 12u);
  EXPECT_EQ(entries[0].target, 20u);
  EXPECT_EQ(entries[0].depth, 1u);
  EXPECT_EQ(CoveringEntry(entries, 13)->depth, 2u);
  EXPECT_EQ(CoveringEntry(entries, 40), nullptr);
  // In the with-body's second segment, the with began just before its first segment.
  EXPECT_EQ(WithStatementOffset(entries, 15, 1), 3u);
  // Malformed tables stop, bounded.
  EXPECT_TRUE(ParseExceptionTable(std::string("\x05\x06", 2)).empty());
  EXPECT_LE(ParseExceptionTable(std::string(1000, '\xff')).size(), 1000u);
}

TEST(DumpBytecodeTest, SetupWithAndLnotab27) {
  // 3.6-3.9 wordcode: EXTENDED_ARG 1, SETUP_WITH 4 -> target = (next 4) + 0x104.
  std::string code = {'\x09', '\x00', static_cast<char>(144), '\x01', static_cast<char>(143),
                      '\x04', '\x09', '\x00'};
  EXPECT_EQ(SetupWithFor(code, 6 + 0x104, false, false), 4u);
  EXPECT_EQ(SetupWithFor(code, 7, false, false), std::nullopt);
  // 2.7: SETUP_WITH with a 2-byte argument at byte 1.
  std::string py2 = {'\x09', static_cast<char>(143), '\x05', '\x00', '\x09'};
  EXPECT_EQ(SetupWithFor(py2, 4 + 5, true, false), 1u);
  // 2.7 lnotab increments are unsigned: 200 lines forward is not 56 back.
  EXPECT_EQ(Line27(std::string{'\x06', static_cast<char>(200)}, 1, 10), 201);
}

}  // namespace
}  // namespace threadscope::dump
