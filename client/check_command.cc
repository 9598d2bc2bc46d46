#include "client/check_command.h"

#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "client/gate.h"
#include "client/profile.h"

namespace threadscope::client {

namespace {

using nlohmann::json;

int Usage(const std::string& message) {
  std::fprintf(stderr, "threadscope check: %s\n", message.c_str());
  return kCheckUsage;
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

bool WriteFile(const std::string& path, const std::string& text, bool append = false) {
  std::ofstream out(path, append ? std::ios::app : std::ios::trunc);
  out << text;
  return static_cast<bool>(out);
}

// Runs `threadscope run` with a report into `report` (and a profile into `profile`, unless
// empty); its output goes to `log`.
int RunOnce(const CheckOptions& options, const std::vector<std::string>& command,
            const std::string& report, const std::string& profile, const std::string& log) {
  std::vector<std::string> args = {"threadscope"};
  args.insert(args.end(), options.global_flags.begin(), options.global_flags.end());
  args.insert(args.end(), {"run", "--no-live", "--report", report});
  if (!profile.empty()) args.insert(args.end(), {"--pprof-out", profile});
  args.insert(args.end(), options.run_flags.begin(), options.run_flags.end());
  args.push_back("--");
  args.insert(args.end(), command.begin(), command.end());
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string LastLine(const std::string& path) {
  std::string text;
  if (!ReadFile(path, &text)) return "";
  while (!text.empty() && text.back() == '\n') text.pop_back();
  auto nl = text.rfind('\n');
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

int CheckCommandImpl(const CheckOptions& options, const std::vector<std::string>& command);

// A contention profile's per-stack figures (lock waits only: condition waits are not
// contention, GIL waits have their own figure).
StatusOr<std::map<std::string, double>> ProfileFigures(const std::string& path) {
  std::string bytes;
  if (!ReadFile(path, &bytes)) return ErrnoToStatus(errno, "cannot read profile " + path);
  auto p = profile::ParsePprof(bytes);
  if (!p.ok()) return p.status().WithContext(path);
  int contentions = p->Index("contentions"), delay = p->Index("delay");
  if (contentions < 0 || delay < 0) {
    return InvalidArgumentError(path + " has no contentions/delay samples (lock tracing off?)");
  }
  std::vector<gate::StackSample> samples;
  for (const auto& s : p->samples) {
    if (s.kind != profile::Kind::kLockWait) continue;
    gate::StackSample g;
    for (const auto& f : s.frames) g.frames.push_back({f.file, f.function});
    g.contentions = static_cast<double>(s.values[contentions]);
    g.delay_ns = static_cast<double>(s.values[delay]);
    samples.push_back(std::move(g));
  }
  return gate::StackFigures(samples);
}

}  // namespace

int CheckCommand(const CheckOptions& options, const std::vector<std::string>& command) {
  try {
    return CheckCommandImpl(options, command);
  } catch (const nlohmann::json::exception& e) {
    // A baseline or report that is JSON but not of the expected shape (a string where a number
    // belongs, a missing object).
    return Usage(std::string("a baseline or report has an unexpected shape: ") + e.what());
  }
}

namespace {

int CheckCommandImpl(const CheckOptions& options, const std::vector<std::string>& command) {
  if (!options.compare_profiles.empty()) {
    if (options.compare_profiles.size() < 2) {
      return Usage("--compare needs the baseline profile and at least one more");
    }
    if (!command.empty() || !options.reports.empty() || options.update_baseline) {
      return Usage("--compare takes profiles only (no command, --reports or --update-baseline)");
    }
  } else if (options.baseline.empty()) {
    return Usage("--baseline FILE is required");
  }
  if (options.compare_profiles.empty() && options.reports.empty() && command.empty()) {
    return Usage("give the command to run after --, or saved reports with --reports");
  }
  if (!options.reports.empty() && !command.empty()) {
    return Usage("give either --reports or a command, not both");
  }
  if (options.runs < 1 || options.runs > 100) return Usage("--runs must be 1-100");
  std::map<std::string, gate::Threshold> overrides;
  for (const auto& t : options.thresholds) {
    auto parsed = gate::ParseThreshold(t);
    if (!parsed) {
      return Usage("--threshold '" + t + "' is not NAME=REL,ABS (e.g. lock_contentions=0.25,5)");
    }
    overrides[parsed->first] = parsed->second;
  }

  // The baseline: required unless it is being created.
  std::optional<gate::Baseline> baseline;
  std::string text;
  std::vector<std::map<std::string, double>> runs;
  json meta = {{"runs", 0}};
  if (!options.compare_profiles.empty()) {
    // Two profiles (or more): the first is the baseline, each other one a run.
    for (size_t i = 0; i < options.compare_profiles.size(); ++i) {
      auto figures = ProfileFigures(options.compare_profiles[i]);
      if (!figures.ok()) return Usage(figures.status().message());
      if (i == 0) {
        baseline = gate::MakeBaseline({*figures}, nullptr, overrides,
                                      {{"profile", options.compare_profiles[0]}});
      } else {
        runs.push_back(std::move(*figures));
      }
    }
  } else if (ReadFile(options.baseline, &text)) {
    std::string why;
    baseline = gate::ParseBaseline(text, &why);
    if (!baseline && !options.update_baseline) {
      return Usage("baseline " + options.baseline + " is corrupt: " + why +
                   " (fix it, or rewrite it with --update-baseline)");
    }
    if (!baseline) {
      std::fprintf(stderr, "threadscope check: replacing corrupt baseline %s (%s)\n",
                   options.baseline.c_str(), why.c_str());
    }
  } else if (!options.update_baseline) {
    return Usage("cannot read baseline " + options.baseline + ": " + std::strerror(errno) +
                 " (create it with --update-baseline)");
  }

  // Figures, one map per run.
  if (!options.compare_profiles.empty()) {
    meta["profiles"] = options.compare_profiles;
  } else if (!options.reports.empty()) {
    for (const auto& path : options.reports) {
      std::string report;
      if (!ReadFile(path, &report)) return Usage("cannot read report " + path);
      json j = json::parse(report, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("report_version")) {
        return Usage(path + " is not a threadscope JSON report");
      }
      runs.push_back(gate::ExtractFigures(j));
      meta["python_version"] = j["target"].value("python_version", "");
    }
    meta["reports"] = options.reports;
  } else {
    char dir_template[] = "/tmp/threadscope-check-XXXXXX";
    if (!mkdtemp(dir_template)) {
      std::fprintf(stderr, "threadscope check: cannot create a temporary directory: %s\n",
                   std::strerror(errno));
      return kCheckInternal;
    }
    std::string dir = dir_template;
    std::string log = dir + "/runs.log";
    for (int i = 0; i < options.runs; ++i) {
      std::string report = dir + "/run-" + std::to_string(i + 1) + ".json";
      std::string profile_path =
          options.stacks ? dir + "/run-" + std::to_string(i + 1) + ".pb.gz" : "";
      auto t0 = std::chrono::steady_clock::now();
      int code = RunOnce(options, command, report, profile_path, log);
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::string body;
      json j;
      if (ReadFile(report, &body)) j = json::parse(body, nullptr, false);
      if (!j.is_object()) {
        std::fprintf(stderr, "threadscope check: run %d/%d produced no report (exit %d): %s\n",
                     i + 1, options.runs, code, LastLine(log).c_str());
        continue;
      }
      auto figures = gate::ExtractFigures(j);
      if (options.stacks && figures.count("lock_contentions")) {
        auto stacks = ProfileFigures(profile_path);
        if (!stacks.ok()) {
          std::fprintf(stderr, "threadscope check: run %d/%d: no stack figures: %s\n", i + 1,
                       options.runs, stacks.status().message().c_str());
        } else {
          // Totals stay the report's; the profile adds its stacks.
          for (const auto& [k, v] : *stacks) {
            if (gate::IsStackFigure(k)) figures[k] = v;
          }
        }
      }
      std::fprintf(stderr, "threadscope check: run %d/%d: exit %d, %.1fs, %zu figures\n", i + 1,
                   options.runs, code, secs, figures.size());
      runs.push_back(std::move(figures));
      meta["python_version"] = j["target"].value("python_version", "");
    }
    meta["command"] = command;
    meta["run_flags"] = options.run_flags;  // not the global ones: they may name secrets' files
    std::filesystem::remove_all(dir);
  }
  meta["runs"] = runs.size();
  if (runs.empty()) {
    std::fprintf(stderr, "threadscope check: no data: no run produced a report\n");
    return kCheckNoData;
  }

  if (options.update_baseline) {
    gate::Baseline fresh = gate::MakeBaseline(runs, baseline ? &*baseline : nullptr, overrides, meta);
    if (fresh.figures.empty()) {
      std::fprintf(stderr, "threadscope check: no data: the reports have no figures\n");
      return kCheckNoData;
    }
    if (!WriteFile(options.baseline, gate::BaselineJson(fresh).dump(2) + "\n")) {
      std::fprintf(stderr, "threadscope check: cannot write %s\n", options.baseline.c_str());
      return kCheckInternal;
    }
    std::printf("threadscope check: wrote baseline %s (%zu figures, medians of %zu runs)\n",
                options.baseline.c_str(), fresh.figures.size(), runs.size());
    return kCheckOk;
  }

  gate::CheckResult result = gate::Compare(*baseline, runs, overrides);
  std::fputs(gate::TextReport(result).c_str(), stdout);
  const char* gha = std::getenv("GITHUB_ACTIONS");
  if (options.github || (gha && std::string(gha) == "true")) {
    std::fputs(gate::GitHubAnnotations(result).c_str(), stdout);
  }
  std::string summary = options.summary_file;
  if (summary.empty()) {
    if (const char* s = std::getenv("GITHUB_STEP_SUMMARY"); s && *s) summary = s;
  }
  bool ok = true;
  if (!summary.empty()) ok &= WriteFile(summary, gate::MarkdownSummary(result), true);
  if (!options.junit_file.empty()) ok &= WriteFile(options.junit_file, gate::JUnitXml(result));
  if (!options.json_file.empty()) {
    ok &= WriteFile(options.json_file, gate::ResultJson(result).dump(2) + "\n");
  }
  std::fflush(stdout);
  if (!ok) {
    std::fprintf(stderr, "threadscope check: could not write an output file\n");
    return kCheckInternal;
  }
  switch (result.verdict) {
    case gate::Verdict::kOk: return kCheckOk;
    case gate::Verdict::kRegression: return kCheckRegression;
    case gate::Verdict::kNoData: return kCheckNoData;
  }
  return kCheckInternal;
}

}  // namespace

}  // namespace threadscope::client
