// The target message of a live trace, from a plan and attach results built by hand: what the
// API says about a trace without any process, ELF file or kernel.
#include "daemon/engine/target_message.h"

#include <gtest/gtest.h>

#include <optional>

namespace threadscope::engine {
namespace {

using loader::ProbeId;

class TargetMessageTest : public ::testing::Test {
 protected:
  TargetMessageTest() {
    info_.pid = 321;
    info_.ns_pid = 7;
    info_.executable = "/usr/bin/python3.12";
    info_.command_line = "python3 app.py";
    info_.interpreter.path = "/usr/lib/libpython3.12.so";
    info_.version.major = 3;
    info_.version.minor = 12;
    info_.version.micro = 1;
    info_.full_symbols = true;
    facts_.pid = 321;
    facts_.attached_ns = 123456789;
    facts_.realtime_offset_ns = -42;
    facts_.kernel_release = "6.1.0-test";
    facts_.settings.lock_threshold_ns = 1000;
    facts_.settings.labels = {{"service", "api"}};
  }
  // Plans `id` at one site (or unavailable) and says whether the kernel took it.
  void Add(ProbeId id, bool placed, bool attached) {
    loader::PlannedProbe p(id);
    if (placed) {
      loader::ProbeSite s;
      s.binary = "/usr/bin/python3.12";
      s.file_offset = 0x1234;
      s.location = "take_gil";
      s.resolved_by = ".symtab";
      s.instruction = "push rbp";
      s.site_kind = target::UprobeSiteKind::kEmulated;
      p.sites.push_back(s);
    } else {
      p.unavailable = "not on this build";
    }
    plan_.probes.push_back(p);
    loader::ProbeAttachResult r;
    r.id = id;
    r.attached = placed && attached;
    r.reason = r.attached ? "1 site" : placed ? "the kernel said no" : p.unavailable;
    results_.push_back(r);
  }
  void Lifecycle() {
    for (ProbeId id : {ProbeId::kThreadStart, ProbeId::kThreadStartReturn, ProbeId::kThreadClone,
                       ProbeId::kThreadExit, ProbeId::kThreadRename, ProbeId::kThreadBootstrap,
                       ProbeId::kThreadBodyDone, ProbeId::kThreadJoin,
                       ProbeId::kThreadJoinReturn, ProbeId::kThreadDetach}) {
      Add(id, true, true);
    }
  }
  v1::Target Build() const { return BuildTarget(info_, plan_, results_, facts_); }
  size_t Index(ProbeId id) const {
    for (size_t i = 0; i < plan_.probes.size(); ++i) {
      if (plan_.probes[i].id == id) return i;
    }
    ADD_FAILURE() << "not planned";
    return 0;
  }

  target::PythonProcess info_;
  TargetFacts facts_;
  loader::ProbePlan plan_;
  std::vector<loader::ProbeAttachResult> results_;
};

TEST_F(TargetMessageTest, TheProcessAndTheFactsAsTheApiShowsThem) {
  Lifecycle();
  plan_.trace_all_sems = true;
  plan_.locks = loader::LockMode::kAll;
  v1::Target t = Build();
  EXPECT_EQ(t.pid(), 321);
  EXPECT_EQ(t.ns_pid(), 7);
  EXPECT_EQ(t.executable(), "/usr/bin/python3.12");
  EXPECT_EQ(t.command_line(), "python3 app.py");
  EXPECT_EQ(t.interpreter(), "/usr/lib/libpython3.12.so");
  EXPECT_EQ(t.python_version(), "3.12.1");
  EXPECT_EQ(t.symbols(), v1::SYMBOL_LEVEL_FULL);
  EXPECT_EQ(t.state(), v1::TARGET_STATE_ATTACHED);
  EXPECT_EQ(t.attached_ns(), 123456789u);
  EXPECT_EQ(t.realtime_offset_ns(), -42);
  EXPECT_EQ(t.kernel_release(), "6.1.0-test");
  EXPECT_EQ(t.lock_mode(), "all");
  EXPECT_EQ(t.lock_threshold_ns(), 1000u);
  EXPECT_EQ(t.labels().at("service"), "api");
  // 3.13+'s join probe attached: joins are exact.
  EXPECT_EQ(t.join_visibility(), v1::JOIN_VISIBILITY_EXACT);
  EXPECT_TRUE(t.body_done_visible());
}

TEST_F(TargetMessageTest, EveryPlannedProbeIsListedWithWhatItGave) {
  Lifecycle();
  Add(ProbeId::kSemWait, false, false);
  Add(ProbeId::kGilTake, true, false);
  v1::Target t = Build();
  ASSERT_EQ(t.probes_size(), static_cast<int>(plan_.probes.size()));
  const v1::Probe& start = t.probes(0);
  EXPECT_EQ(start.name(), "thread_start");
  EXPECT_TRUE(start.attached());
  EXPECT_EQ(start.reason(), "1 site");
  EXPECT_EQ(start.feature(), "threads");
  ASSERT_EQ(start.sites_size(), 1);
  EXPECT_EQ(start.sites(0).file_offset(), 0x1234u);
  EXPECT_EQ(start.sites(0).execution(), target::UprobeSiteKindName(target::UprobeSiteKind::kEmulated));
  const v1::Probe& sem = t.probes(t.probes_size() - 2);
  EXPECT_EQ(sem.name(), "sem_wait");
  EXPECT_FALSE(sem.attached());
  EXPECT_EQ(sem.reason(), "not on this build");
  EXPECT_EQ(sem.sites_size(), 0);
  const v1::Probe& gil = t.probes(t.probes_size() - 1);
  EXPECT_EQ(gil.name(), "gil_take");
  EXPECT_FALSE(gil.attached());
  EXPECT_EQ(gil.reason(), "the kernel said no");
  ASSERT_EQ(gil.feeds_size(), 1);
  EXPECT_EQ(gil.feeds(0), "gil_take");
}

// What the model can know follows the plan less what the kernel refused, never probe names.
TEST_F(TargetMessageTest, CapabilitiesAreThePlansLessWhatDidNotAttach) {
  Lifecycle();
  plan_.gil.traced = true;
  plan_.gil.drops_complete = true;
  plan_.gil.forced_known = true;
  plan_.gil.take_functions = 1;
  plan_.gil.drop_functions = 2;
  plan_.gil.inlined_drops = 5;
  Add(ProbeId::kGilTake, true, true);
  Add(ProbeId::kGilTakeReturn, true, true);
  Add(ProbeId::kGilDrop, true, true);
  v1::Target t = Build();
  EXPECT_TRUE(t.gil().enabled());
  EXPECT_EQ(t.gil().take_functions(), 1u);
  EXPECT_EQ(t.gil().drop_functions(), 2u);
  EXPECT_EQ(t.gil().inlined_drops(), 5u);

  results_[Index(ProbeId::kGilTake)].attached = false;  // the kernel refused it
  results_[Index(ProbeId::kGilTake)].reason = "EINVAL";
  t = Build();
  EXPECT_FALSE(t.gil().enabled());
  EXPECT_NE(t.gil().reason().find("gil_take"), std::string::npos) << t.gil().reason();
  EXPECT_NE(t.gil().reason().find("EINVAL"), std::string::npos) << t.gil().reason();

  results_[Index(ProbeId::kThreadJoin)].attached = false;
  EXPECT_EQ(Build().join_visibility(), v1::JOIN_VISIBILITY_NONE);
}

TEST_F(TargetMessageTest, LockModeIsOffWhereLocksAreNotTraced) {
  Lifecycle();
  plan_.locks = loader::LockMode::kContended;
  plan_.trace_all_sems = false;  // 2.7: the plan says why
  EXPECT_EQ(Build().lock_mode(), "off");
}

TEST_F(TargetMessageTest, StacksSayWhereFramesComeFromOrWhyNot) {
  Lifecycle();
  plan_.stacks_unavailable = "no layout for 3.5";
  v1::Target t = Build();
  EXPECT_FALSE(t.python_stacks().enabled());
  EXPECT_EQ(t.python_stacks().reason(), "no layout for 3.5");
  plan_.stacks.emplace();
  plan_.stacks->layout.source = "_PyRuntime.debug_offsets";
  plan_.stack_frames = 8;
  plan_.stack_frames_acquire = 2;
  t = Build();
  EXPECT_TRUE(t.python_stacks().enabled());
  EXPECT_EQ(t.python_stacks().layout_source(), "_PyRuntime.debug_offsets");
  EXPECT_EQ(t.python_stacks().frames(), 8u);
  EXPECT_EQ(t.python_stacks().frames_acquire(), 2u);
  EXPECT_EQ(t.python_stacks().frames_gil(), 0u);  // the plan did not load GIL stacks
  plan_.gil_stack_frames = 4;
  plan_.gil_stack_threshold_ns = 500000;
  t = Build();
  EXPECT_EQ(t.python_stacks().frames_gil(), 4u);
  EXPECT_EQ(t.python_stacks().gil_threshold_ns(), 500000u);
}

// Paths and names come from files the target chose: the message must still serialize.
TEST_F(TargetMessageTest, StringsFromTheTargetAreValidUtf8) {
  info_.executable = "/tmp/py\xff\xfe";
  info_.command_line = "python3 \xc3(";
  Add(ProbeId::kThreadStart, true, true);
  plan_.probes.back().sites.back().location = "f\xed\xa0\x80";
  v1::Target t = Build();
  EXPECT_EQ(t.executable(), "/tmp/py\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(t.command_line(), "python3 \xef\xbf\xbd(");
  std::string wire;
  EXPECT_TRUE(t.SerializeToString(&wire));
  v1::Target back;
  EXPECT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.probes(0).sites(0).location(), "f\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

// A result list shorter than the plan (a bug) still lists every probe, as not attempted.
TEST_F(TargetMessageTest, AProbeWithoutAResultIsShownNotDropped) {
  Lifecycle();
  results_.pop_back();
  v1::Target t = Build();
  ASSERT_EQ(t.probes_size(), static_cast<int>(plan_.probes.size()));
  EXPECT_FALSE(t.probes(t.probes_size() - 1).attached());
  EXPECT_EQ(t.probes(t.probes_size() - 1).reason(), "not attempted");
}

}  // namespace
}  // namespace threadscope::engine
