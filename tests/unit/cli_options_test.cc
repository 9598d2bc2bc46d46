// The CLI's flag schema (client/cli_options.h): what each command line becomes, and the one-line
// usage errors, without connecting to anything.
#include "client/cli_options.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "client/exit_codes.h"
#include "settings/trace_settings.h"

namespace threadscope::client {
namespace {

ParsedCommandLine Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "threadscope");
  return ParseCommandLine(args);
}

CliInvocation Ok(std::vector<std::string> args) {
  auto p = Parse(args);
  EXPECT_TRUE(p.invocation) << p.error;
  EXPECT_TRUE(p.error.empty()) << p.error;
  return p.invocation ? *p.invocation : CliInvocation{};
}

// The usage error, checked to be one: exit 2, nothing to run.
std::string UsageError(std::vector<std::string> args) {
  auto p = Parse(args);
  EXPECT_FALSE(p.invocation);
  EXPECT_EQ(p.exit_code, kExitUsage);
  EXPECT_EQ(p.error.find('\n'), std::string::npos) << p.error;
  return p.error;
}

TEST(CliOptionsTest, DefaultsAreTheSettingsDefaults) {
  CliInvocation inv = Ok({"run", "--", "python3", "-c", "pass"});
  EXPECT_EQ(inv.command, Subcommand::kRun);
  EXPECT_EQ(inv.argv, (std::vector<std::string>{"python3", "-c", "pass"}));
  EXPECT_FALSE(inv.trace.live_view);  // the command owns the terminal
  auto s = settings::ValidateAttachOptions(inv.trace.attach);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->locks, settings::LockMode::kContended);
  EXPECT_EQ(s->lock_stack_frames, settings::kMaxStackFrames);
  EXPECT_EQ(s->acquire_stack_frames, 0);
  EXPECT_TRUE(s->gil);
  EXPECT_EQ(s->gil_mode, settings::GilMode::kWaits);
  EXPECT_EQ(s->overhead_budget, 0);
  EXPECT_EQ(s->gil_stack_threshold_ns, 1000000u);
  EXPECT_EQ(s->ring_buffer_bytes, settings::kDefaultRingBufferBytes);
  EXPECT_EQ(inv.trace.attach.lease_seconds(), 15u);
}

TEST(CliOptionsTest, TraceFlagsBecomeTheWireForm) {
  CliInvocation inv = Ok({"attach", "--locks", "all", "--acquire-stacks", "4", "--lock-stacks",
                          "2", "--gil", "off", "--gil-stacks", "8", "--gil-stack-threshold",
                          "500us", "--lock-threshold", "20ms", "--ring-buffer", "64K", "--lease",
                          "2m", "--label", "service=api", "--label", "team=x", "-o", "json",
                          "--duration", "5s", "42"});
  EXPECT_EQ(inv.command, Subcommand::kAttach);
  EXPECT_EQ(inv.pid, 42);
  EXPECT_EQ(inv.trace.output, OutputFormat::kJson);
  EXPECT_DOUBLE_EQ(inv.trace.duration_s, 5);
  const v1::AttachOptions& a = inv.trace.attach;
  EXPECT_EQ(a.locks(), v1::LOCK_TRACING_ALL);
  EXPECT_EQ(a.acquire_stack_frames(), 4u);
  EXPECT_EQ(a.lock_stack_frames(), 2u);
  EXPECT_FALSE(a.gil());
  EXPECT_EQ(a.gil_stack_frames(), 8u);
  EXPECT_EQ(a.gil_stack_threshold_ns(), 500000u);
  EXPECT_EQ(a.lock_threshold_ns(), 20000000u);
  EXPECT_EQ(a.ring_buffer_bytes(), 64u << 10);
  EXPECT_EQ(a.lease_seconds(), 120u);
  EXPECT_EQ(a.labels().at("service"), "api");
  EXPECT_EQ(a.labels().at("team"), "x");
}

TEST(CliOptionsTest, GilModesAndTheOverheadBudget) {
  const v1::AttachOptions full =
      Ok({"attach", "--gil", "full", "--overhead-budget", "1%", "42"}).trace.attach;
  EXPECT_TRUE(full.gil());
  EXPECT_EQ(full.gil_mode(), v1::GIL_MODE_FULL);
  EXPECT_EQ(full.overhead_budget(), "1%");
  auto s = settings::ValidateAttachOptions(full);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->gil_mode, settings::GilMode::kFull);
  EXPECT_DOUBLE_EQ(s->overhead_budget, 0.01);
  for (const char* waits : {"waits", "on"}) {  // "on": the old spelling of the default
    const v1::AttachOptions a = Ok({"run", "--gil", waits, "--", "true"}).trace.attach;
    EXPECT_TRUE(a.gil());
    EXPECT_EQ(a.gil_mode(), v1::GIL_MODE_WAITS) << waits;
  }
  EXPECT_FALSE(Ok({"run", "--gil", "off", "--", "true"}).trace.attach.gil());
  std::string gil = UsageError({"run", "--gil", "most", "--", "true"});
  EXPECT_NE(gil.find("waits, full, on, off"), std::string::npos) << gil;
  EXPECT_EQ(UsageError({"run", "--overhead-budget", "cheap", "--", "true"}),
            "overhead_budget (--overhead-budget): overhead budget 'cheap' is not a number "
            "(1%, 0.5%, 0.01)");
  EXPECT_NE(UsageError({"attach", "--overhead-budget", "0", "1"}).find("--overhead-budget"),
            std::string::npos);
  CliInvocation check = Ok({"check", "--baseline", "b.json", "--gil", "full", "--", "true"});
  EXPECT_EQ(check.check.run_flags,
            (std::vector<std::string>{"--locks", "contended", "--gil", "full"}));
}

// The messages tests/integration/bad_input_test.py expects of the binary, from the schema.
TEST(CliOptionsTest, BadTraceFlagsAreOneLineUsageErrors) {
  EXPECT_NE(UsageError({"attach", "--duration", "abc", "1"}).find("--duration"), std::string::npos);
  EXPECT_NE(UsageError({"attach", "--ring-buffer", "12x", "1"}).find("--ring-buffer"),
            std::string::npos);
  std::string locks = UsageError({"attach", "--locks", "bogus", "1"});
  EXPECT_NE(locks.find("--locks"), std::string::npos);
  EXPECT_NE(locks.find("bogus"), std::string::npos);
  EXPECT_NE(locks.find("contended, all, off"), std::string::npos);
  EXPECT_NE(UsageError({"run", "--lock-threshold", "soon", "--", "true"}).find("--lock-threshold"),
            std::string::npos);
  // Range errors are the settings' own messages, the ones the daemon sends a raw API client.
  EXPECT_EQ(UsageError({"run", "--lock-stacks", "9", "--", "true"}),
            "lock_stack_frames (--lock-stacks): 9 is not in 0-8");
  EXPECT_EQ(UsageError({"run", "--acquire-stacks", "-1", "--", "true"}),
            "acquire_stack_frames (--acquire-stacks): -1 is not in 0-8");
  EXPECT_EQ(UsageError({"run", "--gil-stacks", "12", "--", "true"}),
            "gil_stack_frames (--gil-stacks): 12 is not in 0-8");
  EXPECT_EQ(UsageError({"run", "--ring-buffer", "12345", "--", "true"}),
            "ring_buffer_bytes (--ring-buffer): must be 0 or a power of two >= 65536, got 12345");
  EXPECT_NE(UsageError({"run", "--gil", "maybe", "--", "true"}).find("--gil"), std::string::npos);
  EXPECT_NE(UsageError({"run", "--gil-stack-threshold", "0", "--", "true"})
                .find("--gil-stack-threshold"),
            std::string::npos);
  EXPECT_NE(UsageError({"run", "--label", "pid=3", "--", "true"}).find("--label"),
            std::string::npos);
  EXPECT_NE(UsageError({"run", "--lease", "0", "--", "true"}).find("--lease"), std::string::npos);
  EXPECT_NE(UsageError({"run", "--interval", "1ms", "--", "true"}).find("--interval"),
            std::string::npos);
}

TEST(CliOptionsTest, CommandShapesAreChecked) {
  EXPECT_NE(UsageError({"run"}).find("no command"), std::string::npos);
  UsageError({"attach", "notapid"});
  UsageError({"attach", "-7"});
  UsageError({"frobnicate"});
  UsageError({});  // a subcommand is required
  EXPECT_NE(UsageError({"record", "-o", "x.tsrec"}).find("--pid"), std::string::npos);
  EXPECT_NE(UsageError({"record", "-o", "x.tsrec", "--pid", "3", "--", "true"}).find("not both"),
            std::string::npos);
  EXPECT_NE(UsageError({"status", "--", "true"}).find("only accepted by run, record and check"),
            std::string::npos);
  EXPECT_NE(UsageError({"dump"}).find("give a pid or --core"), std::string::npos);
  EXPECT_NE(UsageError({"dump", "3", "--exe", "/bin/true"}).find("--exe goes with --core"),
            std::string::npos);
  EXPECT_NE(UsageError({"run", "--perfetto-out", "a", "--chrome-out", "b", "--", "true"})
                .find("not both"),
            std::string::npos);
}

TEST(CliOptionsTest, UnwritableOutputsAreRefusedBeforeTracing) {
  std::string e = UsageError({"run", "--perfetto-out", "/nonexistent/t.pftrace", "--", "true"});
  EXPECT_NE(e.find("--perfetto-out"), std::string::npos);
  EXPECT_NE(e.find("/nonexistent/t.pftrace"), std::string::npos);
  EXPECT_NE(UsageError({"export", "in.tsrec", "-o", "/nonexistent/x"}).find("export -o"),
            std::string::npos);
  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  Ok({"run", "--report", std::string(tmp) + "/r.json", "--", "true"});
}

TEST(CliOptionsTest, RecordReportExportDumpStatus) {
  CliInvocation rec = Ok({"record", "-o", "x.tsrec", "--pid", "7", "--locks", "off"});
  EXPECT_EQ(rec.command, Subcommand::kRecord);
  EXPECT_EQ(rec.trace.record_file, "x.tsrec");
  EXPECT_EQ(rec.pid, 7);
  EXPECT_EQ(rec.trace.attach.locks(), v1::LOCK_TRACING_OFF);
  EXPECT_FALSE(rec.trace.live_view);

  CliInvocation rep = Ok({"report", "x.tsrec", "-o", "json"});
  EXPECT_EQ(rep.command, Subcommand::kReport);
  EXPECT_EQ(rep.input, "x.tsrec");
  EXPECT_EQ(rep.trace.output, OutputFormat::kJson);

  for (auto [name, format] : {std::pair{"t.json", "chrome"}, std::pair{"t.pb.gz", "pprof"},
                              std::pair{"t.pprof", "pprof"}, std::pair{"t.folded", "collapsed"},
                              std::pair{"t.collapsed", "collapsed"},
                              std::pair{"t.pftrace", "perfetto"}}) {
    CliInvocation ex = Ok({"export", "x.tsrec", "-o", name});
    EXPECT_EQ(ex.command, Subcommand::kExport);
    EXPECT_EQ(ex.export_format, format) << name;
  }
  EXPECT_EQ(Ok({"export", "x.tsrec", "-o", "t.json", "--format", "perfetto"}).export_format,
            "perfetto");

  CliInvocation core = Ok({"dump", "--core", "c", "-o", "json"});
  EXPECT_EQ(core.command, Subcommand::kDump);
  EXPECT_TRUE(core.dump.json);
  EXPECT_TRUE(core.connect.no_daemon);  // a core is read with the caller's own rights

  CliInvocation st = Ok({"--server", "unix:/x.sock", "status"});
  EXPECT_EQ(st.command, Subcommand::kStatus);
  EXPECT_TRUE(st.connect.server_explicit);
}

TEST(CliOptionsTest, CheckPassesTheConnectionToEachRun) {
  CliInvocation inv = Ok({"--server", "unix:/s.sock", "--no-daemon", "check", "--baseline",
                          "b.json", "--locks", "all", "--", "python3", "x.py"});
  EXPECT_EQ(inv.command, Subcommand::kCheck);
  EXPECT_EQ(inv.argv, (std::vector<std::string>{"python3", "x.py"}));
  EXPECT_EQ(inv.check.baseline, "b.json");
  EXPECT_EQ(inv.check.global_flags,
            (std::vector<std::string>{"--server", "unix:/s.sock", "--no-daemon"}));
  EXPECT_EQ(inv.check.run_flags, (std::vector<std::string>{"--locks", "all", "--gil", "on"}));
}

TEST(CliOptionsTest, HelpAndVersionExitZero) {
  auto help = Parse({"--help"});
  EXPECT_FALSE(help.invocation);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("attach"), std::string::npos);
  auto version = Parse({"--version"});
  EXPECT_FALSE(version.invocation);
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_FALSE(version.out.empty());
}

// Everything after the first "--" is the command's, even what looks like our flags.
TEST(CliOptionsTest, TheCommandIsTakenVerbatim) {
  CliInvocation inv = Ok({"run", "--", "prog", "--locks", "bogus", "--", "x"});
  EXPECT_EQ(inv.argv, (std::vector<std::string>{"prog", "--locks", "bogus", "--", "x"}));
}

}  // namespace
}  // namespace threadscope::client
