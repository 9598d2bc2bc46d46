// What the model can know, from the plan and what attached: the pure derivation the engine uses
// instead of matching probe names.
#include "daemon/loader/capabilities.h"

#include <gtest/gtest.h>

namespace threadscope::loader {
namespace {

using model::JoinVisibility;

class CapabilitiesTest : public ::testing::Test {
 protected:
  // Plans `id` (placed at one made-up site, or unavailable), feeding what the catalogue says
  // unless `feeds` narrows it, and records whether it attached.
  void Add(ProbeId id, bool placed, bool attached,
           std::optional<CapabilitySet> feeds = std::nullopt) {
    PlannedProbe p(id);
    if (feeds) p.feeds = *feeds;
    if (placed && p.kind != ProbeKind::kRawTracepoint) {
      ProbeSite s;
      s.location = "somewhere";
      p.sites.push_back(s);
    } else if (!placed) {
      p.unavailable = "not on this build";
    }
    plan_.probes.push_back(p);
    ProbeAttachResult r;
    r.id = id;
    r.attached = placed && attached;
    r.reason = r.attached ? "here" : placed ? "the kernel said no" : p.unavailable;
    results_.push_back(r);
  }
  void AddAttached(ProbeId id, std::optional<CapabilitySet> feeds = std::nullopt) {
    Add(id, true, true, feeds);
  }
  ModelCapabilities Derive() const { return DeriveCapabilities(plan_, results_); }

  void Lifecycle() {
    for (ProbeId id : {ProbeId::kThreadStart, ProbeId::kThreadStartReturn,
                       ProbeId::kThreadClone, ProbeId::kThreadExit, ProbeId::kThreadRename,
                       ProbeId::kThreadBootstrap, ProbeId::kThreadBodyDone}) {
      AddAttached(id);
    }
  }
  void TracedGil() {
    plan_.gil.traced = true;
    plan_.gil.drops_complete = true;
    plan_.gil.forced_known = true;
    for (ProbeId id : {ProbeId::kGilTake, ProbeId::kGilTakeReturn, ProbeId::kGilDrop,
                       ProbeId::kGilForced}) {
      AddAttached(id);
    }
  }

  ProbePlan plan_;
  std::vector<ProbeAttachResult> results_;
};

constexpr CapabilitySet kLockWaitsOnly = static_cast<CapabilitySet>(Capability::kLockWaits);

TEST_F(CapabilitiesTest, JoinsOn313AreExactWithoutSemaphoreProbes) {
  // 3.15: no sem_wait site at all (PyMutex locks), which is a lock-tracing gap only.
  Lifecycle();
  Add(ProbeId::kSemWait, false, false, kLockWaitsOnly);
  Add(ProbeId::kSemWaitReturn, false, false, kLockWaitsOnly);
  AddAttached(ProbeId::kThreadJoin);
  AddAttached(ProbeId::kThreadJoinReturn);
  AddAttached(ProbeId::kThreadDetach);
  auto can = Derive();
  EXPECT_EQ(can.threads.joins, JoinVisibility::kExact);
  EXPECT_TRUE(can.threads.body_done_visible);
  EXPECT_FALSE(can.locks.waits);
  EXPECT_NE(can.locks.reason.find("sem_wait"), std::string::npos) << can.locks.reason;
  EXPECT_NE(can.locks.reason.find("not on this build"), std::string::npos);
}

TEST_F(CapabilitiesTest, A313JoinProbeTheKernelRefusedHidesJoins) {
  Lifecycle();
  AddAttached(ProbeId::kThreadJoin);
  Add(ProbeId::kThreadJoinReturn, true, false);
  EXPECT_EQ(Derive().threads.joins, JoinVisibility::kNone);
}

TEST_F(CapabilitiesTest, JoinsBefore313NeedTheSentinelAndTheWaits) {
  Lifecycle();
  AddAttached(ProbeId::kSemWait);
  AddAttached(ProbeId::kSemWaitReturn);
  AddAttached(ProbeId::kSemDestroy);
  AddAttached(ProbeId::kThreadJoinSentinel);
  auto can = Derive();
  EXPECT_EQ(can.threads.joins, JoinVisibility::kBlockingOnly);
  EXPECT_TRUE(can.locks.waits);
  EXPECT_TRUE(can.locks.reason.empty());

  results_[plan_.probes.size() - 4].attached = false;  // sem_wait
  EXPECT_EQ(Derive().threads.joins, JoinVisibility::kNone);
  EXPECT_FALSE(Derive().locks.waits);
}

TEST_F(CapabilitiesTest, TheReturnFallbackFeedsLockWaitsNotJoins) {
  Lifecycle();
  AddAttached(ProbeId::kSemWait);
  AddAttached(ProbeId::kSemWaitReturn);
  Add(ProbeId::kSemWaitReturnFallback, true, false);
  AddAttached(ProbeId::kThreadJoinSentinel);
  auto can = Derive();
  EXPECT_EQ(can.threads.joins, JoinVisibility::kBlockingOnly);
  EXPECT_FALSE(can.locks.waits);
}

TEST_F(CapabilitiesTest, Python27HasNoJoins) {
  Lifecycle();
  Add(ProbeId::kThreadJoin, false, false);
  Add(ProbeId::kLockWait, false, false);
  auto can = Derive();
  EXPECT_EQ(can.threads.joins, JoinVisibility::kNone);
  EXPECT_FALSE(can.locks.waits);
}

TEST_F(CapabilitiesTest, BodyDoneNeedsItsProbe) {
  Lifecycle();
  results_[6].attached = false;  // thread_body_done
  EXPECT_FALSE(Derive().threads.body_done_visible);
}

TEST_F(CapabilitiesTest, EveryGilTakeAndDropProbeMustAttach) {
  Lifecycle();
  TracedGil();
  AddAttached(ProbeId::kGilDropInlined);
  EXPECT_TRUE(Derive().gil.traced);
  EXPECT_TRUE(Derive().gil.forced_known);
  results_.back().attached = false;
  results_.back().reason = "EINVAL";
  auto can = Derive();
  EXPECT_FALSE(can.gil.traced);
  EXPECT_NE(can.gil.unavailable.find("gil_drop_inlined"), std::string::npos)
      << can.gil.unavailable;
  EXPECT_NE(can.gil.unavailable.find("EINVAL"), std::string::npos);
}

TEST_F(CapabilitiesTest, WithoutForcedProbesDropsAreNotToldApart) {
  Lifecycle();
  TracedGil();
  results_.back().attached = false;  // gil_forced
  auto can = Derive();
  EXPECT_TRUE(can.gil.traced);
  EXPECT_FALSE(can.gil.forced_known);
  EXPECT_NE(can.gil.notes.find("forced"), std::string::npos);
}

TEST_F(CapabilitiesTest, AGilTheBuildDoesNotHaveStaysUntraced) {
  Lifecycle();
  plan_.gil.unavailable = "free-threaded build";
  Add(ProbeId::kGilTake, false, false);
  auto can = Derive();
  EXPECT_FALSE(can.gil.traced);
  EXPECT_EQ(can.gil.unavailable, "free-threaded build");
}

TEST_F(CapabilitiesTest, AnUnplacedProbeFeedingNothingIsNoGap) {
  // Every drop inlined: gil_drop has no site and feeds nothing on that build.
  Lifecycle();
  TracedGil();
  PlannedProbe& drop = plan_.probes[plan_.probes.size() - 2];
  drop.sites.clear();
  drop.unavailable = "every drop is inlined";
  drop.feeds = 0;
  results_[plan_.probes.size() - 2].attached = false;
  AddAttached(ProbeId::kGilDropInlined);
  EXPECT_TRUE(Derive().gil.traced);
}

TEST_F(CapabilitiesTest, PlannedCapabilitiesAssumeEveryPlacedProbeAttaches) {
  Lifecycle();
  Add(ProbeId::kSemWait, false, false, kLockWaitsOnly);
  AddAttached(ProbeId::kThreadJoin);
  AddAttached(ProbeId::kThreadJoinReturn);
  TracedGil();
  for (auto& r : results_) r.attached = false;  // ignored: nothing was attached yet
  auto can = PlannedCapabilities(plan_);
  EXPECT_EQ(can.threads.joins, JoinVisibility::kExact);
  EXPECT_TRUE(can.gil.traced);
  EXPECT_FALSE(can.locks.waits);
}

}  // namespace
}  // namespace threadscope::loader
