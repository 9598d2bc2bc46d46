// `threadscope check`: the CI regression gate, as pure logic. Reports (the JSON contract) in,
// a verdict and its renderings (text, JUnit XML, GitHub annotations, step-summary Markdown,
// JSON) out. No I/O here: client/check_command.cc runs the command and writes the files.
//
// Figures compared, count-based first (they do not drift with machine load):
//   lock_contentions, lock_timeouts, deadlocks, thread_start_failures, gil_forced_switches
//   (counts); lock_contentions@<site> for the sites where threads waited (counts, per line);
//   lock_wait_seconds, gil_wait_share (timings: looser default thresholds); with profiles,
//   lock_contentions@stack=... and lock_wait_seconds@stack=... per Python stack.
// Each run's figures are reduced to their median; a figure regresses when the median exceeds
// the baseline by more than BOTH its relative and its absolute threshold.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace threadscope::client::gate {

enum class FigureKind { kCount, kTiming };

struct Threshold {
  double rel = 0.25;  // allowed relative increase (0.25 = +25%)
  double abs = 5;     // and allowed absolute increase, in the figure's unit
};

Threshold DefaultThreshold(const std::string& figure);
FigureKind KindOf(const std::string& figure);

// One report's figures. Missing sections (lock or GIL tracing off) give no figure.
std::map<std::string, double> ExtractFigures(const nlohmann::json& report);

struct BaselineFigure {
  double value = 0;
  Threshold threshold;
  std::vector<double> runs;
};

struct Baseline {
  std::map<std::string, BaselineFigure> figures;
  nlohmann::json meta;  // command, runs, python_version, created
};

// Parses a baseline file's text. Errors say what is wrong and where.
std::optional<Baseline> ParseBaseline(const std::string& text, std::string* error);
nlohmann::json BaselineJson(const Baseline& baseline);

enum class Verdict { kOk, kRegression, kNoData };

struct FigureResult {
  std::string name;
  FigureKind kind = FigureKind::kCount;
  std::optional<double> baseline;  // unset: a figure the baseline does not have (new)
  double median = 0, min = 0, max = 0;
  std::vector<double> runs;
  Threshold threshold;
  double limit = 0;       // the largest median that passes
  bool regressed = false;
  bool improved = false;  // below the baseline by more than the thresholds
  bool noisy = false;     // the runs spread wider than the relative threshold
  bool missing = false;   // in the baseline, absent from every run
  std::string explanation;
};

struct CheckResult {
  Verdict verdict = Verdict::kOk;
  std::vector<FigureResult> figures;
  size_t runs = 0;
};

// Compares per-run figures with the baseline. `overrides` replace thresholds by figure name.
// kNoData when no figure of the baseline was measured in any run.
CheckResult Compare(const Baseline& baseline, const std::vector<std::map<std::string, double>>& runs,
                    const std::map<std::string, Threshold>& overrides);

// A new baseline from runs (medians), keeping `previous` thresholds where it had them.
Baseline MakeBaseline(const std::vector<std::map<std::string, double>>& runs,
                      const Baseline* previous, const std::map<std::string, Threshold>& overrides,
                      nlohmann::json meta);

// Per-stack figures from a contention profile (client/profile.h, read back by the caller): the
// CI gate's report then names the code whose waiting grew, not only the totals.
struct StackFrame {
  std::string file;  // as recorded; directories are dropped (a baseline must hold anywhere)
  std::string function;
};
struct StackSample {
  std::vector<StackFrame> frames;  // innermost first
  double contentions = 0;
  double delay_ns = 0;
};
// lock_contentions and lock_wait_seconds (the profile's totals), and for the stacks that waited
// longest (at most max_stacks, by their innermost kStackDepth frames, lines left out so a
// baseline survives edits elsewhere in the file):
//   lock_contentions@stack=worker (app.py) < main (app.py)     count
//   lock_wait_seconds@stack=worker (app.py) < main (app.py)    timing
// A stack figure missing from a run that has the total means no wait there (0).
inline constexpr size_t kStackDepth = 4;
std::map<std::string, double> StackFigures(const std::vector<StackSample>& samples,
                                           size_t max_stacks = 20);
bool IsStackFigure(const std::string& figure);

// "lock_contentions=0.1,3" -> {"lock_contentions", {0.1, 3}}.
std::optional<std::pair<std::string, Threshold>> ParseThreshold(const std::string& text);

std::string TextReport(const CheckResult& r);
std::string JUnitXml(const CheckResult& r);
std::string GitHubAnnotations(const CheckResult& r);
std::string MarkdownSummary(const CheckResult& r);
nlohmann::json ResultJson(const CheckResult& r);
const char* VerdictName(Verdict v);

}  // namespace threadscope::client::gate
