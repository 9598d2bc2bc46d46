// Finding take_gil, every drop_gil copy and the forced switches without .symtab, on the
// interpreters of the matrix (tests/interpreters.json).
//
// Ground truth comes from the pyenv builds, which keep their symbols: a copy stripped with
// `objcopy --strip-all` must give the same sites, in the functions .symtab names. Debian's
// stripped builds (12's 3.11, unstable's 3.13-3.15) are checked for the structure every CPython
// build has, and, for the exact builds the reference (cpython-thread-probe-points.md §10.3)
// analysed by hand, for the counts that analysis found.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "daemon/loader/capabilities.h"
#include "daemon/loader/probe_plan.h"
#include "daemon/target/code_map.h"
#include "daemon/target/debug_offsets.h"
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"
#include "daemon/target/python_process.h"
#include "tests/unit/interpreters.h"

namespace threadscope::loader {
namespace {

using ::threadscope::interpreters::Interpreter;

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// The matrix (tests/interpreters.json) entries of one kind; a matrix that cannot be read
// becomes one required entry failing with the reason.
std::vector<Interpreter> OfKind(const std::string& kind) {
  auto m = ::threadscope::interpreters::Load();
  if (!m.ok()) {
    Interpreter broken;
    broken.label = "matrix";
    broken.kind = kind;
    broken.required = true;
    broken.missing = m.status().ToString();
    return {broken};
  }
  std::vector<Interpreter> out;
  for (auto& in : *m) {
    if (in.kind == kind) out.push_back(std::move(in));
  }
  return out;
}

std::string TestName(const ::testing::TestParamInfo<Interpreter>& info) {
  std::string name = info.param.label;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

// Skips an absent optional interpreter (naming it), fails on an absent required one.
#define REQUIRE_PRESENT(in)                                                  \
  do {                                                                       \
    if (!(in).present()) {                                                   \
      if ((in).required) FAIL() << (in).label << " is required: " << (in).missing; \
      std::fprintf(stderr, "%s\n", (in).SkipLine().c_str());               \
      GTEST_SKIP() << (in).missing;                                          \
    }                                                                        \
  } while (0)

std::vector<ProbeSite> Sites(const ProbePlan& plan, ProbeId id) {
  std::vector<ProbeSite> out;
  for (const auto* p : plan.Find(id)) out.insert(out.end(), p->sites.begin(), p->sites.end());
  return out;
}

std::set<uint64_t> Vaddrs(const std::vector<ProbeSite>& sites) {
  std::set<uint64_t> out;
  for (const auto& s : sites) out.insert(s.vaddr);
  return out;
}

class GilDiscoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = target::Disassembler::Create();
    ASSERT_TRUE(d.ok());
    dis_ = std::move(d).value();
  }
  ProbePlan Plan(const target::InspectedProcess& t) {
    settings::TraceSettings all;
    all.locks = settings::LockMode::kAll;
    all.gil_mode = settings::GilMode::kFull;
    return PlanProbes(t, *dis_, all);
  }
  std::unique_ptr<target::Disassembler> dis_;
};

// --------------------------------------------------------------- pyenv builds, stripped

class StrippedPyenvTest : public GilDiscoveryTest,
                          public ::testing::WithParamInterface<Interpreter> {
 protected:
  // The build's libpython, and a copy of it stripped of everything but .dynsym.
  void Strip(std::string* lib, std::string* stripped) {
    auto t = target::InspectPythonBinary(*dis_, GetParam().binary);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    *lib = t->info.interpreter.host_path;
    *stripped = Env("TEST_TMPDIR", "/tmp") + "/" + GetParam().label;
    mkdir(stripped->c_str(), 0700);
    *stripped += lib->substr(lib->rfind('/'));
    ASSERT_EQ(std::system(("objcopy --strip-all '" + *lib + "' '" + *stripped + "'").c_str()), 0);
  }
};

TEST_P(StrippedPyenvTest, FindsWhatSymbolsName) {
  REQUIRE_PRESENT(GetParam());
  const std::string version = GetParam().label;
  std::string lib, stripped;
  ASSERT_NO_FATAL_FAILURE(Strip(&lib, &stripped));

  auto full = target::InspectPythonBinary(*dis_, lib);
  auto bare = target::InspectPythonBinary(*dis_, stripped);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  ASSERT_TRUE(bare.ok()) << bare.status().ToString();
  ASSERT_TRUE(full->info.full_symbols);
  ASSERT_FALSE(bare->info.full_symbols);
  ProbePlan with = Plan(*full), without = Plan(*bare);

  if (full->info.version.major == 2) {
    // 2.7's GIL is the static interpreter_lock: only .symtab knows where it is.
    EXPECT_TRUE(with.gil.traced);
    EXPECT_FALSE(without.gil.traced);
    EXPECT_NE(without.gil.unavailable.find(".symtab"), std::string::npos);
    return;
  }

  // The same probes at the same addresses, every one of them: threads and locks through the
  // _thread method tables, the GIL through its condition-variable calls.
  ASSERT_EQ(with.probes.size(), without.probes.size());
  for (size_t i = 0; i < with.probes.size(); ++i) {
    const auto& a = with.probes[i];
    const auto& b = without.probes[i];
    ASSERT_EQ(a.id, b.id);
    EXPECT_EQ(a.unavailable, b.unavailable) << a.name();
    EXPECT_EQ(a.kind, b.kind) << a.name();
    EXPECT_EQ(Vaddrs(a.sites), Vaddrs(b.sites)) << version << " " << a.name();
  }
  EXPECT_TRUE(without.gil.traced) << without.gil.unavailable;
  EXPECT_TRUE(without.gil.drops_complete) << without.gil.notes;
  EXPECT_TRUE(without.gil.forced_known) << without.gil.notes;
  EXPECT_EQ(without.gil.take_functions, with.gil.take_functions);
  EXPECT_EQ(without.gil.drop_functions, with.gil.drop_functions);
  EXPECT_EQ(without.gil.inlined_drops, with.gil.inlined_drops);

  // ... and those are the functions .symtab names.
  const target::ElfFile& elf = *full->interpreter_elf;
  auto function_of = [&](uint64_t vaddr) {
    auto f = elf.FunctionContaining(vaddr);
    return f ? f->name : std::string("?");
  };
  std::set<std::string> takes;
  for (const auto& s : Sites(without, ProbeId::kGilTake)) takes.insert(function_of(s.vaddr));
  std::set<std::string> named_takes = {"take_gil"};
  for (const auto& c : elf.FindClones("take_gil")) {
    if (c.name.find(".cold") == std::string::npos) named_takes.insert(c.name);
  }
  EXPECT_EQ(takes, named_takes);
  for (const auto& s : Sites(without, ProbeId::kGilDrop)) {
    EXPECT_EQ(function_of(s.vaddr).rfind("drop_gil", 0), 0u) << s.Describe();
  }
  for (const auto& s : Sites(without, ProbeId::kGilDropInlined)) {
    EXPECT_NE(function_of(s.vaddr).rfind("drop_gil", 0), 0u) << s.Describe();
  }
  std::string handler =
      full->info.version.AtLeast(3, 12) ? "_Py_HandlePending" : "_PyEval_EvalFrameDefault";
  auto forced = Sites(without, ProbeId::kGilForced);
  ASSERT_FALSE(forced.empty());
  for (const auto& s : forced) {
    EXPECT_EQ(function_of(s.vaddr).rfind(handler, 0), 0u) << s.Describe();
    EXPECT_EQ(s.site_kind, target::UprobeSiteKind::kEmulated) << s.Describe();
  }
}

TEST_P(StrippedPyenvTest, ColdFragmentsBelongToTheFunctionThatJumpsIntoThem) {
  REQUIRE_PRESENT(GetParam());
  const std::string version = GetParam().label;
  std::string lib, stripped;
  ASSERT_NO_FATAL_FAILURE(Strip(&lib, &stripped));
  auto full = target::ElfFile::Open(lib);
  auto bare = target::ElfFile::Open(stripped);
  ASSERT_TRUE(full.ok() && bare.ok());
  target::CodeMap code(**bare, *dis_);
  // Fragments the compiler shares (several "X.cold" labels on one `abort()` call) have no one
  // owner: only fragments with an unwind entry of their own, and one label, are checked.
  std::map<uint64_t, int> labels;
  for (const auto& sym : (*full)->symbols()) {
    if (sym.is_function && !sym.from_dynsym) ++labels[sym.value];
  }
  size_t cold = 0, right = 0, unknown = 0;
  for (const auto& sym : (*full)->symbols()) {
    auto dot = sym.name.find(".cold");
    if (!sym.is_function || sym.from_dynsym || dot == std::string::npos) continue;
    auto owner = (*full)->FindSymbol(sym.name.substr(0, dot));
    if (!owner || !owner->is_function || labels[sym.value] != 1) continue;
    auto range = code.RangeAround(sym.value);
    if (!range || range->begin != sym.value || range->end != sym.value + sym.size) continue;
    ++cold;
    auto found = code.OwnerOf(sym.value);
    ASSERT_TRUE(found);
    if (*found == owner->value) {
      ++right;
    } else if (*found == sym.value) {
      // Taken as its own function: only right when it has no one owner, i.e. several
      // functions (as .symtab names them) jump into it.
      ++unknown;
      std::set<std::string> jumpers;
      for (uint64_t source : code.JumpsInto(*range)) {
        auto f = (*full)->FunctionContaining(source);
        jumpers.insert(f ? f->name.substr(0, f->name.find(".cold")) : "?");
      }
      EXPECT_NE(jumpers.size(), 1u) << sym.name << " is only jumped into from " << *jumpers.begin();
    } else {
      ADD_FAILURE() << sym.name << " attributed to " << (*full)->NameAt(*found).value_or("?");
    }
  }
  if (cold == 0) GTEST_SKIP() << version << " has no .cold fragments";
  EXPECT_GT(right, 0u) << right << " of " << cold << " (" << unknown << " shared)";
}

INSTANTIATE_TEST_SUITE_P(Interpreters, StrippedPyenvTest, ::testing::ValuesIn(OfKind("pyenv")),
                         TestName);

// --------------------------------------------------------------- distribution builds

// Builds cpython-thread-probe-points.md §10.3 analysed by hand (objdump and gdb on these exact
// binaries, by GNU build id): their counts, beyond the structure every build has.
struct Expected {
  const char* build_id;
  size_t releases;  // pthread_cond_signal releases outside take_gil
  size_t inlined_functions;
};
constexpr Expected kAnalysed[] = {
    {"f9de766c3a031e0782095d175ff04e394a2744d2", 13, 9},  // Debian unstable 3.13.18
    {"cccda113240f3ba4c016991793a62dc0cfe01613", 9, 6},   // 3.14.10
    {"d41ac9e28ff414f10df5da23fb051683a7b4adcf", 10, 6},  // 3.15.2
};

class DebianUnstableTest : public GilDiscoveryTest,
                           public ::testing::WithParamInterface<Interpreter> {};

TEST_P(DebianUnstableTest, EveryGilSiteFoundWithoutSymbols) {
  REQUIRE_PRESENT(GetParam());
  auto t = target::InspectPythonBinary(*dis_, GetParam().binary);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_FALSE(t->info.full_symbols);
  ProbePlan plan = Plan(*t);
  const GilCoverage& g = plan.gil;
  ASSERT_TRUE(g.traced) << g.unavailable;
  EXPECT_TRUE(g.drops_complete) << g.notes;
  EXPECT_TRUE(g.forced_known) << g.notes;

  // One take_gil, the function PyEval_AcquireLock jumps to; probed past its endbr64 when the
  // next instruction allows it (3.14's is `sub rsp`: the entry it is).
  EXPECT_EQ(g.take_functions, 1u);
  EXPECT_NE(g.notes.find("PyEval_AcquireLock branches to it"), std::string::npos) << g.notes;
  ASSERT_EQ(Sites(plan, ProbeId::kGilTake).size(), 1u);
  EXPECT_EQ(Vaddrs(Sites(plan, ProbeId::kGilTake)), Vaddrs(Sites(plan, ProbeId::kGilTakeReturn)));

  // Two out-of-line drops (what PyEval_ReleaseLock reaches, and the final-release clone
  // take_gil calls), and the copies LTO inlined, PyEval_SaveThread's among them. Every drop is
  // probed at its release: an emulated call.
  EXPECT_EQ(g.drop_functions, 2u);
  auto drops = Sites(plan, ProbeId::kGilDrop);
  auto inlined = Sites(plan, ProbeId::kGilDropInlined);
  EXPECT_EQ(drops.size(), 2u);
  EXPECT_GE(inlined.size(), 5u);
  bool save_thread = false;
  for (const auto& s : inlined) save_thread |= s.location.rfind("PyEval_SaveThread+", 0) == 0;
  EXPECT_TRUE(save_thread);
  for (const auto& s : drops) EXPECT_EQ(s.instruction.rfind("call", 0), 0u) << s.Describe();
  for (const auto& s : inlined) EXPECT_EQ(s.instruction.rfind("call", 0), 0u) << s.Describe();
  for (ProbeId id : {ProbeId::kGilDrop, ProbeId::kGilDropInlined, ProbeId::kGilForced}) {
    for (const auto& s : Sites(plan, id)) {
      EXPECT_EQ(s.site_kind, target::UprobeSiteKind::kEmulated) << s.Describe();
    }
  }

  // The forced switch: _Py_HandlePending's one call into _PyThreadState_Detach, under its
  // GIL-drop-request test; the inlined copy in its cold part (a stop-the-world suspend) is not.
  auto forced = Sites(plan, ProbeId::kGilForced);
  ASSERT_EQ(forced.size(), 1u);
  EXPECT_EQ(forced[0].location.rfind("_Py_HandlePending+", 0), 0u) << forced[0].Describe();
  EXPECT_TRUE(plan.Find(ProbeId::kGilDropInlinedForced).empty());

  // Every drop clears gil->locked where _PyRuntime.debug_offsets says it is (a copy whose
  // pointer arithmetic the check cannot follow is not counted).
  auto dbg = target::ReadGilDebugOffsets(*t->interpreter_elf);
  ASSERT_TRUE(dbg.ok()) << dbg.status().ToString();
  EXPECT_EQ(dbg->LockedInGil(), 16u);
  EXPECT_EQ(dbg->HolderInGil(), 8u);
  EXPECT_EQ(g.debug_offsets_disagree, 0);
  EXPECT_GE(g.debug_offsets_agree + 1, static_cast<int>(drops.size() + inlined.size()));

  // The exact builds the reference analysed by hand: the same drops.
  for (const Expected& want : kAnalysed) {
    if (t->interpreter_elf->build_id() != want.build_id) continue;
    EXPECT_EQ(drops.size() + inlined.size(), want.releases) << g.notes;
    std::set<std::string> functions;
    for (const auto& s : inlined) {
      std::string f = s.location.substr(0, s.location.find_first_of("+ "));
      if (f.size() > 5 && f.compare(f.size() - 5, 5, ".cold") == 0) f.resize(f.size() - 5);
      functions.insert(f);
    }
    EXPECT_EQ(functions.size(), want.inlined_functions) << g.notes;
  }

  // Threads: every probe placed but, on 3.15, the semaphore waits (its locks are PyMutexes),
  // and joins are exact regardless.
  auto can = PlannedCapabilities(plan);
  EXPECT_EQ(can.threads.joins, model::JoinVisibility::kExact);
  EXPECT_TRUE(can.threads.body_done_visible);
  for (const auto& p : plan.probes) {
    if (p.spec().feature == Feature::kThreads) EXPECT_TRUE(p.unavailable.empty()) << p.name();
  }
  if (t->info.version.AtLeast(3, 15)) {
    // No semaphore waits outside the parking lot: lock waits are parks, which feed them.
    for (ProbeId id : {ProbeId::kSemWait, ProbeId::kSemWaitReturn}) {
      auto p = plan.Find(id);
      ASSERT_EQ(p.size(), 1u);
      EXPECT_NE(p[0]->unavailable.find("_PySemaphore_Wait"), std::string::npos);
      EXPECT_NE(p[0]->unavailable.find("PyMutex"), std::string::npos);
      EXPECT_EQ(p[0]->feeds, 0u);
    }
  }
  // 3.13+: lock waits, wakers and frees through the parking lot on every Debian build.
  EXPECT_TRUE(can.locks.waits) << can.locks.reason;
  EXPECT_TRUE(can.locks.wakers);
  EXPECT_TRUE(can.locks.frees);
  EXPECT_FALSE(plan.Find(ProbeId::kPark).empty());
  EXPECT_FALSE(plan.Find(ProbeId::kUnpark).empty());
}

INSTANTIATE_TEST_SUITE_P(Builds, DebianUnstableTest,
                         ::testing::ValuesIn(OfKind("debian-unstable")), TestName);

TEST_F(GilDiscoveryTest, Debian12Python311) {
  auto system = OfKind("system");
  ASSERT_EQ(system.size(), 1u);
  ASSERT_TRUE(system[0].present()) << system[0].missing;
  auto t = target::InspectPythonBinary(*dis_, system[0].binary);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ProbePlan plan = Plan(*t);
  EXPECT_TRUE(plan.gil.traced) << plan.gil.unavailable;
  EXPECT_TRUE(plan.gil.drops_complete) << plan.gil.notes;
  EXPECT_EQ(plan.gil.take_functions, 1u);
  EXPECT_EQ(plan.gil.drop_functions, 1u);
  EXPECT_EQ(plan.gil.inlined_drops, 5u);
  EXPECT_EQ(plan.gil.debug_offsets_agree, -1);  // 3.11 publishes no debug offsets
  EXPECT_EQ(Sites(plan, ProbeId::kGilForced).size(), 1u);
}

}  // namespace
}  // namespace threadscope::loader
