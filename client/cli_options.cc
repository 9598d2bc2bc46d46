#include "client/cli_options.h"

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <sstream>

#include "client/exit_codes.h"
#include "daemon/common/labels.h"
#include "daemon/common/version.h"
#include "settings/trace_settings.h"

namespace threadscope::client {

namespace {

// The trace flags as typed, before they are read.
struct TraceFlags {
  std::string output = "text";
  std::string duration;
  std::string interval = "1s";
  std::string report_file;
  std::string events_file;
  std::string ring_buffer;
  bool no_live = false;
  std::string lease = "15s";
  std::string locks = "contended";
  std::string lock_threshold = "0";
  // Signed, so that a negative value gets the settings' message rather than CLI11's.
  int lock_stacks = settings::kMaxStackFrames;
  int acquire_stacks = 0;
  std::string gil = "waits";
  std::string overhead_budget;
  bool gil_events = false;
  int gil_stacks = 0;
  std::string gil_stack_threshold = "1ms";
  std::vector<std::string> labels;
  std::string perfetto_out;
  std::string chrome_out;
  std::string pprof_out;
  std::string collapsed_out;
  std::string record_file;
};

void AddTraceOptions(CLI::App* cmd, TraceFlags& f, bool with_output) {
  if (with_output) {
    cmd->add_option("-o,--output", f.output, "text (live view + summary), json (final report), "
                                             "jsonl (one event per line)")
        ->check(CLI::IsMember({"text", "json", "jsonl"}));
  }
  cmd->add_option("-d,--duration", f.duration, "stop after this long (30, 30s, 500ms, 2m)");
  cmd->add_option("--interval", f.interval, "live view refresh interval");
  cmd->add_option("--report", f.report_file, "write the final state as JSON to FILE");
  cmd->add_option("--events", f.events_file, "write events as JSON Lines to FILE");
  cmd->add_option("--ring-buffer", f.ring_buffer,
                  "kernel ring buffer size in bytes (power of two, K/M suffix), default 16M");
  cmd->add_flag("--no-live", f.no_live, "no refreshing view, even on a terminal");
  cmd->add_option("--locks", f.locks,
                  "lock tracing: contended (default: waits, wakers, owners learned at handoffs), "
                  "all (every acquire and release: exact owners, hold times, lock order), off");
  cmd->add_option("--lock-threshold", f.lock_threshold,
                  "only lock waits at least this long become events (statistics stay exact)");
  cmd->add_option("--lock-stacks", f.lock_stacks,
                  "Python frames recorded where locks are waited for and created: "
                  "0-8, default 8; 0 turns stacks off");
  cmd->add_option("--acquire-stacks", f.acquire_stacks,
                  "with --locks=all: Python frames recorded at every acquire, so owners show where "
                  "they took their locks (0-8, default 0; costs about as much as --locks=all)");
  cmd->add_option("--gil", f.gil,
                  "GIL tracing: waits (default; `on` says the same: exact per-thread waits for "
                  "the GIL, no probe on uncontended takes and drops), full (every take and "
                  "drop: also the holder, holds, switches and forced switches, ~0.8 us per "
                  "take and drop), off");
  cmd->add_option("--overhead-budget", f.overhead_budget,
                  "keep this target's tracing under this share of one core (1%, 0.5%): the "
                  "daemon estimates the cost and steps down to cheaper stages "
                  "(docs/PERFORMANCE.md, \"Overhead budget\")");
  cmd->add_option("--gil-stacks", f.gil_stacks,
                  "Python frames recorded when a GIL wait of at least --gil-stack-threshold ends "
                  "(0-8, default 0: off), so profiles show GIL waits by stack");
  cmd->add_option("--gil-stack-threshold", f.gil_stack_threshold,
                  "shortest GIL wait that records a stack with --gil-stacks (default 1ms)");
  cmd->add_flag("--gil-events", f.gil_events,
                "also stream every GIL wait, acquisition and drop as events (-o jsonl, --events)");
  cmd->add_option("--perfetto-out", f.perfetto_out,
                  "write a Perfetto timeline (threads, lock waits and hand-offs, GIL) at the end");
  cmd->add_option("--chrome-out", f.chrome_out, "the same timeline as Chrome trace JSON");
  cmd->add_option("--pprof-out", f.pprof_out,
                  "write a contention profile at the end: lock, condition and GIL waits (and "
                  "holds with --locks all) by Python stack, gzipped pprof (go tool pprof, "
                  "Pyroscope, ui.perfetto.dev)");
  cmd->add_option("--collapsed-out", f.collapsed_out,
                  "write the waits as folded stacks at the end (flamegraph.pl, inferno, "
                  "speedscope; values are nanoseconds waited)");
  cmd->add_option("--label", f.labels,
                  "NAME=VALUE on this target's metrics (with a daemon serving --metrics-addr)");
  cmd->add_option("--lease", f.lease,
                  "with a daemon: detach if this client is gone for this long (default 15s)");
}

// Output files are checked before anything is traced: a typo in a path must not cost a trace.
// Nothing is created here: an existing file must be writable, a new one's directory must be.
std::string Unwritable(const std::vector<std::pair<const char*, std::string>>& outputs) {
  for (const auto& [flag, path] : outputs) {
    if (path.empty()) continue;
    std::string probe = path;
    if (access(path.c_str(), F_OK) != 0) {
      auto slash = path.rfind('/');
      probe = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    }
    if (access(probe.c_str(), W_OK) != 0) {
      return std::string(flag) + ": cannot write " + path + ": " + std::strerror(errno);
    }
  }
  return "";
}

ParsedCommandLine UsageError(std::string message) {
  ParsedCommandLine r;
  r.exit_code = kExitUsage;
  r.error = std::move(message);
  return r;
}

// The trace flags read into `trace`: the CLI's own checks (text forms), then the settings'.
// Empty when they are good, else the message.
std::string ReadTraceFlags(const TraceFlags& f, TraceOptions& trace) {
  trace.output = f.output == "json"    ? OutputFormat::kJson
                 : f.output == "jsonl" ? OutputFormat::kJsonl
                                       : OutputFormat::kText;
  if (!f.duration.empty()) {
    auto d = ParseDuration(f.duration);
    if (!d || *d <= 0) return "--duration: cannot parse '" + f.duration + "' (use 30, 30s, 500ms, 2m)";
    trace.duration_s = *d;
  }
  auto interval = ParseDuration(f.interval);
  if (!interval || *interval < 0.05) {
    return "--interval: cannot parse '" + f.interval + "' (at least 50ms)";
  }
  trace.interval_s = *interval;
  v1::AttachOptions& a = trace.attach;
  auto ring = ParseSize(f.ring_buffer);
  if (!ring) return "--ring-buffer: cannot parse '" + f.ring_buffer + "' (e.g. 16M)";
  a.set_ring_buffer_bytes(*ring);
  auto lease = ParseDuration(f.lease);
  if (!lease || *lease < 1) return "--lease: cannot parse '" + f.lease + "' (at least 1s)";
  a.set_lease_seconds(static_cast<uint32_t>(*lease));
  auto locks = settings::ParseLockMode(f.locks);
  if (!locks) return "--locks: '" + f.locks + "' is not one of contended, all, off";
  a.set_locks(settings::ToProto(*locks));
  auto threshold = ParseDuration(f.lock_threshold);
  if (!threshold) {
    return "--lock-threshold: cannot parse '" + f.lock_threshold + "' (use 20ms, 1s, 500us)";
  }
  a.set_lock_threshold_ns(static_cast<uint64_t>(*threshold * 1e9));
  for (auto [field, value] : {std::pair{"lock_stack_frames", f.lock_stacks},
                              std::pair{"acquire_stack_frames", f.acquire_stacks},
                              std::pair{"gil_stack_frames", f.gil_stacks}}) {
    if (value < 0) return settings::StackFramesOutOfRange(field, value).message();
  }
  a.set_lock_stack_frames(static_cast<uint32_t>(f.lock_stacks));
  a.set_acquire_stack_frames(static_cast<uint32_t>(f.acquire_stacks));
  if (!settings::SetGilOption(f.gil, &a)) {
    return "--gil: '" + f.gil + "' is not one of " + settings::kGilOptionValues;
  }
  a.set_overhead_budget(f.overhead_budget);
  a.set_gil_stack_frames(static_cast<uint32_t>(f.gil_stacks));
  auto gil_threshold = ParseDuration(f.gil_stack_threshold);
  if (!gil_threshold || *gil_threshold <= 0) {
    // 0 is refused, not read as "every take": a walk at every take_gil return is the cost
    // the threshold exists to avoid (1us gets nearly every wait, if that is what is wanted).
    // (On the wire 0 means "the default", so this is the CLI's check.)
    return "--gil-stack-threshold: '" + f.gil_stack_threshold +
           "' is not a duration above 0 (use 1ms, 500us)";
  }
  a.set_gil_stack_threshold_ns(static_cast<uint64_t>(*gil_threshold * 1e9));
  for (const auto& l : f.labels) {
    auto label = ParseLabel(l);
    if (!label.ok()) return "--label: " + label.status().message();
    (*a.mutable_labels())[label->first] = label->second;
  }
  // The daemon's check, run here too: a bad value is refused before anything connects.
  if (auto checked = settings::ValidateAttachOptions(a); !checked.ok()) {
    return checked.status().message();
  }
  trace.gil_events = f.gil_events;
  if (!f.perfetto_out.empty() && !f.chrome_out.empty()) {
    return "give --perfetto-out or --chrome-out, not both";
  }
  trace.timeline_file = f.perfetto_out.empty() ? f.chrome_out : f.perfetto_out;
  trace.timeline_format = f.perfetto_out.empty() ? "chrome" : "perfetto";
  trace.pprof_file = f.pprof_out;
  trace.collapsed_file = f.collapsed_out;
  trace.report_file = f.report_file;
  trace.events_file = f.events_file;
  trace.live_view = !f.no_live;
  return "";
}

std::string ExportFormatFor(const std::string& out) {
  auto ends = [&](const std::string& suffix) {
    return out.size() >= suffix.size() &&
           out.compare(out.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends(".json")                           ? "chrome"
         : ends(".pb.gz") || ends(".pprof")      ? "pprof"
         : ends(".folded") || ends(".collapsed") ? "collapsed"
                                                 : "perfetto";
}

}  // namespace

std::optional<double> ParseDuration(const std::string& text) {
  if (text.empty()) return std::nullopt;
  size_t pos = 0;
  double value;
  try {
    value = std::stod(text, &pos);
  } catch (...) {
    return std::nullopt;
  }
  std::string unit = text.substr(pos);
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  if (unit == "ms") scale = 1e-3;
  if (unit == "us") scale = 1e-6;
  if (unit == "m") scale = 60;
  if (unit == "h") scale = 3600;
  if (scale == 0 || value < 0 || !std::isfinite(value)) return std::nullopt;
  return value * scale;
}

std::optional<uint32_t> ParseSize(const std::string& s) {
  if (s.empty()) return 0;
  size_t pos = 0;
  unsigned long long v;
  try {
    v = std::stoull(s, &pos);
  } catch (...) {
    return std::nullopt;
  }
  std::string unit = s.substr(pos);
  if (unit == "K" || unit == "k") v <<= 10;
  else if (unit == "M" || unit == "m") v <<= 20;
  else if (!unit.empty()) return std::nullopt;
  if (v > (1ull << 31)) return std::nullopt;
  return static_cast<uint32_t>(v);
}

ParsedCommandLine ParseCommandLine(const std::vector<std::string>& args) {
  CliInvocation inv;
  TraceFlags f;
  // Everything after the first "--" is the command to run, verbatim (CLI11 would reorder it).
  std::vector<std::string> own;
  for (size_t i = 0; i < args.size(); ++i) {
    if (i > 0 && args[i] == "--") {
      inv.argv.assign(args.begin() + i + 1, args.end());
      break;
    }
    own.push_back(args[i]);
  }

  CLI::App app{"threadscope: CPython threads, traced from outside the process with eBPF"};
  app.set_version_flag("--version", kThreadscopeVersion);
  app.require_subcommand(1);
  ConnectOptions& connect = inv.connect;
  app.add_option("--server", connect.server,
                 "threadscoped address (unix:/path); default unix:/run/threadscope/"
                 "threadscope.sock, else trace in-process")
      ->envname("THREADSCOPE_SERVER");
  app.add_flag("--no-daemon", connect.no_daemon, "trace in-process even if threadscoped runs");
  app.add_option("--tls-ca", connect.tls_ca,
                 "TCP servers: the CA that signed the daemon's certificate");
  app.add_option("--token-file", connect.token_file, "TCP servers: file holding the bearer token")
      ->envname("THREADSCOPE_TOKEN_FILE");
  app.add_option("--tls-server-name", connect.tls_server_name,
                 "TCP servers: the name the certificate is checked against, if not the host");
  app.add_option("--color", inv.color, "auto, always, never (NO_COLOR is honoured)")
      ->check(CLI::IsMember({"auto", "always", "never"}));
  app.add_option("--log-level", inv.log_level, "engine log level for in-process tracing")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  auto* attach = app.add_subcommand("attach", "trace a running CPython process");
  attach->add_option("pid", inv.pid, "process id")->required();
  AddTraceOptions(attach, f, true);

  auto* run = app.add_subcommand("run", "start a command under tracing and exit with its status");
  AddTraceOptions(run, f, true);
  run->footer("Usage: threadscope run [options] -- CMD [ARGS...]");

  auto* record = app.add_subcommand("record", "record the raw event stream of --pid or a command");
  record->add_option("-o,--output", f.record_file, "recording file to write")->required();
  record->add_option("-p,--pid", inv.pid, "attach to this process instead of running a command");
  AddTraceOptions(record, f, false);
  record->footer("Usage: threadscope record -o FILE (--pid PID | -- CMD [ARGS...])");

  auto* report = app.add_subcommand("report", "rebuild the report from a recording");
  report->add_option("file", inv.input, "recording file")->required();
  report->add_option("-o,--output", f.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  report->add_option("--report", f.report_file, "also write the JSON report to FILE");

  CheckOptions& check_options = inv.check;
  std::string check_locks = "contended", check_gil = "on";
  auto* check = app.add_subcommand(
      "check", "CI gate: trace a command N times, compare lock and GIL contention with a baseline");
  check->add_option("--baseline", check_options.baseline, "baseline JSON (committed)");
  check->add_flag("--stacks", check_options.stacks,
                  "also judge per-stack figures: each run writes a contention profile, and the "
                  "stacks whose waiting grew are named");
  check->add_option("--compare", check_options.compare_profiles,
                    "compare contention profiles (pprof, from --pprof-out or export): the first "
                    "is the baseline; names the stacks whose waiting grew")
      ->expected(2, 64);
  check->add_option("--runs", check_options.runs, "runs of the command; the median is compared")
      ->capture_default_str();
  check->add_flag("--update-baseline", check_options.update_baseline,
                  "write the baseline from these runs instead of comparing");
  check->add_option("--reports", check_options.reports,
                    "compare saved JSON reports (--report) instead of running a command");
  check->add_option("--threshold", check_options.thresholds,
                    "NAME=REL,ABS: a figure regresses when its median exceeds the baseline by "
                    "more than REL (0.25 = 25%) and ABS (repeatable)");
  check->add_option("--junit", check_options.junit_file, "write JUnit XML");
  check->add_option("--json", check_options.json_file, "write the result as JSON");
  check->add_option("--summary", check_options.summary_file,
                    "append a Markdown summary (default: $GITHUB_STEP_SUMMARY)");
  check->add_flag("--github", check_options.github,
                  "print GitHub annotations (default when GITHUB_ACTIONS=true)");
  check->add_option("--locks", check_locks,
                    "lock tracing of each run: contended (default), all, off")
      ->check(CLI::IsMember({"contended", "all", "off"}));
  check->add_option("--gil", check_gil,
                    "GIL tracing of each run: waits (default; = on), full (GIL holds too), off")
      ->check(CLI::IsMember({"on", "waits", "full", "off"}));
  check->footer("Usage: threadscope check --baseline FILE [--runs N] [--stacks] -- CMD [ARGS...]\n"
                "       threadscope check --compare OLD.pb.gz NEW.pb.gz\n"
                "Exit: 0 ok, 1 regression, 2 usage or bad baseline, 3 internal error, 4 no data");

  auto* exporter = app.add_subcommand(
      "export", "write a recording as a timeline (Perfetto, Chrome) or a contention profile "
                "(pprof, folded stacks)");
  exporter->add_option("file", inv.input, "recording file")->required();
  exporter->add_option("-o,--output", inv.export_out, "file to write")->required();
  exporter->add_option("--format", inv.export_format,
                       "perfetto (TrackEvent protobuf, ui.perfetto.dev), chrome (JSON), pprof "
                       "(gzipped profile.proto: lock, condition and GIL waits by Python stack) "
                       "or collapsed (folded stacks, nanoseconds waited); default from the name: "
                       "*.json chrome, *.pb.gz/*.pprof pprof, *.folded/*.collapsed collapsed, "
                       "else perfetto")
      ->check(CLI::IsMember({"perfetto", "chrome", "pprof", "collapsed"}));

  DumpCommandOptions& dump_options = inv.dump;
  std::string dump_output = "text";
  auto* dump = app.add_subcommand(
      "dump", "a hung process explained: every thread, what it waits for, who holds it, the "
              "deadlocks (no BPF; ptrace rights)");
  dump->add_option("pid", dump_options.pid, "process id");
  dump->add_option("-o,--output", dump_output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  dump->add_option("--core", dump_options.core, "a core file (gcore's or a crash's) instead of a pid");
  dump->add_option("--exe", dump_options.executable,
                   "with --core: the executable the core was dumped from (default: the path "
                   "the core names, when it exists here)");
  dump->add_flag("--native", dump_options.native, "also C frames (pc and frame-pointer chain)");
  dump->add_flag("--locals", dump_options.locals,
                 "the innermost frame's local variables (read, never repr()'d)");
  dump->add_flag("--nonblocking", dump_options.nonblocking,
                 "do not stop the process: read until two passes agree");
  dump->footer("Usage: threadscope dump PID [-o text|json] [--native] [--locals] [--nonblocking]\n"
               "       threadscope dump --core CORE [--exe PYTHON] [-o text|json]\n"
               "Exit: 0 ok, 3 no such process, 4 not CPython, 5 permission denied, 7 exited "
               "during the dump,\n      9 bad core file, 10 the core's executable is missing, "
               "11 --exe does not match the core");

  auto* status = app.add_subcommand("status", "show the engine and its targets");
  status->add_option("-o,--output", f.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));

  std::vector<char*> argv;
  for (auto& a : own) argv.push_back(a.data());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      ParsedCommandLine r;
      std::ostringstream out, err;
      r.exit_code = app.exit(e, out, err);
      r.out = out.str() + err.str();
      return r;
    }
    return UsageError(std::string(e.what()) + " (see threadscope --help)");
  }
  connect.server_explicit = !connect.server.empty();
  if (check->parsed()) {
    // The gate runs `threadscope run` per run: it needs no connection of its own.
    // Each run connects as this command was told to.
    inv.command = Subcommand::kCheck;
    auto& g = check_options.global_flags;
    if (!connect.server.empty()) g.insert(g.end(), {"--server", connect.server});
    if (connect.no_daemon) g.push_back("--no-daemon");
    if (!connect.tls_ca.empty()) g.insert(g.end(), {"--tls-ca", connect.tls_ca});
    if (!connect.token_file.empty()) g.insert(g.end(), {"--token-file", connect.token_file});
    if (!connect.tls_server_name.empty()) {
      g.insert(g.end(), {"--tls-server-name", connect.tls_server_name});
    }
    check_options.run_flags = {"--locks", check_locks, "--gil", check_gil};
    return ParsedCommandLine{std::move(inv)};
  }

  TraceOptions& trace = inv.trace;
  if (std::string bad = ReadTraceFlags(f, trace); !bad.empty()) return UsageError(bad);
  if (std::string bad = Unwritable({{"--report", f.report_file},
                                     {"--pprof-out", f.pprof_out},
                                     {"--collapsed-out", f.collapsed_out},
                                     {"--events", f.events_file},
                                     {f.perfetto_out.empty() ? "--chrome-out" : "--perfetto-out",
                                      trace.timeline_file},
                                     {"export -o", exporter->parsed() ? inv.export_out : ""}});
      !bad.empty()) {
    return UsageError(bad);
  }

  if (dump->parsed()) {
    inv.command = Subcommand::kDump;
    if ((dump_options.pid > 0) == !dump_options.core.empty()) {
      return UsageError("dump: give a pid or --core FILE (threadscope dump --help)");
    }
    if (dump_options.pid < 0) return UsageError("pid must be a positive integer");
    if (!dump_options.executable.empty() && dump_options.core.empty()) {
      return UsageError("dump: --exe goes with --core");
    }
    dump_options.json = dump_output == "json";
    // A core file is read by this process, with the caller's own rights.
    if (!dump_options.core.empty()) connect.no_daemon = true;
  }
  if (exporter->parsed()) {
    inv.command = Subcommand::kExport;
    if (inv.export_format.empty()) inv.export_format = ExportFormatFor(inv.export_out);
  } else if (attach->parsed()) {
    inv.command = Subcommand::kAttach;
    if (inv.pid <= 0) return UsageError("pid must be a positive integer");
  } else if (run->parsed()) {
    inv.command = Subcommand::kRun;
    if (inv.argv.empty()) return UsageError("run: no command given (threadscope run -- CMD ARGS)");
    trace.live_view = false;  // the command owns the terminal
  } else if (record->parsed()) {
    inv.command = Subcommand::kRecord;
    trace.record_file = f.record_file;
    trace.output = OutputFormat::kText;
    trace.live_view = false;
    if (inv.pid > 0 && !inv.argv.empty()) {
      return UsageError("record: give either --pid or a command, not both");
    }
    if (inv.pid <= 0 && inv.argv.empty()) return UsageError("record: give --pid PID or -- CMD ARGS");
  } else if (report->parsed()) {
    inv.command = Subcommand::kReport;
  } else if (status->parsed()) {
    inv.command = Subcommand::kStatus;
  }
  // (attach and export have always ignored a command after "--"; the rest refuse one.)
  if (!inv.argv.empty() && (inv.command == Subcommand::kReport ||
                            inv.command == Subcommand::kStatus || inv.command == Subcommand::kDump)) {
    return UsageError("'--' and a command are only accepted by run, record and check");
  }
  return ParsedCommandLine{std::move(inv)};
}

}  // namespace threadscope::client
