// Auto-attach's pure parts: rules and their matching, the config file (hostile input too),
// containers and pods from cgroup paths, and how long an ended target stays on /metrics.
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <string>

#include "daemon/autoattach/cgroup.h"
#include "daemon/autoattach/config.h"
#include "daemon/autoattach/cpython_ready.h"
#include "daemon/autoattach/rules.h"
#include "daemon/metrics/retained.h"
#include "daemon/metrics/snapshot_metrics.h"

namespace threadscope::autoattach {
namespace {

ProcessFacts Facts(std::string exe, std::string cmdline = "", std::string cgroup = "/",
                   uid_t uid = 0) {
  ProcessFacts f;
  f.exe = std::move(exe);
  f.cmdline = std::move(cmdline);
  f.cgroup = std::move(cgroup);
  f.uid = uid;
  return f;
}

TEST(GlobTest, Matches) {
  auto g = Glob::Compile("*/python3*");
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g->Matches("/usr/bin/python3.11"));
  EXPECT_TRUE(g->Matches("/opt/x/bin/python3"));
  EXPECT_FALSE(g->Matches("/usr/bin/python2.7"));
  EXPECT_FALSE(g->Matches("python3"));  // no slash before it
  auto c = Glob::Compile("/usr/bin/python3.1[0-9]");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->Matches("/usr/bin/python3.13"));
  EXPECT_FALSE(c->Matches("/usr/bin/python3.9"));
  auto n = Glob::Compile("*[!t]");
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(n->Matches("python3.14"));
  EXPECT_FALSE(n->Matches("python3.14t"));
  EXPECT_TRUE(Glob::Compile("a?c")->Matches("abc"));
  EXPECT_TRUE(Glob::Compile("a\\*")->Matches("a*"));
  EXPECT_FALSE(Glob::Compile("a\\*")->Matches("ab"));
}

TEST(GlobTest, PathologicalPatternIsFast) {
  // One backtracking point: a*a*a*...b against a long run of a's must not explode.
  std::string pattern;
  for (int i = 0; i < 30; ++i) pattern += "*a";
  pattern += "b";
  auto g = Glob::Compile(pattern);
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->Matches(std::string(kMaxMatchedBytes, 'a')));
}

TEST(MatcherTest, ParseAndMatchAllKeys) {
  auto m = Matcher::Parse("exe=*/python3*,cmdline=gunicorn --workers,cgroup=*kubepods*,user=0");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->ToString(), "exe=*/python3*,cmdline=gunicorn --workers,cgroup=*kubepods*,user=0");
  auto yes = Facts("/usr/bin/python3.11", "python3 -m gunicorn --workers 4",
                   "/kubepods.slice/x.scope", 0);
  EXPECT_TRUE(m->Matches(yes));
  auto wrong_user = yes;
  wrong_user.uid = 1000;
  EXPECT_FALSE(m->Matches(wrong_user));
  auto wrong_cgroup = yes;
  wrong_cgroup.cgroup = "/user.slice";
  EXPECT_FALSE(m->Matches(wrong_cgroup));
  auto wrong_cmd = yes;
  wrong_cmd.cmdline = "python3 app.py";
  EXPECT_FALSE(m->Matches(wrong_cmd));
}

TEST(MatcherTest, CommasInsidePatterns) {
  // A comma not followed by KEY= belongs to the pattern.
  auto m = Matcher::Parse("cmdline=a,b{1,2}c,exe=*python*");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->Matches(Facts("/usr/bin/python3", "x a,bbc y")));
  EXPECT_FALSE(m->Matches(Facts("/usr/bin/python3", "x a,c y")));
}

TEST(MatcherTest, RegexIsAnchoredOnlyIfAsked) {
  auto m = Matcher::Parse("cmdline=^python3 -c");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->Matches(Facts("/x", "python3 -c pass")));
  EXPECT_FALSE(m->Matches(Facts("/x", "env python3 -c pass")));
}

TEST(MatcherTest, BadRules) {
  for (const char* bad : {"", "exe", "foo=bar", "exe=", "exe=a,exe=b", "cmdline=(", "cmdline=a[",
                          "cmdline=(a)\\1", "user=no-such-user-here-xyz", "exe=[abc"}) {
    auto m = Matcher::Parse(bad);
    EXPECT_FALSE(m.ok()) << bad;
    if (!m.ok()) {
      EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << bad;
      EXPECT_EQ(m.status().message().find('\n'), std::string::npos) << bad;
    }
  }
  EXPECT_FALSE(Matcher::Parse("exe=" + std::string(5000, 'a')).ok());
  EXPECT_FALSE(Matcher::Parse("cmdline=" + std::string(600, 'a')).ok());
}

TEST(MatcherTest, LongCommandLineDoesNotRecurse) {
  // libstdc++'s default executor recurses per character; the polynomial one must not.
  auto m = Matcher::Parse("cmdline=(a|b)*c");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_FALSE(m->Matches(Facts("/x", std::string(kMaxMatchedBytes, 'a'))));
  EXPECT_TRUE(m->Matches(Facts("/x", "ababc")));
}

TEST(MatcherTest, MergeRefusesAKeyTwice) {
  auto a = Matcher::Parse("exe=*python*");
  auto b = Matcher::Parse("user=0");
  auto c = Matcher::Parse("exe=*py*");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(a->Merge(*b).ok());
  EXPECT_EQ(a->ToString(), "exe=*python*,user=0");
  EXPECT_FALSE(a->Merge(*c).ok());
}

TEST(ConfigTest, FullExample) {
  auto loaded = ParseConfig(R"(# threadscoped
max-targets = 5
cpython-wait = 500ms
metrics-retention = 45s
metrics-retention-targets = 10
label.cluster = prod

[rule web]
match = exe=*/python3*,cmdline=gunicorn   # a comment
match = user=0
locks = all
lock-threshold = 2ms
lock-stacks = 4
acquire-stacks = 2
gil = false
gil-stacks = 3
ring-buffer = 32MiB
overhead-budget = 0.5%
label.service = web

[rule batch.jobs-2]
match = cgroup=*batch*#not-a-comment

[rule holds]
match = cmdline=holds
gil = full
)",
                            "t.conf");
  ASSERT_TRUE(loaded.errors.empty()) << loaded.errors[0];
  const Config& c = loaded.config;
  EXPECT_EQ(c.auto_attach.max_targets, 5u);
  EXPECT_EQ(c.auto_attach.cpython_wait_ms, 500);
  EXPECT_EQ(c.metrics.retain_seconds, 45);
  EXPECT_EQ(c.metrics.retain_max_targets, 10u);
  EXPECT_EQ(c.metrics.labels.at("cluster"), "prod");
  ASSERT_EQ(c.auto_attach.rules.size(), 3u);
  const Rule& web = c.auto_attach.rules[0];
  EXPECT_EQ(web.name, "web");
  EXPECT_EQ(web.match.ToString(), "exe=*/python3*,cmdline=gunicorn,user=0");
  EXPECT_EQ(web.options.locks(), v1::LOCK_TRACING_ALL);
  EXPECT_EQ(web.options.lock_threshold_ns(), 2000000u);
  EXPECT_EQ(web.options.lock_stack_frames(), 4u);
  EXPECT_EQ(web.options.acquire_stack_frames(), 2u);
  EXPECT_TRUE(web.options.has_gil());
  EXPECT_FALSE(web.options.gil());
  EXPECT_EQ(web.options.gil_stack_frames(), 3u);
  EXPECT_EQ(web.options.ring_buffer_bytes(), 32u << 20);
  EXPECT_EQ(web.options.labels().at("service"), "web");
  EXPECT_EQ(c.auto_attach.rules[1].name, "batch.jobs-2");
  EXPECT_EQ(c.auto_attach.rules[1].match.ToString(), "cgroup=*batch*#not-a-comment");
  EXPECT_FALSE(c.auto_attach.rules[1].options.has_gil());  // unset: the attach default
  EXPECT_EQ(web.options.overhead_budget(), "0.5%");
  // Auto-attached targets get a budget unless their rule says otherwise.
  EXPECT_EQ(c.auto_attach.rules[1].options.overhead_budget(), kDefaultRuleOverheadBudget);
  EXPECT_EQ(Rule().options.overhead_budget(), "1%");  // --auto-attach's rules too
  // `gil` takes what --gil takes: waits, full, on, off (and true/false).
  const Rule& holds = c.auto_attach.rules[2];
  EXPECT_TRUE(holds.options.gil());
  EXPECT_EQ(holds.options.gil_mode(), v1::GIL_MODE_FULL);
}

TEST(ConfigTest, OverheadBudgetOffAndBadValues) {
  auto off = ParseConfig("[rule a]\nmatch = exe=*python*\noverhead-budget = off\n", "t.conf");
  ASSERT_TRUE(off.errors.empty()) << off.errors[0];
  EXPECT_TRUE(off.config.auto_attach.rules[0].options.overhead_budget().empty());
  auto bad = ParseConfig("[rule a]\nmatch = exe=*python*\noverhead-budget = 200%\n", "t.conf");
  ASSERT_FALSE(bad.errors.empty());
  EXPECT_NE(bad.errors[0].find("overhead"), std::string::npos) << bad.errors[0];
}

TEST(ConfigTest, EmptyConfiguresNothing) {
  auto loaded = ParseConfig("", "t.conf");
  EXPECT_TRUE(loaded.errors.empty());
  EXPECT_TRUE(loaded.config.auto_attach.rules.empty());
  loaded = ParseConfig("\n# only comments\n   \n", "t.conf");
  EXPECT_TRUE(loaded.errors.empty());
}

// Each bad file: at least one error, each one line, naming the file and line.
void ExpectRejected(const std::string& text, const std::string& needle, size_t line) {
  auto loaded = ParseConfig(text, "bad.conf");
  ASSERT_FALSE(loaded.errors.empty()) << "accepted: " << text.substr(0, 80);
  bool found = false;
  for (const auto& e : loaded.errors) {
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    EXPECT_LT(e.size(), 400u) << e;
    for (char ch : e) {
      EXPECT_TRUE(static_cast<unsigned char>(ch) >= 0x20 && static_cast<unsigned char>(ch) < 0x7f)
          << e;
    }
    if (e.find(needle) != std::string::npos &&
        (line == 0 || e.find("bad.conf:" + std::to_string(line) + ":") == 0)) {
      found = true;
    }
  }
  EXPECT_TRUE(found) << "no error with '" << needle << "' at line " << line << ": "
                     << loaded.errors[0];
}

TEST(ConfigTest, HostileInputs) {
  ExpectRejected("bogus = 1\n", "unknown key 'bogus'", 1);
  ExpectRejected("max-targets = -1\n", "max-targets", 1);
  ExpectRejected("max-targets = 99999999999999999999999\n", "max-targets", 1);
  ExpectRejected("max-targets = 1\nmax-targets = 2\n", "given twice", 2);
  ExpectRejected("cpython-wait = 1ns\n", "cpython-wait", 1);
  ExpectRejected("metrics-retention = forever\n", "metrics-retention", 1);
  ExpectRejected("metrics-retention = 1e300s\n", "metrics-retention", 1);
  ExpectRejected("[rule]\n", "[rule NAME]", 1);
  ExpectRejected("[rule a b]\n", "not a rule name", 1);
  ExpectRejected("[rule web\n", "[rule NAME]", 1);
  ExpectRejected("[section x]\n", "[rule NAME]", 1);
  ExpectRejected("[rule a]\nmatch = exe=*py*\n[rule a]\nmatch = exe=*\n", "given twice", 3);
  ExpectRejected("[rule a]\nlocks = all\n", "has no match", 1);
  ExpectRejected("[rule a]\nmatch = nope\n", "KEY=PATTERN", 2);
  ExpectRejected("[rule a]\nmatch = exe=*\nmatch = exe=*py*\n", "given twice", 3);
  ExpectRejected("[rule a]\nmatch = exe=*\nlocks = sometimes\n", "locks must be", 3);
  ExpectRejected("[rule a]\nmatch = exe=*\nlock-stacks = 99\n", "lock-stacks", 3);
  ExpectRejected("[rule a]\nmatch = exe=*\ngil = maybe\n", "gil must be", 3);
  ExpectRejected("[rule a]\nmatch = exe=*\nring-buffer = 100\n", "ring_buffer", 1);
  ExpectRejected("[rule a]\nmatch = exe=*\nring-buffer = 99GiB\n", "ring-buffer", 3);
  ExpectRejected("[rule a]\nmatch = exe=*\nlabel.pid = 1\n", "pid", 3);
  ExpectRejected("[rule a]\nmatch = exe=*\nlabel.bad-name = 1\n", "bad-name", 3);
  ExpectRejected("[rule a]\nmatch = exe=*\nfrobnicate = 1\n", "unknown key 'frobnicate'", 3);
  ExpectRejected("just words\n", "not KEY = VALUE", 1);
  ExpectRejected("= value\n", "no key", 1);
  ExpectRejected(std::string("max-targets = 1\0\n", 17), "NUL", 1);
  ExpectRejected("label.x = a\x1b[31mred\n", "control", 1);
  ExpectRejected(std::string(5000, 'x') + "\n", "longer than", 1);
  ExpectRejected(std::string(kMaxConfigBytes + 1, '#'), "larger than", 0);
  // Binary junk: rejected with bounded, printable errors (at most 100 of them).
  std::string junk;
  for (int i = 0; i < 20000; ++i) junk += static_cast<char>((i * 7919) & 0xff);
  auto loaded = ParseConfig(junk, "bad.conf");
  EXPECT_FALSE(loaded.errors.empty());
  EXPECT_LE(loaded.errors.size(), 100u);
  // Too many rules.
  std::string many;
  for (size_t i = 0; i <= kMaxRules; ++i) {
    many += "[rule r" + std::to_string(i) + "]\nmatch = exe=*\n";
  }
  ExpectRejected(many, "at most", 0);
  // Too many labels on one rule.
  std::string labels = "[rule a]\nmatch = exe=*\n";
  for (size_t i = 0; i <= kMaxRuleLabels; ++i) labels += "label.l" + std::to_string(i) + " = v\n";
  ExpectRejected(labels, "labels", 0);
}

TEST(ConfigTest, UnreadableFile) {
  auto loaded = LoadConfigFile("/nonexistent/threadscoped.conf");
  ASSERT_EQ(loaded.errors.size(), 1u);
  EXPECT_NE(loaded.errors[0].find("cannot read"), std::string::npos);
}

TEST(ConfigTest, Durations) {
  EXPECT_EQ(ParseDuration("60s"), 60000000000ull);
  EXPECT_EQ(ParseDuration("1.5s"), 1500000000ull);
  EXPECT_EQ(ParseDuration("500ms"), 500000000ull);
  EXPECT_EQ(ParseDuration("2m"), 120000000000ull);
  EXPECT_EQ(ParseDuration("0s"), 0ull);
  EXPECT_EQ(ParseDuration("0"), 0ull);
  EXPECT_FALSE(ParseDuration("5").has_value());
  EXPECT_FALSE(ParseDuration("s").has_value());
  EXPECT_FALSE(ParseDuration("1..2s").has_value());
  EXPECT_FALSE(ParseDuration("-1s").has_value());
  EXPECT_EQ(ParseBytes("16MiB"), 16ull << 20);
  EXPECT_FALSE(ParseBytes("5TiB").has_value());
  EXPECT_FALSE(ParseBytes("").has_value());
}

TEST(CgroupTest, KubernetesSystemdDriver) {
  const std::string id(64, 'a');
  auto c = IdentifyCgroup(
      "/kubepods.slice/kubepods-burstable.slice/"
      "kubepods-burstable-pod0f5f3a9e_1234_4bcd_8ef0_123456789abc.slice/cri-containerd-" +
      id + ".scope");
  EXPECT_EQ(c.pod_uid, "0f5f3a9e-1234-4bcd-8ef0-123456789abc");
  EXPECT_EQ(c.container_id, id);
  EXPECT_EQ(c.container_runtime, "containerd");
  auto labels = CgroupLabels(c);
  EXPECT_EQ(labels.at("pod_uid"), "0f5f3a9e-1234-4bcd-8ef0-123456789abc");
  EXPECT_EQ(labels.at("container_id"), id);
}

TEST(CgroupTest, OtherLayouts) {
  const std::string id(64, 'b');
  auto fs = IdentifyCgroup("/kubepods/besteffort/pod0f5f3a9e-1234-4bcd-8ef0-123456789abc/" + id);
  EXPECT_EQ(fs.pod_uid, "0f5f3a9e-1234-4bcd-8ef0-123456789abc");
  EXPECT_EQ(fs.container_id, id);
  auto crio = IdentifyCgroup("/kubepods.slice/crio-" + id + ".scope");
  EXPECT_EQ(crio.container_id, id);
  EXPECT_EQ(crio.container_runtime, "cri-o");
  auto docker = IdentifyCgroup("/system.slice/docker-" + id + ".scope");
  EXPECT_EQ(docker.container_id, id);
  EXPECT_EQ(docker.container_runtime, "docker");
  auto podman = IdentifyCgroup("/machine.slice/libpod-" + id + ".scope");
  EXPECT_EQ(podman.container_runtime, "podman");
  // A daemon in its own cgroup namespace sees other pods relative to its root.
  auto rel = IdentifyCgroup("/../../kubepods-besteffort-pod0f5f3a9e_1234_4bcd_8ef0_123456789abc"
                            ".slice/cri-containerd-" + id + ".scope");
  EXPECT_EQ(rel.pod_uid, "0f5f3a9e-1234-4bcd-8ef0-123456789abc");
  auto unit = IdentifyCgroup("/system.slice/nginx.service");
  EXPECT_EQ(unit.systemd_unit, "nginx.service");
  EXPECT_TRUE(unit.container_id.empty());
  EXPECT_TRUE(CgroupLabels(IdentifyCgroup("/")).empty());
}

TEST(CgroupTest, HostilePathsGiveNoOrStrictLabels) {
  for (const std::string& p :
       {std::string("/kubepods-podNOTAUUID.slice/cri-containerd-xyz.scope"),
        std::string("/docker-") + std::string(63, 'a') + ".scope",
        std::string("/docker-") + std::string(64, 'G') + ".scope",
        std::string("/user.slice/evil\x1b[31m.service"), std::string(100000, '/'),
        std::string("/pod") + std::string(32, 'z')}) {
    auto c = IdentifyCgroup(p);
    EXPECT_TRUE(c.pod_uid.empty()) << p.substr(0, 60);
    EXPECT_TRUE(c.container_id.empty()) << p.substr(0, 60);
    for (const auto& [k, v] : CgroupLabels(c)) {
      for (char ch : v) EXPECT_TRUE(ch > 0x20 && ch < 0x7f) << k;
    }
  }
}

TEST(CgroupTest, SelectsTheUnifiedPathUnlessAV1OneNamesAContainer) {
  EXPECT_EQ(SelectCgroupPath("12:memory:/x\n0::/system.slice/a.service\n"),
            "/system.slice/a.service");
  const std::string id(64, 'c');
  EXPECT_EQ(SelectCgroupPath("4:memory:/docker/" + id + "\n0::/\n"), "/docker/" + id);
  EXPECT_EQ(SelectCgroupPath("1:name=systemd:/user.slice\n"), "/user.slice");
}

std::vector<target::Mapping> Maps(std::initializer_list<const char*> paths) {
  std::vector<target::Mapping> out;
  for (const char* p : paths) {
    target::Mapping m;
    m.path = p;
    m.perms = "r-xp";
    out.push_back(m);
  }
  return out;
}

// At sched_process_exec only the executable and ld.so are mapped: a process is attached once
// what the probes need (the interpreter's binary and libc) is there.
TEST(CPythonReadyTest, ByWhatIsMapped) {
  ExeKind embedded;  // needs libpython (pyenv's --enable-shared builds)
  embedded.needs_libpython = true;
  EXPECT_EQ(CheckCPython(embedded, Maps({"/usr/bin/python3", "/lib64/ld-linux-x86-64.so.2"})),
            Readiness::kWait);
  EXPECT_EQ(CheckCPython(embedded, Maps({"/usr/bin/python3", "/lib64/ld-linux-x86-64.so.2",
                                         "/usr/lib/libpython3.11.so.1.0"})),
            Readiness::kWait);
  EXPECT_EQ(CheckCPython(embedded, Maps({"/usr/bin/python3", "/lib64/ld-linux-x86-64.so.2",
                                         "/usr/lib/libpython3.11.so.1.0",
                                         "/lib/x86_64-linux-gnu/libc.so.6"})),
            Readiness::kReady);
  ExeKind runtime;  // Debian's python3.x: the runtime in the executable
  runtime.defines_runtime = true;
  EXPECT_EQ(CheckCPython(runtime, Maps({"/usr/bin/python3.11", "/lib64/ld-linux-x86-64.so.2"})),
            Readiness::kWait);
  EXPECT_EQ(CheckCPython(runtime, Maps({"/usr/bin/python3.11", "/lib64/ld-linux-x86-64.so.2",
                                        "/lib/x86_64-linux-gnu/libc.so.6"})),
            Readiness::kReady);
  EXPECT_EQ(CheckCPython(runtime, Maps({"/opt/python-static"})), Readiness::kReady);  // static
  ExeKind other;  // neither: CPython only if it loaded libpython already (dlopen)
  EXPECT_EQ(CheckCPython(other, Maps({"/usr/bin/bash", "/lib/x86_64-linux-gnu/libc.so.6"})),
            Readiness::kNotCPython);
  EXPECT_EQ(CheckCPython(other, Maps({"/usr/bin/app", "/lib/x86_64-linux-gnu/libc.so.6",
                                      "/usr/lib/libpython3.12.so.1.0"})),
            Readiness::kReady);
  // Names a process chose: a fake "libpython" that is not one, anonymous and special mappings.
  EXPECT_EQ(CheckCPython(other, Maps({"/tmp/libpython-evil", "[heap]", "", "libpython3.11.so"})),
            Readiness::kNotCPython);
}

}  // namespace
}  // namespace threadscope::autoattach

namespace threadscope::metrics {
namespace {

std::vector<prometheus::MetricFamily> OneFamily(const std::string& target) {
  prometheus::MetricFamily f;
  f.name = "threadscope_test_total";
  f.help = "test";
  f.type = prometheus::MetricType::Counter;
  prometheus::ClientMetric m;
  m.label.push_back({"target", target});
  m.counter.value = 1;
  f.metric.push_back(m);
  return {f};
}

constexpr uint64_t kSecond = 1000000000ull;

TEST(RetainedTargetsTest, KeptForTheGracePeriodThenGone) {
  RetainedTargets r(30 * kSecond, 10);
  r.Add("pid:1", 1, OneFamily("pid:1"), 100 * kSecond);
  EXPECT_EQ(r.Collect(100 * kSecond, {}).size(), 1u);
  EXPECT_EQ(r.Collect(129 * kSecond, {}).size(), 1u);  // two 15 s scrapes still see it
  EXPECT_EQ(r.Collect(130 * kSecond, {}).size(), 0u);
  EXPECT_EQ(r.size(), 0u);
}

TEST(RetainedTargetsTest, BoundedOldestFirst) {
  RetainedTargets r(60 * kSecond, 3);
  for (int i = 1; i <= 5; ++i) {
    r.Add("pid:" + std::to_string(i), i, OneFamily("pid:" + std::to_string(i)), i * kSecond);
  }
  auto families = r.Collect(6 * kSecond, {});
  ASSERT_EQ(families.size(), 3u);
  EXPECT_EQ(families[0].metric[0].label[0].value, "pid:3");
  EXPECT_EQ(families[2].metric[0].label[0].value, "pid:5");
}

TEST(RetainedTargetsTest, ALiveTargetOfTheSamePidReplacesIt) {
  RetainedTargets r(60 * kSecond, 10);
  r.Add("pid:7", 7, OneFamily("pid:7"), kSecond);
  r.Add("pid:7", 7, OneFamily("pid:7"), 2 * kSecond);  // the same pid again: one entry
  EXPECT_EQ(r.size(), 1u);
  EXPECT_EQ(r.Collect(3 * kSecond, {7}).size(), 0u);
}

TEST(RetainedTargetsTest, ZeroRetentionKeepsNothing) {
  RetainedTargets r(0, 10);
  r.Add("pid:1", 1, OneFamily("pid:1"), kSecond);
  EXPECT_EQ(r.size(), 0u);
}

TEST(DaemonMetricsTest, SeriesWithNothingAttached) {
  DaemonState d;
  d.version = "9.9.9";
  d.targets_by_state["attached"] = 0;
  d.cpu_seconds = 1.5;
  d.resident_bytes = 1 << 20;
  AutoAttachMetrics a;
  a.targets = 1;
  a.max_targets = 4;
  AutoAttachMetrics::Rule rule;
  rule.name = "web";
  rule.matches = 3;
  rule.attaches = 1;
  rule.refusals["limit"] = 2;
  rule.failures["not_cpython"] = 0;
  a.rules.push_back(rule);
  d.auto_attach = a;
  MetricsOptions options;
  LockSeries locks;
  auto families = BuildMetrics({}, options, &locks, &d);
  std::string text = prometheus::TextSerializer().Serialize(families);
  for (const char* want :
       {"threadscope_build_info{version=\"9.9.9\"} 1", "threadscope_daemon_cpu_seconds_total",
        "threadscope_daemon_resident_memory_bytes", "threadscope_autoattach_targets 1",
        "threadscope_autoattach_max_targets 4",
        "threadscope_autoattach_matches_total{rule=\"web\"} 3",
        "threadscope_autoattach_attaches_total{rule=\"web\"} 1",
        "threadscope_autoattach_refusals_total{reason=\"limit\",rule=\"web\"} 2",
        "threadscope_autoattach_failures_total{reason=\"not_cpython\",rule=\"web\"} 0"}) {
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  }
}

}  // namespace
}  // namespace threadscope::metrics
