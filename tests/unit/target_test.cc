// Target discovery against the interpreters of the matrix (tests/interpreters.json): Debian's
// stripped python3.11 and Debian unstable's 3.13-3.15 are required (tools/test.sh provides them);
// pyenv builds and THREADSCOPE_EXTRA_PYTHONS are skipped, with the reason, when absent.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <memory>

#include "daemon/common/clock.h"
#include "daemon/loader/capabilities.h"
#include "daemon/loader/probe_plan.h"
#include "daemon/target/cpython.h"
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"
#include "daemon/target/procfs.h"
#include "daemon/target/python_process.h"
#include "tests/unit/interpreters.h"
#include "tests/unit/test_env.h"

namespace threadscope::target {
namespace {

using ::threadscope::interpreters::Interpreter;

// The matrix; a file that cannot be read becomes one required entry that fails with the reason
// (this runs before main(), to name the parameterized tests).
std::vector<Interpreter> Matrix() {
  auto m = ::threadscope::interpreters::Load();
  if (m.ok()) return *m;
  Interpreter broken;
  broken.label = "matrix";
  broken.required = true;
  broken.missing = m.status().ToString();
  return {broken};
}

// Debian 12's python3.11, from the matrix: the stripped LTO build with rules fitted to it.
Interpreter DebianPython() {
  for (const auto& in : Matrix()) {
    if (in.label == "debian-3.11" || in.label == "matrix") return in;
  }
  Interpreter none;
  none.missing = "tests/interpreters.json has no debian-3.11";
  return none;
}

// Probes hit on every lock wait or GIL switch: they must be cheap.
bool HotPath(loader::ProbeId id) {
  using loader::ProbeId;
  return id == ProbeId::kSemWait || id == ProbeId::kSemWaitReturn ||
         id == ProbeId::kSemDestroy || loader::Spec(id).feature == loader::Feature::kGil;
}

class TargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = Disassembler::Create();
    ASSERT_TRUE(d.ok());
    dis_ = std::move(d).value();
  }
  std::unique_ptr<Disassembler> dis_;
};

TEST(ProcfsParseTest, MapsLines) {
  auto m = ParseMapsLine(
      "7f0c1c000000-7f0c1c021000 r-xp 00001000 08:01 1234   /usr/lib/libpython3.11.so.1.0");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start, 0x7f0c1c000000u);
  EXPECT_EQ(m->end, 0x7f0c1c021000u);
  EXPECT_EQ(m->offset, 0x1000u);
  EXPECT_TRUE(m->executable());
  EXPECT_EQ(m->inode, 1234u);
  EXPECT_EQ(m->path, "/usr/lib/libpython3.11.so.1.0");
  auto anon = ParseMapsLine("7ffd1000-7ffd2000 rw-p 00000000 00:00 0");
  ASSERT_TRUE(anon);
  EXPECT_TRUE(anon->path.empty());
  EXPECT_FALSE(ParseMapsLine("garbage"));
}

TEST(ProcfsParseTest, StatWithHostileComm) {
  // comm can contain spaces and parentheses; fields are counted from the last ')'.
  std::string stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 "
                     "987654 123 45";
  auto t = ParseStat(stat);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->tid, 4242);
  EXPECT_EQ(t->comm, "a) b (c");
  EXPECT_EQ(t->start_ticks, 987654u);
}

TEST(ProcfsTest, ReadsThisProcess) {
  ProcFs proc;
  auto st = proc.Status(getpid());
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->tgid, getpid());
  EXPECT_FALSE(st->ns_pids.empty());
  auto tasks = proc.Tasks(getpid());
  ASSERT_TRUE(tasks.ok());
  ASSERT_FALSE(tasks->empty());
  EXPECT_EQ((*tasks)[0].tid, getpid());
  EXPECT_GT((*tasks)[0].start_ticks, 0u);
  // This process started a moment ago: its start converts to a recent monotonic time (a
  // conversion error shows up as 0 or as the future).
  uint64_t start = threadscope::BootTicksToMonotonicNs((*tasks)[0].start_ticks, SystemClock());
  uint64_t now = SystemClock().MonotonicNowNs();
  EXPECT_LE(start, now);
  EXPECT_GT(start, now - 600'000'000'000ull);
  EXPECT_FALSE(proc.InOtherMountNamespace(getpid()));
  EXPECT_EQ(proc.Status(0x3fffffff).status().code(), StatusCode::kNotFound);
}

TEST(CPythonNamesTest, VersionsAndFileNames) {
  auto v = ParsePythonVersion("3.13.0rc1");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->ToString(), "3.13.0rc1");
  EXPECT_TRUE(v->AtLeast(3, 13));
  EXPECT_FALSE(v->AtLeast(3, 14));
  EXPECT_EQ(ParsePythonVersion("2.7.18+")->ToString(), "2.7.18+");
  EXPECT_FALSE(ParsePythonVersion("12.2.0"));
  EXPECT_FALSE(ParsePythonVersion("3.11.2 (main)"));
  EXPECT_EQ(VersionFromFileName("libpython3.6m.so.1.0")->ToString(), "3.6");
  EXPECT_EQ(VersionFromFileName("python3.11")->ToString(), "3.11");
  EXPECT_FALSE(VersionFromFileName("bash"));
  EXPECT_TRUE(IsLibpythonName("libpython3.13t.so.1.0"));
  EXPECT_TRUE(IsLibpythonName("libpython2.7.so"));
  EXPECT_FALSE(IsLibpythonName("libpython3.so"));  // the stable-ABI stub, not an interpreter
}

TEST(UprobeSiteTest, ClassifiesLikeTheKernel) {
  auto kind = [](std::initializer_list<int> bytes) {
    std::string s;
    for (int b : bytes) s += static_cast<char>(b);
    return ClassifyUprobeSite(s);
  };
  EXPECT_EQ(kind({0x55}), UprobeSiteKind::kEmulated);                   // push %rbp
  EXPECT_EQ(kind({0x41, 0x57}), UprobeSiteKind::kEmulated);             // push %r15
  EXPECT_EQ(kind({0xe8, 0, 0, 0, 0}), UprobeSiteKind::kEmulated);       // call
  EXPECT_EQ(kind({0xe9, 0, 0, 0, 0}), UprobeSiteKind::kEmulated);       // jmp
  EXPECT_EQ(kind({0x74, 0x05}), UprobeSiteKind::kEmulated);             // je
  EXPECT_EQ(kind({0x0f, 0x84, 0, 0, 0, 0}), UprobeSiteKind::kEmulated); // je rel32
  EXPECT_EQ(kind({0x90}), UprobeSiteKind::kEmulated);                   // nop
  EXPECT_EQ(kind({0x0f, 0x1f, 0x44, 0, 0}), UprobeSiteKind::kOptimizedNop5);
  EXPECT_EQ(kind({0x48, 0x83, 0xec, 0x08}), UprobeSiteKind::kSingleStepped);  // sub $8,%rsp
  EXPECT_EQ(kind({0xc3}), UprobeSiteKind::kSingleStepped);                     // ret
  EXPECT_EQ(kind({0x66, 0x90}), UprobeSiteKind::kSingleStepped);               // 16-bit nop
  EXPECT_EQ(kind({0x48, 0x50}), UprobeSiteKind::kSingleStepped);  // push with REX.W
}

TEST_F(TargetTest, DebianStrippedPythonIsFullyResolved) {
  Interpreter debian = DebianPython();
  ASSERT_TRUE(debian.present()) << debian.missing;
  auto t = InspectPythonBinary(*dis_, debian.binary);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_FALSE(t->info.full_symbols);
  EXPECT_EQ(t->info.version.ToString(), ::threadscope::interpreters::SelfReportedVersion(debian));
  settings::TraceSettings full;
  full.gil_mode = settings::GilMode::kFull;
  auto plan = loader::PlanProbes(*t, *dis_, full);
  for (const auto& p : plan.probes) {
    EXPECT_TRUE(p.unavailable.empty()) << p.name() << ": " << p.unavailable;
    for (const auto& s : p.sites) {
      // Every probe on the hot path must sit on an instruction the kernel emulates.
      if (HotPath(p.id)) {
        EXPECT_EQ(s.site_kind, UprobeSiteKind::kEmulated) << p.name() << " " << s.Describe();
      }
    }
  }
  auto can = loader::PlannedCapabilities(plan);
  EXPECT_EQ(can.threads.joins, model::JoinVisibility::kBlockingOnly);
  EXPECT_TRUE(can.threads.body_done_visible);
  // take_gil/drop_gil found without symbols, and LTO's inlined drop_gil copies by their release
  // (PyEval_SaveThread's among them), so every drop is seen.
  EXPECT_TRUE(can.gil.traced) << can.gil.unavailable;
  EXPECT_TRUE(can.gil.drops_complete) << can.gil.notes;
  EXPECT_TRUE(can.gil.forced_known);
  EXPECT_GE(can.gil.inlined_drops, 1u);
  bool save_thread = false;
  for (const auto* p : plan.Find(loader::ProbeId::kGilDropInlined)) {
    for (const auto& s : p->sites) save_thread |= s.location.rfind("PyEval_SaveThread+", 0) == 0;
  }
  EXPECT_TRUE(save_thread);
  // thread_run was found without symbols, through the _thread method table.
  auto boot = plan.Find(loader::ProbeId::kThreadBootstrap);
  ASSERT_EQ(boot.size(), 1u);
  ASSERT_EQ(boot[0]->sites.size(), 1u);
  EXPECT_NE(boot[0]->sites[0].resolved_by.find("PyMethodDef"), std::string::npos);
}

TEST_F(TargetTest, MethodTablesOfTheThreadModule) {
  Interpreter debian = DebianPython();
  ASSERT_TRUE(debian.present()) << debian.missing;
  auto elf = ElfFile::Open(debian.binary);
  ASSERT_TRUE(elf.ok());
  auto tables = FindMethodTables(**elf);
  auto start = FindMethod(tables, "start_new_thread", {"allocate_lock", "get_ident"});
  ASSERT_TRUE(start);
  EXPECT_TRUE((*elf)->IsText(*start));
  // "acquire_lock" exists in _imp and in the lock type; siblings pick the lock's table.
  auto imp = FindMethod(tables, "acquire_lock", {"release_lock", "lock_held"});
  auto lock = FindMethod(tables, "acquire_lock", {"release_lock", "locked_lock"});
  ASSERT_TRUE(imp && lock);
  EXPECT_NE(*imp, *lock);
  EXPECT_FALSE(FindMethod(tables, "no_such_method", {}));
}

// Every interpreter of the matrix, one test each (named by its label).
class MatrixTest : public TargetTest, public ::testing::WithParamInterface<Interpreter> {
 protected:
  // The only gaps anywhere: 2.7 has no C-level join, and its locks are not traced; a
  // free-threaded build has no GIL; 3.15's locks (PyThread locks too) are PyMutexes, so there is
  // no semaphore wait outside the parking lot.
  static bool ByDesign(const loader::PlannedProbe& p, const InspectedProcess& t) {
    using loader::ProbeId;
    if (t.info.version.major == 2) return p.id == ProbeId::kThreadJoin || p.id == ProbeId::kLockWait;
    if (t.info.free_threaded && p.spec().feature == loader::Feature::kGil) return true;
    return t.info.version.AtLeast(3, 15) &&
           (p.id == ProbeId::kSemWait || p.id == ProbeId::kSemWaitReturn);
  }
  // An entry probe shared with a return probe must be at the entry: past an endbr64 only when
  // the next instruction is emulated too (3.14's take_gil: endbr64; sub rsp).
  bool EntryThatMustStaySingleStepped(const InspectedProcess& t, const loader::ProbeSite& s) {
    std::string_view next = t.interpreter_elf->BytesAt(s.vaddr + 4, 15);
    auto insns = dis_->Decode(next, s.vaddr + 4, 1);
    return s.instruction == "endbr64" && !insns.empty() &&
           ClassifyUprobeSite(next.substr(0, insns[0].size)) != UprobeSiteKind::kEmulated;
  }
};


TEST_P(MatrixTest, VersionSymbolsAndPlan) {
  const Interpreter& in = GetParam();
  if (!in.present()) {
    if (in.required) FAIL() << in.label << " is required: " << in.missing;
    std::fprintf(stderr, "%s\n", in.SkipLine().c_str());
    GTEST_SKIP() << in.missing;
  }
  auto t = InspectPythonBinary(*dis_, in.binary);
  ASSERT_TRUE(t.ok()) << in.label << ": " << t.status().ToString();
  // pyenv keeps every symbol and links libpython; the distributions' builds are stripped.
  if (in.kind == "pyenv") {
    EXPECT_TRUE(t->info.full_symbols);
    EXPECT_TRUE(t->info.interpreter_is_library);
  } else if (in.kind == "system" || in.kind == "debian-unstable") {
    EXPECT_FALSE(t->info.full_symbols);
  }
  EXPECT_EQ(t->info.version.ToString(), ::threadscope::interpreters::SelfReportedVersion(in));
  const bool py2 = t->info.version.major == 2;
  // Free-threaded builds (3.13t+, from THREADSCOPE_EXTRA_PYTHONS) have no GIL to trace.
  const bool no_gil = t->info.free_threaded;
  settings::TraceSettings full;
  full.gil_mode = settings::GilMode::kFull;
  auto plan = loader::PlanProbes(*t, *dis_, full);
  size_t unavailable = 0;
  for (const auto& p : plan.probes) {
    if (!p.unavailable.empty()) {
      ++unavailable;
      if (!ByDesign(p, *t)) {
        ADD_FAILURE() << in.label << ": probe " << p.name() << " unavailable: " << p.unavailable;
      }
    }
    if (p.required()) {
      EXPECT_TRUE(p.unavailable.empty()) << in.label << ": " << p.name();
    }
    if (in.kind != "pyenv" && in.kind != "extra" && HotPath(p.id)) {
      // Stripped builds: every probe on the hot path sits on an instruction the kernel
      // emulates, but an entry whose first two instructions are not (the return probe needs
      // it there).
      for (const auto& s : p.sites) {
        if (EntryThatMustStaySingleStepped(*t, s)) continue;
        EXPECT_EQ(s.site_kind, UprobeSiteKind::kEmulated)
            << in.label << ": " << p.name() << " " << s.Describe();
      }
    }
  }
  EXPECT_LE(unavailable, 2u);
  if (no_gil) {
    EXPECT_FALSE(plan.gil.traced) << in.label;
    EXPECT_NE(plan.gil.unavailable.find("free-threaded"), std::string::npos)
        << in.label << ": " << plan.gil.unavailable;
  } else {
    // The GIL everywhere else, 2.7's plain-lock GIL included.
    EXPECT_TRUE(plan.gil.traced) << in.label << ": " << plan.gil.unavailable;
    EXPECT_TRUE(plan.gil.forced_known) << in.label;
    if (in.kind != "pyenv" && in.kind != "extra") {
      // Without symbols, every drop (the inlined copies too) must still be found.
      EXPECT_TRUE(plan.gil.drops_complete) << in.label << ": " << plan.gil.notes;
    }
  }
  if (py2) {
    EXPECT_NE(plan.gil_lock_addr, 0u);
  }
  // --gil waits (the default): take_gil's condition wait (an emulated call) and the
  // instruction after it, on every 3.x with a GIL; 2.7 keeps every take and drop.
  auto waits = loader::PlanProbes(*t, *dis_);
  if (!no_gil) {
    EXPECT_TRUE(waits.gil.traced) << in.label << ": " << waits.gil.unavailable;
    if (py2) {
      EXPECT_EQ(waits.gil.mode, loader::GilMode::kFull) << in.label;
    } else {
      EXPECT_EQ(waits.gil.mode, loader::GilMode::kWaits) << in.label << ": " << waits.gil.notes;
      auto wait = waits.Find(loader::ProbeId::kGilWait);
      auto after = waits.Find(loader::ProbeId::kGilWaitReturn);
      ASSERT_EQ(wait.size(), 1u) << in.label;
      ASSERT_EQ(after.size(), 1u) << in.label;
      ASSERT_FALSE(wait[0]->sites.empty()) << in.label;
      EXPECT_EQ(wait[0]->sites.size(), after[0]->sites.size()) << in.label;
      for (const auto& s : wait[0]->sites) {
        EXPECT_EQ(s.site_kind, UprobeSiteKind::kEmulated) << in.label << ": " << s.Describe();
      }
      // Where the wait returns: the `cmp eax, ETIMEDOUT` right after the call is
      // single-stepped; the branch that follows it is emulated.
      for (const auto& s : after[0]->sites) {
        EXPECT_EQ(s.site_kind, UprobeSiteKind::kEmulated) << in.label << ": " << s.Describe();
      }
      // No probe on the uncontended path: not take_gil's entry, no drop.
      EXPECT_TRUE(waits.Find(loader::ProbeId::kGilTake).empty()) << in.label;
      EXPECT_TRUE(waits.Find(loader::ProbeId::kGilDrop).empty()) << in.label;
      EXPECT_TRUE(waits.Find(loader::ProbeId::kGilDropInlined).empty()) << in.label;
      EXPECT_EQ(waits.gil_locked_addr != 0, t->info.version.minor == 6) << in.label;
      EXPECT_EQ(waits.gil.notes.find("branch targets"), std::string::npos) << waits.gil.notes;
    }
  }
  if (t->info.version.major == 3) {
    // Tracing every acquire finds all its probes too, and more of them.
    settings::TraceSettings all;
    all.locks = settings::LockMode::kAll;
    auto all_plan = loader::PlanProbes(*t, *dis_, all);
    for (const auto& p : all_plan.probes) {
      if (ByDesign(p, *t)) continue;
      EXPECT_TRUE(p.unavailable.empty()) << in.label << ": " << p.name() << ": " << p.unavailable;
    }
    EXPECT_GT(all_plan.probes.size(), plan.probes.size());
  }
  auto expected_joins = py2                              ? model::JoinVisibility::kNone
                        : t->info.version.AtLeast(3, 13) ? model::JoinVisibility::kExact
                                                         : model::JoinVisibility::kBlockingOnly;
  EXPECT_EQ(loader::PlannedCapabilities(plan).threads.joins, expected_joins) << in.label;
}

INSTANTIATE_TEST_SUITE_P(Interpreters, MatrixTest, ::testing::ValuesIn(Matrix()),
                         [](const ::testing::TestParamInfo<Interpreter>& info) {
                           std::string name = info.param.label;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

TEST_F(TargetTest, NotPythonIsRefusedClearly) {
  auto t = InspectPythonBinary(*dis_, "/bin/ls");
  EXPECT_EQ(t.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(t.status().message().find("not a CPython"), std::string::npos);
  ProcFs proc;
  EXPECT_EQ(InspectPythonProcess(proc, *dis_, -4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(InspectPythonProcess(proc, *dis_, 0x3fffffff).status().code(), StatusCode::kNotFound);
  // This test binary is a live process, and not CPython.
  auto self = InspectPythonProcess(proc, *dis_, getpid());
  EXPECT_EQ(self.status().code(), StatusCode::kFailedPrecondition) << self.status().ToString();
}

TEST_F(TargetTest, ElfRejectsNonElf) {
  std::string path = threadscope::testing::TestDir("target_test") + "/not_elf";
  std::ofstream(path) << "#!/bin/sh\necho hello, this is not ELF\n";
  auto e = ElfFile::Open(path);
  EXPECT_EQ(e.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(ElfFile::Open("/nonexistent/x").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace threadscope::target
