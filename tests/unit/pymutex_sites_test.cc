// Finding the parking lot's wait and wake sites, the lock types and their methods, PGO-promoted
// copies and free-threaded critical sections, on the interpreters of the matrix
// (tests/interpreters.json, plus THREADSCOPE_EXTRA_PYTHONS for locally built 3.14 / 3.14t).
//
// Every build must show the structure every 3.13+ CPython has (park sites with return sites,
// unpark sites, the bucket lock left out, lock types whose size says what they hold). The exact
// builds analysed by hand (docs: the research note behind docs/DESIGN.md §8, gdb and bpftrace
// on these binaries, by GNU build id) must give exactly the addresses found then.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "daemon/target/code_map.h"
#include "daemon/target/cpython.h"
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"
#include "daemon/target/pymutex.h"
#include "daemon/target/python_process.h"
#include "tests/unit/interpreters.h"

namespace threadscope::target {
namespace {

using ::threadscope::interpreters::Interpreter;

std::vector<Interpreter> Matrix() {
  auto m = ::threadscope::interpreters::Load();
  if (!m.ok()) {
    Interpreter broken;
    broken.label = "matrix";
    broken.required = true;
    broken.missing = m.status().ToString();
    return {broken};
  }
  return *m;
}

std::string TestName(const ::testing::TestParamInfo<Interpreter>& info) {
  std::string name = info.param.label;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// What the hand analysis found in one exact binary.
struct Analysed {
  const char* build_id;
  const char* label;
  std::set<uint64_t> parks;            // park call -> (return site)
  std::map<uint64_t, uint64_t> returns;
  std::set<uint64_t> retries;
  std::set<uint64_t> unparks;
  std::set<uint64_t> raw;              // bucket-lock slow paths
  // Lock type: methods and slots.
  uint64_t lock_acquire, lock_enter, lock_acquire_lock, lock_release, lock_exit, lock_release_lock;
  uint64_t lock_new, lock_dealloc;
  uint64_t rlock_acquire, rlock_enter, rlock_release, rlock_exit, rlock_release_save,
      rlock_acquire_restore, rlock_new, rlock_dealloc;
  int lock_size, rlock_size;
  // The PGO-promoted copy: method guarded, the guard, the copy's probe site and self register,
  // and (acquire) its result site and register. 0 = none in this build.
  uint64_t promoted_method, promoted_guard, promoted_site;
  int promoted_self;
  uint64_t promoted_result;
  int promoted_result_reg;
};

const Analysed kAnalysed[] = {
    {"f9de766c3a031e0782095d175ff04e394a2744d2", "Debian unstable 3.13.18",
     {0x76603f, 0x49b39b},
     {{0x76603f, 0x766049}, {0x49b39b, 0x49b3a5}},
     {0x49b39b},
     {0x767b48, 0x78e2b1},
     {0x7fd760, 0x7fd800},
     0x6a8f20, 0x6a8f20, 0x6a8f20, 0x6aa6b0, 0x6aa6b0, 0x6aa6b0, 0x76b1f0, 0x654fa0,
     0x642620, 0x642620, 0x647930, 0x647930, 0x4ec489, 0x4f5704, 0x63ead0, 0x654d80,
     24, 48,
     0x6a8f20, 0x5e873e, 0x5e8794, 13, 0x5e87f4, 13},
    {"cccda113240f3ba4c016991793a62dc0cfe01613", "Debian unstable 3.14.10",
     {0x74cb32, 0x74cd1c, 0x74cd59, 0x48e10d, 0x48e171},
     {{0x74cb32, 0x74cb3c}, {0x74cd1c, 0x74cd26}, {0x74cd59, 0x74cd63}, {0x48e10d, 0x48e117},
      {0x48e171, 0x48e17b}},
     {0x48e10d, 0x48e171},
     {0x68e999, 0x68eb08, 0x74fef8, 0x799c27},
     {0x7e5ca0, 0x840420},
     0x68db40, 0x68db40, 0x68db40, 0x68e8b0, 0x68e8b0, 0x68e8b0, 0x7579d0, 0x644a00,
     0x6322b0, 0x6322b0, 0x6354e0, 0x6354e0, 0x4d2604, 0x4d2ce8, 0x62b180, 0x644970,
     24, 40,
     0x68e8b0, 0x5ba839, 0x5ba846, 8, 0, -1},
    {"d41ac9e28ff414f10df5da23fb051683a7b4adcf", "Debian unstable 3.15.2",
     {0x7a0786, 0x7a098c, 0x7a09d0, 0x493dde, 0x493e3f},
     {{0x7a0786, 0x7a0790}, {0x7a098c, 0x7a0996}, {0x7a09d0, 0x7a09da}, {0x493dde, 0x493de8},
      {0x493e3f, 0x493e49}},
     {0x493dde, 0x493e3f},
     {0x7a194e, 0x7a9253},
     {0x7a9490, 0x7a9850},
     0x6d7b90, 0x6d6cc0, 0x565e45, 0x7d7430, 0x6d8090, 0x87f2d0, 0x7ac770, 0x68a770,
     0x8089a0, 0x679400, 0x808fb0, 0x67e680, 0x4e0a08, 0x4e49c6, 0x6723e0, 0x68a6e0,
     24, 40,
     0, 0, 0, -1, 0, -1},
};

class PyMutexSitesTest : public ::testing::TestWithParam<Interpreter> {
 protected:
  void SetUp() override {
    const Interpreter& in = GetParam();
    if (!in.present()) {
      if (in.required) FAIL() << in.label << " is required: " << in.missing;
      std::fprintf(stderr, "%s\n", in.SkipLine().c_str());
      GTEST_SKIP() << in.missing;
    }
    auto d = Disassembler::Create();
    ASSERT_TRUE(d.ok());
    dis_ = std::move(d).value();
    auto t = InspectPythonBinary(*dis_, in.binary);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    target_ = std::make_unique<InspectedProcess>(std::move(*t));
    code_ = std::make_unique<CodeMap>(elf(), *dis_);
  }
  const ElfFile& elf() { return *target_->interpreter_elf; }
  const PythonVersion& version() { return target_->info.version; }
  const Analysed* analysed() {
    for (const auto& a : kAnalysed) {
      if (elf().build_id() == a.build_id) return &a;
    }
    return nullptr;
  }

  std::unique_ptr<Disassembler> dis_;
  std::unique_ptr<InspectedProcess> target_;
  std::unique_ptr<CodeMap> code_;
};

TEST_P(PyMutexSitesTest, ParkingLot) {
  auto sites = FindParkingLotSites(elf(), *dis_, *code_);
  if (!version().AtLeast(3, 13)) {
    EXPECT_EQ(sites.status().code(), StatusCode::kNotFound);
    return;
  }
  ASSERT_TRUE(sites.ok()) << sites.status().ToString();
  std::string found;
  for (const auto& p : sites->parks) {
    found += " park " + Hex(p.call) + "->" + (p.return_site ? Hex(*p.return_site) : "none") +
             (p.retry ? " retry" : "") + " in " + Hex(p.function) + "\n";
  }
  for (uint64_t u : sites->unparks) found += " unpark " + Hex(u) + "\n";
  for (uint64_t r : sites->raw_functions) found += " raw " + Hex(r) + "\n";
  SCOPED_TRACE(GetParam().label + ":\n" + found);
  // Every build: a park with a return site, a retry, wakes, and the bucket lock left out.
  ASSERT_FALSE(sites->parks.empty());
  size_t first_waits = 0, retries = 0;
  for (const auto& p : sites->parks) {
    EXPECT_TRUE(p.return_site) << Hex(p.call);
    (p.retry ? retries : first_waits) += 1;
    std::string_view call = elf().BytesAt(p.call, 5);
    EXPECT_EQ(ClassifyUprobeSite(call), UprobeSiteKind::kEmulated) << Hex(p.call);
  }
  EXPECT_GE(first_waits, 1u);
  EXPECT_GE(retries, 1u);
  EXPECT_GE(sites->unparks.size(), 2u);
  EXPECT_GE(sites->raw_waits, 1u);
  EXPECT_GE(sites->raw_wakes, 1u);
  if (const Analysed* a = analysed()) {
    std::set<uint64_t> parks, retry_set;
    std::map<uint64_t, uint64_t> returns;
    for (const auto& p : sites->parks) {
      parks.insert(p.call);
      if (p.retry) retry_set.insert(p.call);
      if (p.return_site) returns[p.call] = *p.return_site;
    }
    EXPECT_EQ(parks, a->parks) << a->label;
    EXPECT_EQ(returns, a->returns) << a->label;
    EXPECT_EQ(retry_set, a->retries) << a->label;
    EXPECT_EQ(std::set<uint64_t>(sites->unparks.begin(), sites->unparks.end()), a->unparks);
    EXPECT_EQ(std::set<uint64_t>(sites->raw_functions.begin(), sites->raw_functions.end()),
              a->raw);
  }
}

TEST_P(PyMutexSitesTest, LockTypes) {
  if (!version().AtLeast(3, 0)) GTEST_SKIP() << "2.7: no lock tracing";
  auto tables = FindMethodTables(elf());
  LockType lock = FindLockType(elf(), tables, false);
  LockType rlock = FindLockType(elf(), tables, true);
  ASSERT_TRUE(lock.methods);
  ASSERT_TRUE(rlock.methods);
  EXPECT_TRUE(lock.Method("acquire"));
  EXPECT_TRUE(lock.Method("release"));
  EXPECT_TRUE(rlock.Method("_release_save"));
  const bool ft = target_->info.free_threaded;
  // What the size says must be what the version says (a distribution that reverted or
  // backported the PyMutex change would show here).
  if (version().AtLeast(3, 10)) {
    ASSERT_TRUE(lock.spec) << "heap types since 3.10";
    ASSERT_TRUE(rlock.spec);
    EXPECT_EQ(lock.spec->name, "_thread.lock");
    EXPECT_EQ(rlock.spec->name, "_thread.RLock");
    EXPECT_TRUE(lock.tp_dealloc);
    EXPECT_TRUE(rlock.tp_dealloc);
    EXPECT_TRUE(rlock.tp_new);
  }
  bool lock_mutex = version().AtLeast(3, 14) || (version().Is(3, 13) && version().micro >= 1);
  EXPECT_EQ(LockIsPyMutex(lock, false, version(), ft), lock_mutex) << lock.spec->basicsize;
  EXPECT_EQ(LockIsPyMutex(rlock, true, version(), ft), version().AtLeast(3, 14));
  if (const Analysed* a = analysed()) {
    EXPECT_EQ(lock.Method("acquire"), a->lock_acquire);
    EXPECT_EQ(lock.Method("__enter__"), a->lock_enter);
    EXPECT_EQ(lock.Method("acquire_lock"), a->lock_acquire_lock);
    EXPECT_EQ(lock.Method("release"), a->lock_release);
    EXPECT_EQ(lock.Method("__exit__"), a->lock_exit);
    EXPECT_EQ(lock.Method("release_lock"), a->lock_release_lock);
    EXPECT_EQ(lock.tp_new, a->lock_new);
    EXPECT_EQ(lock.tp_dealloc, a->lock_dealloc);
    EXPECT_EQ(rlock.Method("acquire"), a->rlock_acquire);
    EXPECT_EQ(rlock.Method("__enter__"), a->rlock_enter);
    EXPECT_EQ(rlock.Method("release"), a->rlock_release);
    EXPECT_EQ(rlock.Method("__exit__"), a->rlock_exit);
    EXPECT_EQ(rlock.Method("_release_save"), a->rlock_release_save);
    EXPECT_EQ(rlock.Method("_acquire_restore"), a->rlock_acquire_restore);
    EXPECT_EQ(rlock.tp_new, a->rlock_new);
    EXPECT_EQ(rlock.tp_dealloc, a->rlock_dealloc);
    EXPECT_EQ(lock.spec->basicsize, a->lock_size);
    EXPECT_EQ(rlock.spec->basicsize, a->rlock_size);
  }
}

TEST_P(PyMutexSitesTest, PromotedCopies) {
  if (!version().AtLeast(3, 13)) GTEST_SKIP() << "only the PyMutex builds are checked";
  auto tables = FindMethodTables(elf());
  LockType lock = FindLockType(elf(), tables, false);
  ASSERT_TRUE(lock.methods);
  uint64_t py_true = 0, py_false = 0;
  if (auto s = elf().FindSymbol("_Py_TrueStruct")) py_true = s->value;
  if (auto s = elf().FindSymbol("_Py_FalseStruct")) py_false = s->value;
  const uint32_t mutex_off = target_->info.free_threaded ? 32 : 16;
  std::vector<std::pair<uint64_t, PromotedCopy>> copies;
  std::set<uint64_t> methods;
  for (const char* name : {"acquire", "__enter__", "acquire_lock", "release", "__exit__",
                           "release_lock"}) {
    if (auto m = lock.Method(name)) methods.insert(*m);
  }
  for (uint64_t m : methods) {
    bool acquire = m == lock.Method("acquire") || m == lock.Method("__enter__") ||
                   m == lock.Method("acquire_lock");
    for (auto& c : FindPromotedCopies(elf(), *code_, m, mutex_off, acquire ? py_true : 0,
                                      acquire ? py_false : 0)) {
      copies.push_back({m, c});
    }
  }
  const Analysed* a = analysed();
  if (!a) return;  // PIE builds compare registers, not immediates: none expected or found
  if (!a->promoted_method) {
    EXPECT_TRUE(copies.empty()) << a->label;
    return;
  }
  ASSERT_EQ(copies.size(), 1u) << a->label;
  const auto& [method, c] = copies[0];
  EXPECT_EQ(method, a->promoted_method);
  EXPECT_EQ(c.guard, a->promoted_guard);
  ASSERT_TRUE(c.entry) << c.problem;
  EXPECT_EQ(c.entry->vaddr, a->promoted_site);
  EXPECT_EQ(c.entry->gpr, a->promoted_self);
  EXPECT_EQ(c.entry->adjust, 0u);
  if (a->promoted_result) {
    ASSERT_TRUE(c.result_site) << c.problem;
    EXPECT_EQ(*c.result_site, a->promoted_result);
    EXPECT_EQ(c.result_gpr, a->promoted_result_reg);
  }
}

TEST_P(PyMutexSitesTest, SelfSitesOfReleaseMethods) {
  if (!version().AtLeast(3, 13)) GTEST_SKIP() << "checked on the PyMutex builds";
  auto tables = FindMethodTables(elf());
  for (bool r : {false, true}) {
    LockType type = FindLockType(elf(), tables, r);
    ASSERT_TRUE(type.methods);
    for (const char* name : {"release", "__exit__"}) {
      auto m = type.Method(name);
      if (!m) continue;
      auto site = FindSelfSite(elf(), *code_, *m);
      if (!site) continue;  // the entry will do
      EXPECT_GE(site->vaddr, *m);
      EXPECT_EQ(ClassifyUprobeSite(elf().BytesAt(site->vaddr, 15)), UprobeSiteKind::kEmulated);
    }
  }
  // Debian 3.14's Lock.release: its first emulated instruction, the `je` at +0x12, is inside
  // the unlock's CAS retry loop (`lock cmpxchg; jne +0x10`): a probe there could count one
  // release twice, so there is none (the entry is probed).
  if (elf().build_id() == "cccda113240f3ba4c016991793a62dc0cfe01613") {
    EXPECT_FALSE(FindSelfSite(elf(), *code_, 0x68e8b0));
  }
  // Debian 3.13's: `je` at +0xe, not in a loop, self in rdi.
  if (elf().build_id() == "f9de766c3a031e0782095d175ff04e394a2744d2") {
    auto site = FindSelfSite(elf(), *code_, 0x6aa6b0);
    ASSERT_TRUE(site);
    EXPECT_EQ(site->vaddr, 0x6aa6beu);
    EXPECT_EQ(site->gpr, 7);
    EXPECT_EQ(site->adjust, 0u);
  }
}

TEST_P(PyMutexSitesTest, CriticalSections) {
  auto sites = FindCriticalSectionSites(elf(), *code_, version());
  if (!target_->info.free_threaded) {
    EXPECT_TRUE(sites.empty()) << "default builds export bare `ret` stubs";
    return;
  }
  ASSERT_EQ(sites.size(), 2u);
  for (const auto& s : sites) {
    EXPECT_TRUE(s.verified) << s.name;
    EXPECT_EQ(s.mutex_gpr, version().AtLeast(3, 15) ? 2 : 6) << s.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Interpreters, PyMutexSitesTest, ::testing::ValuesIn(Matrix()), TestName);

}  // namespace
}  // namespace threadscope::target
