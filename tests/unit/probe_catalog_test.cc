// The probe catalogue is well formed, and its programs are the BPF object's.
#include "daemon/loader/probe_catalog.h"

#include <gtest/gtest.h>

#include <cctype>
#include <set>
#include <string>

#include "daemon/loader/bpf_tracer.h"

namespace threadscope::loader {
namespace {

TEST(ProbeCatalogTest, OneRowPerIdInOrderWithUniqueNames) {
  std::set<std::string_view> names;
  size_t i = 0;
  for (const auto& spec : AllProbes()) {
    EXPECT_EQ(static_cast<size_t>(spec.id), i++) << spec.name;
    EXPECT_TRUE(names.insert(spec.name).second) << "duplicate " << spec.name;
    for (char c : spec.name) EXPECT_TRUE(std::islower(c) || c == '_') << spec.name;
    EXPECT_EQ(ProbeIdByName(spec.name), spec.id);
    EXPECT_EQ(&Spec(spec.id), &spec);
    EXPECT_FALSE(spec.purpose.empty()) << spec.name;
    EXPECT_FALSE(spec.found_by.empty()) << spec.name;
  }
  EXPECT_FALSE(ProbeIdByName("no_such_probe"));
}

TEST(ProbeCatalogTest, KindsProgramsAndCapabilitiesAgree) {
  for (const auto& spec : AllProbes()) {
    // Raw tracepoints run raw_tp programs and name their tracepoint; uprobes never do.
    bool raw = spec.kind == ProbeKind::kRawTracepoint;
    EXPECT_EQ(raw, !spec.tracepoint.empty()) << spec.name;
    std::string program = BpfProgramName(spec.program);
    bool raw_program = program == "ts_sched_fork" || program == "ts_sched_exit" ||
                       program == "ts_task_rename" || program == "ts_futex_wake";
    EXPECT_EQ(raw, raw_program) << spec.name << " runs " << program;
    if (raw) EXPECT_EQ(spec.alt_program, spec.program) << spec.name;
    // Every probe feeds something, and what it feeds belongs to its feature.
    EXPECT_NE(spec.feeds, 0u) << spec.name;
    for (const auto& cap : CapabilityNames(spec.feeds)) {
      bool gil = cap.rfind("gil_", 0) == 0, lock = cap.rfind("lock_", 0) == 0;
      switch (spec.feature) {
        case Feature::kGil: EXPECT_TRUE(gil) << spec.name << " feeds " << cap; break;
        case Feature::kLocks:
          EXPECT_TRUE(lock || cap == "joins") << spec.name << " feeds " << cap;
          break;
        case Feature::kThreads: EXPECT_FALSE(gil || lock) << spec.name << " feeds " << cap; break;
      }
    }
    // Only the thread lifecycle itself is required.
    if (spec.required) EXPECT_TRUE(Has(spec.feeds, Capability::kLifecycle)) << spec.name;
  }
}

TEST(ProbeCatalogTest, EveryCapabilityHasANameAndAFeeder) {
  std::set<std::string> names;
  for (Capability c : kAllCapabilities) {
    EXPECT_TRUE(names.insert(CapabilityName(c)).second);
    bool fed = false;
    for (const auto& spec : AllProbes()) fed |= Has(spec.feeds, c);
    EXPECT_TRUE(fed) << CapabilityName(c);
  }
}

TEST(ProbeCatalogTest, ProgramsAreTheSkeletonsOwn) {
  // Each BpfProgram maps to the skeleton field of the same name (bpf_tracer.cc's switch), so
  // the names docs/PROBES.md shows are the programs that run.
  Status s = BpfTracer::CheckProgramNames();
  EXPECT_TRUE(s.ok()) << s.ToString();
}

}  // namespace
}  // namespace threadscope::loader
