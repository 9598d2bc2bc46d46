#include "client/gate.h"

#include <gtest/gtest.h>

namespace threadscope::client::gate {
namespace {

using nlohmann::json;

json Report(double contended, double wait_ns, const std::string& where, double forced,
            double gil_wait_ns) {
  return {{"report_version", 1},
          {"target", {{"lock_mode", "contended"}, {"python_version", "3.11.2"}}},
          {"locks",
           {{{"contended", contended},
             {"timeouts", 1},
             {"wait_ns_total", wait_ns},
             {"first_contended_at", {{"where", where}}}},
            {{"contended", 0}, {"timeouts", 0}, {"wait_ns_total", 0},
             {"first_contended_at", nullptr}}}},
          {"deadlocks", json::array()},
          {"summary", {{"start_failed", 0}}},
          {"gil",
           {{"traced", true},
            {"forced_switches", forced},
            {"per_thread",
             {{{"wait_ns", gil_wait_ns}, {"observed_ns", 1e9}},
              {{"wait_ns", 0}, {"observed_ns", 1e9}}}}}}};
}

TEST(GateTest, FiguresFromAReport) {
  auto f = ExtractFigures(Report(40, 2e9, "/srv/app/app.py:12 work", 100, 5e8));
  EXPECT_EQ(f["lock_contentions"], 40);
  EXPECT_EQ(f["lock_timeouts"], 1);
  EXPECT_DOUBLE_EQ(f["lock_wait_seconds"], 2.0);
  EXPECT_EQ(f["deadlocks"], 0);
  EXPECT_EQ(f["lock_contentions@app.py:12 work"], 40);  // no directory: portable baselines
  EXPECT_EQ(f["gil_forced_switches"], 100);
  EXPECT_DOUBLE_EQ(f["gil_wait_share"], 0.25);
  // Lock tracing off: no lock figures, rather than zeros that would look like an improvement.
  json off = Report(40, 0, "x", 0, 0);
  off["target"]["lock_mode"] = "off";
  off["gil"]["traced"] = false;
  auto g = ExtractFigures(off);
  EXPECT_FALSE(g.count("lock_contentions"));
  EXPECT_FALSE(g.count("gil_forced_switches"));
}

std::vector<std::map<std::string, double>> Runs(std::initializer_list<double> contended) {
  std::vector<std::map<std::string, double>> out;
  for (double c : contended) out.push_back({{"lock_contentions", c}, {"deadlocks", 0}});
  return out;
}

const FigureResult& Figure(const CheckResult& r, const std::string& name) {
  for (const auto& f : r.figures) {
    if (f.name == name) return f;
  }
  ADD_FAILURE() << "no figure " << name;
  static const FigureResult none;
  return none;
}

TEST(GateTest, MedianMustExceedBothThresholds) {
  Baseline b = MakeBaseline(Runs({100, 90, 110}), nullptr, {}, json::object());
  EXPECT_EQ(b.figures["lock_contentions"].value, 100);
  // Limit: max(100 * 1.25, 100 + 5) = 125.
  EXPECT_EQ(Compare(b, Runs({120, 124, 119}), {}).verdict, Verdict::kOk);
  auto r = Compare(b, Runs({130, 160, 126}), {});
  EXPECT_EQ(r.verdict, Verdict::kRegression);
  const FigureResult* f = &Figure(r, "lock_contentions");
  EXPECT_TRUE(f->regressed);
  EXPECT_EQ(f->median, 130);
  EXPECT_NE(f->explanation.find("100 -> 130 (+30%)"), std::string::npos) << f->explanation;
  // Small counts: 2 -> 4 is +100% but only +2, under the absolute threshold.
  Baseline small = MakeBaseline(Runs({2}), nullptr, {}, json::object());
  EXPECT_EQ(Compare(small, Runs({4}), {}).verdict, Verdict::kOk);
  // An override tightens it.
  EXPECT_EQ(Compare(small, Runs({4}), {{"lock_contentions", {0.1, 1}}}).verdict,
            Verdict::kRegression);
}

TEST(GateTest, AnyNewDeadlockFails) {
  Baseline b = MakeBaseline(Runs({10}), nullptr, {}, json::object());
  auto runs = Runs({10});
  runs[0]["deadlocks"] = 1;
  EXPECT_EQ(Compare(b, runs, {}).verdict, Verdict::kRegression);
}

TEST(GateTest, NoiseIsExplainedNotHidden) {
  Baseline b = MakeBaseline(Runs({100}), nullptr, {}, json::object());
  auto r = Compare(b, Runs({60, 110, 200}), {});
  const FigureResult& f = Figure(r, "lock_contentions");
  EXPECT_TRUE(f.noisy);
  EXPECT_FALSE(f.regressed);  // the median (110) is within the limit
  EXPECT_NE(f.explanation.find("noisy"), std::string::npos);
  EXPECT_NE(f.explanation.find("2 of 3 runs within the limit"), std::string::npos)
      << f.explanation;
}

TEST(GateTest, NoDataAndMissingFigures) {
  Baseline b = MakeBaseline(Runs({10}), nullptr, {}, json::object());
  std::vector<std::map<std::string, double>> empty(2);
  auto r = Compare(b, empty, {});
  EXPECT_EQ(r.verdict, Verdict::kNoData);
  ASSERT_EQ(r.figures.size(), 2u);  // lock_contentions and deadlocks, neither measured
  for (const auto& f : r.figures) EXPECT_TRUE(f.missing);
}

TEST(GateTest, BaselineRoundTripAndCorruption) {
  Baseline b = MakeBaseline(Runs({10, 12}), nullptr, {{"lock_contentions", {0.5, 2}}},
                            {{"runs", 2}});
  std::string error;
  auto parsed = ParseBaseline(BaselineJson(b).dump(), &error);
  ASSERT_TRUE(parsed) << error;
  EXPECT_EQ(parsed->figures["lock_contentions"].value, 11);
  EXPECT_EQ(parsed->figures["lock_contentions"].threshold.rel, 0.5);
  EXPECT_EQ(parsed->figures["lock_contentions"].threshold.abs, 2);
  EXPECT_FALSE(ParseBaseline("{not json", &error));
  EXPECT_NE(error.find("not JSON"), std::string::npos);
  EXPECT_FALSE(ParseBaseline(R"({"figures": {}})", &error));
  EXPECT_NE(error.find("threadscope_baseline"), std::string::npos);
  EXPECT_FALSE(ParseBaseline(R"({"threadscope_baseline": 1, "figures": {"x": {"value": "a"}}})",
                             &error));
  EXPECT_NE(error.find("\"x\""), std::string::npos);
  EXPECT_FALSE(ParseBaseline(
      R"({"threadscope_baseline": 1, "figures": {"x": {"value": 1, "rel": -1}}})", &error));
}

TEST(GateTest, ThresholdFlag) {
  auto t = ParseThreshold("lock_contentions=0.1,3");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->first, "lock_contentions");
  EXPECT_EQ(t->second.rel, 0.1);
  EXPECT_EQ(t->second.abs, 3);
  EXPECT_FALSE(ParseThreshold("lock_contentions=0.1"));
  EXPECT_FALSE(ParseThreshold("=0.1,2"));
  EXPECT_FALSE(ParseThreshold("x=a,2"));
  EXPECT_FALSE(ParseThreshold("x=-1,2"));
}

TEST(GateTest, CiOutputs) {
  Baseline b = MakeBaseline(Runs({100}), nullptr, {}, json::object());
  auto r = Compare(b, Runs({200}), {});
  std::string xml = JUnitXml(r);
  EXPECT_NE(xml.find("<testsuite name=\"threadscope check\" tests=\"2\" failures=\"1\""),
            std::string::npos)
      << xml;
  EXPECT_NE(xml.find("<testcase classname=\"threadscope.contention\" name=\"lock_contentions\">"
                     "<failure message=\"100 -&gt; 200"),
            std::string::npos)
      << xml;
  std::string gh = GitHubAnnotations(r);
  EXPECT_EQ(gh.rfind("::error title=threadscope%3A lock_contentions regressed::100 -> 200", 0),
            0u)
      << gh;
  std::string md = MarkdownSummary(r);
  EXPECT_NE(md.find("| `lock_contentions` | 100 | 200 (200–200) | 125 | **regressed** |"),
            std::string::npos)
      << md;
  json j = ResultJson(r);
  EXPECT_EQ(j["verdict"], "regression");
  ASSERT_EQ(j["figures"].size(), 2u);
  EXPECT_EQ(j["figures"][1]["name"], "lock_contentions");
  EXPECT_EQ(j["figures"][1]["regressed"], true);
}

// Two profiles of the same program: the stack whose waiting grew is named, the one that stayed
// put is not, and a stack that is new in the second is reported as new.
TEST(GateTest, StacksWhoseWaitingGrewAreNamed) {
  auto sample = [](std::vector<StackFrame> frames, double n, double ns) {
    StackSample s;
    s.frames = std::move(frames);
    s.contentions = n;
    s.delay_ns = ns;
    return s;
  };
  std::vector<StackFrame> hot = {{"/srv/app/cache.py", "Cache.get"}, {"/srv/app/api.py", "handle"}};
  std::vector<StackFrame> cold = {{"/srv/app/db.py", "Pool.take"}};
  std::vector<StackFrame> fresh = {{"/srv/app/log.py", "emit"}};
  auto before = StackFigures({sample(hot, 10, 20e6), sample(cold, 50, 100e6)});
  auto after = StackFigures({sample(hot, 200, 900e6), sample(cold, 52, 101e6),
                             sample(fresh, 3, 1e6)});
  const std::string hot_name = "Cache.get (cache.py) < handle (api.py)";
  EXPECT_EQ(before.at("lock_contentions@stack=" + hot_name), 10);
  EXPECT_DOUBLE_EQ(before.at("lock_wait_seconds@stack=" + hot_name), 0.02);
  EXPECT_EQ(before.at("lock_contentions"), 60);
  EXPECT_DOUBLE_EQ(before.at("lock_wait_seconds"), 0.12);
  EXPECT_TRUE(IsStackFigure("lock_wait_seconds@stack=" + hot_name));
  EXPECT_FALSE(IsStackFigure("lock_contentions@app.py:12 work"));
  EXPECT_EQ(KindOf("lock_wait_seconds@stack=" + hot_name), FigureKind::kTiming);

  Baseline b = MakeBaseline({before}, nullptr, {}, json::object());
  CheckResult r = Compare(b, {after}, {});
  EXPECT_EQ(r.verdict, Verdict::kRegression);
  EXPECT_TRUE(Figure(r, "lock_contentions@stack=" + hot_name).regressed);
  EXPECT_TRUE(Figure(r, "lock_wait_seconds@stack=" + hot_name).regressed);
  EXPECT_FALSE(Figure(r, "lock_wait_seconds@stack=Pool.take (db.py)").regressed);
  EXPECT_FALSE(Figure(r, "lock_contentions@stack=emit (log.py)").baseline.has_value());
  std::string text = TextReport(r);
  EXPECT_NE(text.find("waiting grew at (innermost frame first):\n  " + hot_name), std::string::npos)
      << text;
  EXPECT_EQ(text.find("  Pool.take (db.py):"), std::string::npos) << text;

  // A stack gone from a run that has lock data waited 0 there (an improvement, not missing).
  CheckResult gone = Compare(b, {StackFigures({sample(cold, 50, 100e6)})}, {});
  EXPECT_TRUE(Figure(gone, "lock_wait_seconds@stack=" + hot_name).improved ||
              !Figure(gone, "lock_wait_seconds@stack=" + hot_name).regressed);
  EXPECT_FALSE(Figure(gone, "lock_wait_seconds@stack=" + hot_name).missing);
  // At most max_stacks stacks, the longest waits kept.
  std::vector<StackSample> many;
  for (int i = 0; i < 30; ++i) {
    many.push_back(sample({{"f.py", "f" + std::to_string(i)}}, 1, 1e6 * (i + 1)));
  }
  auto capped = StackFigures(many, 5);
  EXPECT_TRUE(capped.count("lock_wait_seconds@stack=f29 (f.py)"));
  EXPECT_FALSE(capped.count("lock_wait_seconds@stack=f0 (f.py)"));
  EXPECT_EQ(capped.size(), 2u + 2 * 5);
}

}  // namespace
}  // namespace threadscope::client::gate
