#include "client/gate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace threadscope::client::gate {

using nlohmann::json;

namespace {

constexpr char kSitePrefix[] = "lock_contentions@";
// 3.13+: waits on critical sections and interpreter mutexes, by type and line.
constexpr char kContentionPrefix[] = "contention_waits@";

bool IsSite(const std::string& name) {
  return name.rfind(kSitePrefix, 0) == 0 || name.rfind(kContentionPrefix, 0) == 0;
}

// "file.py:12 fn" without the directory: a baseline must hold in any checkout.
std::string SiteName(std::string where) {
  auto colon = where.rfind(':');
  auto slash = where.rfind('/', colon == std::string::npos ? where.size() : colon);
  if (slash != std::string::npos) where = where.substr(slash + 1);
  return where;
}

constexpr char kStackMarker[] = "@stack=";

// "lock_wait_seconds@stack=..." -> "lock_wait_seconds"; names without '@' are their own base.
std::string BaseOf(const std::string& figure) { return figure.substr(0, figure.find('@')); }

}  // namespace

std::optional<Baseline> ParseBaselineJson(const std::string& text, std::string* error);

namespace {

// A per-line figure in every run that traced locks: absent from such a run means no thread
// waited there (0); a run without lock data says nothing about it.
std::vector<double> SiteValues(const std::string& name,
                               const std::vector<std::map<std::string, double>>& runs) {
  std::vector<double> out;
  for (const auto& run : runs) {
    if (!run.count(BaseOf(name))) continue;
    auto it = run.find(name);
    out.push_back(it == run.end() ? 0.0 : it->second);
  }
  return out;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string Num(double v, FigureKind kind) {
  if (kind == FigureKind::kTiming) return fmt::format("{:.4g}", v);
  return std::fabs(v - std::round(v)) < 1e-9 ? fmt::format("{:.0f}", v) : fmt::format("{:.1f}", v);
}

// XML 1.0 allows no C0 control characters but tab, LF and CR (a JUnit file with one is
// rejected by its readers): they become '?', like other characters XML cannot carry.
std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t' && c != '\n' && c != '\r') || u == 0x7f) {
      out += '?';
      continue;
    }
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

// GitHub workflow commands: '%', CR and LF are escaped in messages; ',' and ':' too in properties.
std::string GhEscape(const std::string& s, bool property) {
  std::string out;
  for (char c : s) {
    if (c == '%') out += "%25";
    else if (c == '\r') out += "%0D";
    else if (c == '\n') out += "%0A";
    else if (property && c == ':') out += "%3A";
    else if (property && c == ',') out += "%2C";
    else out += c;
  }
  return out;
}

}  // namespace

FigureKind KindOf(const std::string& figure) {
  std::string base = BaseOf(figure);
  return base == "lock_wait_seconds" || base == "gil_wait_share" ||
                 base == "contention_wait_seconds"
             ? FigureKind::kTiming
             : FigureKind::kCount;
}

bool IsStackFigure(const std::string& figure) {
  return figure.find(kStackMarker) != std::string::npos;
}

Threshold DefaultThreshold(const std::string& figure) {
  if (figure == "deadlocks" || figure == "thread_start_failures") return {0, 0};  // any is new
  if (figure == "contention_wait_seconds") return {0.5, 0.05};
  if (BaseOf(figure) == "lock_wait_seconds") return {0.5, 0.05};
  if (figure == "gil_wait_share") return {0.25, 0.05};
  if (IsSite(figure)) return {0.5, 5};
  return {0.25, 5};
}

std::map<std::string, double> ExtractFigures(const json& report) {
  std::map<std::string, double> out;
  auto num = [](const json& v) { return v.is_number() ? v.get<double>() : 0.0; };
  const json& target = report.value("target", json::object());
  std::string lock_mode = target.value("lock_mode", "off");
  if (lock_mode != "off" && report.contains("locks")) {
    double contended = 0, timeouts = 0, wait_ns = 0;
    std::map<std::string, double> sites;
    for (const auto& l : report["locks"]) {
      contended += num(l.value("contended", json()));
      timeouts += num(l.value("timeouts", json()));
      wait_ns += num(l.value("wait_ns_total", json()));
      const json& at = l.value("first_contended_at", json());
      if (at.is_object() && at.contains("where") && num(l.value("contended", json())) > 0) {
        sites[kSitePrefix + SiteName(at["where"].get<std::string>())] += num(l["contended"]);
      }
    }
    out["lock_contentions"] = contended;
    out["lock_timeouts"] = timeouts;
    out["lock_wait_seconds"] = wait_ns / 1e9;
    out["deadlocks"] = report.contains("deadlocks") ? report["deadlocks"].size() : 0;
    for (const auto& [k, v] : sites) out[k] = v;
  }
  // 3.13+ reports: critical-section and interpreter-mutex contention ("list file.py:42 fn").
  if (lock_mode != "off" && report.contains("contention") && report["contention"].is_array()) {
    double waits = 0, wait_ns = 0;
    std::map<std::string, double> sites;
    for (const auto& c : report["contention"]) {
      waits += num(c.value("waits", json()));
      wait_ns += num(c.value("wait_ns_total", json()));
      std::string where = c.value("where", std::string());
      if (where.empty() || c.value("other", false) || num(c.value("waits", json())) <= 0) continue;
      std::string type = c.value("type", std::string());
      sites[kContentionPrefix + (type.empty() ? "" : type + " ") + SiteName(where)] +=
          num(c["waits"]);
    }
    out["contention_waits"] = waits;
    out["contention_wait_seconds"] = wait_ns / 1e9;
    for (const auto& [k, v] : sites) out[k] = v;
  }
  if (report.contains("summary")) {
    out["thread_start_failures"] = num(report["summary"].value("start_failed", json()));
  }
  const json& gil = report.value("gil", json::object());
  if (gil.value("traced", false)) {
    // --gil waits (the default) traces no drops: no forced-switch count to compare.
    if (gil.value("mode", std::string()) != "GIL_MODE_WAITS") {
      out["gil_forced_switches"] = num(gil.value("forced_switches", json()));
    }
    double wait = 0, observed = 0;
    for (const auto& t : gil.value("per_thread", json::array())) {
      wait += num(t.value("wait_ns", json()));
      observed += num(t.value("observed_ns", json()));
    }
    // Traced and nobody waited (--gil waits sees only takes that wait): a share of 0.
    out["gil_wait_share"] = observed > 0 ? wait / observed : 0.0;
  }
  return out;
}

std::map<std::string, double> StackFigures(const std::vector<StackSample>& samples,
                                           size_t max_stacks) {
  std::map<std::string, std::pair<double, double>> stacks;  // name -> (contentions, delay)
  double contentions = 0, delay = 0;
  for (const auto& s : samples) {
    contentions += s.contentions;
    delay += s.delay_ns;
    std::string name;
    for (size_t i = 0; i < s.frames.size() && i < kStackDepth; ++i) {
      std::string file = s.frames[i].file;
      auto slash = file.rfind('/');
      if (slash != std::string::npos) file = file.substr(slash + 1);
      name += (i ? " < " : "") + s.frames[i].function + (file.empty() ? "" : " (" + file + ")");
    }
    if (name.empty()) name = "?";
    auto& v = stacks[name];
    v.first += s.contentions;
    v.second += s.delay_ns;
  }
  std::vector<std::pair<std::string, std::pair<double, double>>> ranked(stacks.begin(),
                                                                       stacks.end());
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.second.second > b.second.second;
  });
  std::map<std::string, double> out;
  out["lock_contentions"] = contentions;
  out["lock_wait_seconds"] = delay / 1e9;
  for (size_t i = 0; i < ranked.size() && i < max_stacks; ++i) {
    if (ranked[i].second.first <= 0 && ranked[i].second.second <= 0) continue;
    out[std::string("lock_contentions") + kStackMarker + ranked[i].first] = ranked[i].second.first;
    out[std::string("lock_wait_seconds") + kStackMarker + ranked[i].first] =
        ranked[i].second.second / 1e9;
  }
  return out;
}

std::optional<Baseline> ParseBaseline(const std::string& text, std::string* error) {
  try {
    return ParseBaselineJson(text, error);
  } catch (const json::exception& e) {
    *error = std::string("unexpected shape: ") + e.what();
    return std::nullopt;
  }
}

std::optional<Baseline> ParseBaselineJson(const std::string& text, std::string* error) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    *error = "it is not JSON";
    return std::nullopt;
  }
  if (!j.is_object() || j.value("threadscope_baseline", 0) != 1) {
    *error = "it has no \"threadscope_baseline\": 1 (not a baseline this version writes)";
    return std::nullopt;
  }
  if (!j.contains("figures") || !j["figures"].is_object()) {
    *error = "\"figures\" is missing or not an object";
    return std::nullopt;
  }
  Baseline b;
  b.meta = j.value("meta", json::object());
  for (const auto& [name, f] : j["figures"].items()) {
    if (!f.is_object() || !f.contains("value") || !f["value"].is_number()) {
      *error = "figure \"" + name + "\" has no numeric \"value\"";
      return std::nullopt;
    }
    BaselineFigure bf;
    bf.value = f["value"].get<double>();
    bf.threshold = DefaultThreshold(name);
    if (f.contains("rel")) {
      if (!f["rel"].is_number() || f["rel"].get<double>() < 0) {
        *error = "figure \"" + name + "\": \"rel\" must be a number >= 0";
        return std::nullopt;
      }
      bf.threshold.rel = f["rel"].get<double>();
    }
    if (f.contains("abs")) {
      if (!f["abs"].is_number() || f["abs"].get<double>() < 0) {
        *error = "figure \"" + name + "\": \"abs\" must be a number >= 0";
        return std::nullopt;
      }
      bf.threshold.abs = f["abs"].get<double>();
    }
    if (f.contains("runs") && f["runs"].is_array()) {
      for (const auto& r : f["runs"]) {
        if (r.is_number()) bf.runs.push_back(r.get<double>());
      }
    }
    b.figures[name] = bf;
  }
  return b;
}

json BaselineJson(const Baseline& b) {
  json figures = json::object();
  for (const auto& [name, f] : b.figures) {
    figures[name] = {{"value", f.value}, {"rel", f.threshold.rel}, {"abs", f.threshold.abs},
                     {"kind", KindOf(name) == FigureKind::kCount ? "count" : "timing"},
                     {"runs", f.runs}};
  }
  return {{"threadscope_baseline", 1}, {"meta", b.meta}, {"figures", figures}};
}

std::optional<std::pair<std::string, Threshold>> ParseThreshold(const std::string& text) {
  auto eq = text.find('=');
  auto comma = text.find(',', eq == std::string::npos ? 0 : eq);
  if (eq == std::string::npos || eq == 0 || comma == std::string::npos) return std::nullopt;
  try {
    size_t used1 = 0, used2 = 0;
    std::string rel = text.substr(eq + 1, comma - eq - 1), abs = text.substr(comma + 1);
    Threshold t{std::stod(rel, &used1), std::stod(abs, &used2)};
    if (used1 != rel.size() || used2 != abs.size() || t.rel < 0 || t.abs < 0) return std::nullopt;
    return std::make_pair(text.substr(0, eq), t);
  } catch (...) {
    return std::nullopt;
  }
}

CheckResult Compare(const Baseline& baseline, const std::vector<std::map<std::string, double>>& runs,
                    const std::map<std::string, Threshold>& overrides) {
  CheckResult r;
  r.runs = runs.size();
  std::map<std::string, std::vector<double>> values;
  for (const auto& run : runs) {
    for (const auto& [k, v] : run) values[k].push_back(v);
  }
  bool any_data = false;
  std::set<std::string> names;
  for (const auto& [k, v] : values) names.insert(k);
  for (const auto& [k, f] : baseline.figures) names.insert(k);
  for (const auto& name : names) {
    FigureResult f;
    f.name = name;
    f.kind = KindOf(name);
    auto b = baseline.figures.find(name);
    f.threshold = b != baseline.figures.end() ? b->second.threshold : DefaultThreshold(name);
    if (auto o = overrides.find(name); o != overrides.end()) f.threshold = o->second;
    auto v = values.find(name);
    std::vector<double> got = v != values.end() ? v->second : std::vector<double>{};
    if (name.find('@') != std::string::npos) got = SiteValues(name, runs);
    if (got.empty()) {
      f.missing = true;
      if (b != baseline.figures.end()) {
        f.baseline = b->second.value;
        f.explanation = "not measured in these runs (lock or GIL tracing off, or not CPython 3?)";
        r.figures.push_back(f);
      }
      continue;
    }
    // Data means a figure the baseline can judge (or, for a baseline being judged empty, any).
    if (b != baseline.figures.end() || baseline.figures.empty()) any_data = true;
    f.runs = got;
    f.median = Median(got);
    f.min = *std::min_element(got.begin(), got.end());
    f.max = *std::max_element(got.begin(), got.end());
    if (b == baseline.figures.end()) {
      f.explanation = "new figure (not in the baseline): not judged; --update-baseline adds it";
      r.figures.push_back(f);
      continue;
    }
    double base = b->second.value;
    f.baseline = base;
    // Both thresholds must be exceeded: relative alone flags 1 -> 2, absolute alone flags
    // noise on large counts.
    f.limit = std::max(base * (1 + f.threshold.rel), base + f.threshold.abs);
    f.regressed = f.median > f.limit + 1e-12;
    double floor = std::min(base * (1 - f.threshold.rel), base - f.threshold.abs);
    f.improved = !f.regressed && f.median < floor - 1e-12;
    double spread = f.median > 0 ? (f.max - f.min) / f.median : 0;
    f.noisy = got.size() > 1 && spread > f.threshold.rel && (f.max - f.min) > f.threshold.abs;
    std::string change = base != 0        ? fmt::format("{:+.0f}%", 100 * (f.median - base) / base)
                         : f.median == 0 ? "unchanged"
                                         : "up from 0";
    if (f.regressed) {
      f.explanation = fmt::format("{} -> {} ({}): above the limit {} (baseline +{:.0f}% and +{})",
                                  Num(base, f.kind), Num(f.median, f.kind), change,
                                  Num(f.limit, f.kind), 100 * f.threshold.rel,
                                  Num(f.threshold.abs, f.kind));
    } else if (f.improved) {
      f.explanation = fmt::format("{} -> {} ({}): better than the baseline; --update-baseline "
                                  "to lock it in",
                                  Num(base, f.kind), Num(f.median, f.kind), change);
    } else {
      f.explanation = fmt::format("{} -> {} ({}), limit {}", Num(base, f.kind),
                                  Num(f.median, f.kind), change, Num(f.limit, f.kind));
    }
    if (f.noisy) {
      size_t within = std::count_if(got.begin(), got.end(), [&](double x) { return x <= f.limit; });
      f.explanation += fmt::format(
          "; noisy: runs ranged {}..{} ({:.0f}% of the median, more than the {:.0f}% threshold), "
          "{} of {} runs within the limit; the verdict uses the median: more --runs steady it",
          Num(f.min, f.kind), Num(f.max, f.kind), 100 * spread, 100 * f.threshold.rel, within,
          got.size());
    }
    if (f.regressed) r.verdict = Verdict::kRegression;
    r.figures.push_back(f);
  }
  if (!any_data) r.verdict = Verdict::kNoData;
  return r;
}

Baseline MakeBaseline(const std::vector<std::map<std::string, double>>& runs,
                      const Baseline* previous, const std::map<std::string, Threshold>& overrides,
                      json meta) {
  Baseline b;
  b.meta = std::move(meta);
  std::map<std::string, std::vector<double>> values;
  for (const auto& run : runs) {
    for (const auto& [k, v] : run) values[k].push_back(v);
  }
  for (auto& [name, got] : values) {
    if (name.find('@') != std::string::npos) got = SiteValues(name, runs);
    BaselineFigure f;
    f.value = Median(got);
    f.runs = got;
    f.threshold = DefaultThreshold(name);
    if (previous) {
      if (auto p = previous->figures.find(name); p != previous->figures.end()) {
        f.threshold = p->second.threshold;
      }
    }
    if (auto o = overrides.find(name); o != overrides.end()) f.threshold = o->second;
    b.figures[name] = f;
  }
  return b;
}

const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kOk: return "ok";
    case Verdict::kRegression: return "regression";
    case Verdict::kNoData: return "no_data";
  }
  return "ok";
}

std::string TextReport(const CheckResult& r) {
  std::string out = fmt::format("threadscope check: {} run(s)\n", r.runs);
  for (const auto& f : r.figures) {
    const char* mark = f.missing ? "MISSING" : f.regressed ? "REGRESSED" : !f.baseline ? "NEW"
                       : f.improved ? "IMPROVED" : "ok";
    out += fmt::format("  {:<9} {:<40} {}\n", mark, f.name, f.explanation);
  }
  // Point at code: the stacks whose waiting grew, one line each, the largest growth (relative
  // to the baseline, so counts and seconds compare) first.
  std::map<std::string, std::pair<double, std::string>> grew;  // where -> (growth, text)
  for (const auto& f : r.figures) {
    if (!f.regressed || !IsStackFigure(f.name)) continue;
    std::string where = f.name.substr(f.name.find(kStackMarker) + sizeof(kStackMarker) - 1);
    double base = f.baseline.value_or(0);
    double growth = base > 0 ? (f.median - base) / base : 1e300;
    auto& g = grew[where];
    g.first = std::max(g.first, growth);
    g.second += fmt::format("{}{} {} -> {}", g.second.empty() ? "" : "; ", BaseOf(f.name),
                            Num(base, f.kind), Num(f.median, f.kind));
  }
  std::vector<std::pair<std::string, std::pair<double, std::string>>> ranked(grew.begin(),
                                                                             grew.end());
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  if (!ranked.empty()) {
    out += "waiting grew at (innermost frame first):\n";
    for (const auto& [where, g] : ranked) out += fmt::format("  {}: {}\n", where, g.second);
  }
  switch (r.verdict) {
    case Verdict::kOk: out += "verdict: ok\n"; break;
    case Verdict::kRegression: out += "verdict: REGRESSION\n"; break;
    case Verdict::kNoData:
      out += "verdict: no data (no figure could be measured: did the command run CPython 3 "
             "with lock or GIL tracing on?)\n";
      break;
  }
  return out;
}

std::string JUnitXml(const CheckResult& r) {
  size_t failures = 0, skipped = 0;
  for (const auto& f : r.figures) {
    failures += f.regressed;
    skipped += f.missing || !f.baseline;
  }
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += fmt::format("<testsuites name=\"threadscope check\" tests=\"{}\" failures=\"{}\">\n",
                     r.figures.size(), failures);
  out += fmt::format(
      "  <testsuite name=\"threadscope check\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
      r.figures.size(), failures, skipped);
  for (const auto& f : r.figures) {
    out += fmt::format("    <testcase classname=\"threadscope.contention\" name=\"{}\">",
                       XmlEscape(f.name));
    if (f.regressed) {
      out += fmt::format("<failure message=\"{}\">{}</failure>", XmlEscape(f.explanation),
                         XmlEscape(f.explanation));
    } else if (f.missing || !f.baseline) {
      out += fmt::format("<skipped message=\"{}\"/>", XmlEscape(f.explanation));
    } else {
      out += fmt::format("<system-out>{}</system-out>", XmlEscape(f.explanation));
    }
    out += "</testcase>\n";
  }
  out += "  </testsuite>\n</testsuites>\n";
  return out;
}

std::string GitHubAnnotations(const CheckResult& r) {
  std::string out;
  for (const auto& f : r.figures) {
    if (f.regressed) {
      out += fmt::format("::error title={}::{}\n",
                         GhEscape("threadscope: " + f.name + " regressed", true),
                         GhEscape(f.explanation, false));
    } else if (f.noisy || f.missing) {
      out += fmt::format("::warning title={}::{}\n",
                         GhEscape("threadscope: " + f.name + (f.missing ? " missing" : " noisy"),
                                  true),
                         GhEscape(f.explanation, false));
    }
  }
  if (r.verdict == Verdict::kNoData) {
    out += "::error title=threadscope check::no figure could be measured\n";
  }
  return out;
}

std::string MarkdownSummary(const CheckResult& r) {
  std::string out = fmt::format("### threadscope check: {}\n\n", r.verdict == Verdict::kOk
                                                                     ? "✅ no contention regression"
                                : r.verdict == Verdict::kRegression ? "❌ contention regressed"
                                                                    : "⚠️ no data");
  out += fmt::format("{} run(s); medians against the committed baseline.\n\n", r.runs);
  out += "| figure | baseline | median (min–max) | limit | result |\n|---|---|---|---|---|\n";
  for (const auto& f : r.figures) {
    std::string base = f.baseline ? Num(*f.baseline, f.kind) : "–";
    std::string got = f.missing ? "–"
                                : fmt::format("{} ({}–{})", Num(f.median, f.kind),
                                              Num(f.min, f.kind), Num(f.max, f.kind));
    std::string result = f.missing ? "missing" : f.regressed ? "**regressed**"
                         : !f.baseline ? "new" : f.improved ? "improved" : "ok";
    if (f.noisy) result += " (noisy)";
    // Site names come from the traced program: no table breaks, no code-span breaks, no lines.
    std::string name = f.name;
    for (char& c : name) {
      if (c == '|') c = '/';
      if (c == '`') c = '\'';
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    }
    out += fmt::format("| `{}` | {} | {} | {} | {} |\n", name, base, got,
                       f.baseline && !f.missing ? Num(f.limit, f.kind) : "–", result);
  }
  return out;
}

json ResultJson(const CheckResult& r) {
  json figures = json::array();
  for (const auto& f : r.figures) {
    figures.push_back({{"name", f.name},
                       {"kind", f.kind == FigureKind::kCount ? "count" : "timing"},
                       {"baseline", f.baseline ? json(*f.baseline) : json(nullptr)},
                       {"median", f.missing ? json(nullptr) : json(f.median)},
                       {"min", f.missing ? json(nullptr) : json(f.min)},
                       {"max", f.missing ? json(nullptr) : json(f.max)},
                       {"runs", f.runs},
                       {"rel", f.threshold.rel},
                       {"abs", f.threshold.abs},
                       {"limit", f.baseline && !f.missing ? json(f.limit) : json(nullptr)},
                       {"regressed", f.regressed},
                       {"improved", f.improved},
                       {"noisy", f.noisy},
                       {"missing", f.missing},
                       {"explanation", f.explanation}});
  }
  return {{"verdict", VerdictName(r.verdict)}, {"runs", r.runs}, {"figures", figures}};
}

}  // namespace threadscope::client::gate
