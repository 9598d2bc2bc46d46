// The CLI's flag schema: every subcommand and flag, parsed and checked into one CliInvocation
// before anything connects or traces. Pure apart from checking that output files can be written
// (a typo in a path must not cost a trace): tests/unit/cli_options_test.cc drives it.
//
// The trace knobs are checked by settings::ValidateAttachOptions, the function the daemon runs
// on every Attach, on the AttachOptions built here: one set of messages for both. What is only
// the CLI's (durations and sizes as text, the output files, which subcommand takes what) is
// checked here.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "client/check_command.h"
#include "client/commands.h"
#include "client/connection.h"
#include "client/dump_command.h"

namespace threadscope::client {

enum class Subcommand { kAttach, kRun, kRecord, kReport, kCheck, kExport, kDump, kStatus };

struct CliInvocation {
  Subcommand command = Subcommand::kStatus;
  std::vector<std::string> argv;  // everything after the first "--", verbatim
  ConnectOptions connect;         // without the local engine (CliMain adds it)
  std::string log_level = "warn";
  std::string color = "auto";     // auto, always, never: CliMain decides against the terminal
  pid_t pid = 0;                  // attach; record --pid
  TraceOptions trace;             // attach, run, record; output and report_file: report, status
  std::string input;              // report, export: the recording
  std::string export_out;
  std::string export_format;      // perfetto, chrome, pprof, collapsed (from the name if not given)
  CheckOptions check;
  DumpCommandOptions dump;
};

struct ParsedCommandLine {
  std::optional<CliInvocation> invocation;  // set: run it
  int exit_code = 0;   // otherwise exit with this: 0 after --help / --version, else kExitUsage
  std::string out;     // for stdout (help, version)
  std::string error;   // for stderr, one line, without the "threadscope: " prefix
};

// args[0] is the program name, as in argv.
ParsedCommandLine ParseCommandLine(const std::vector<std::string>& args);

// "5", "5s", "250ms", "2m", "1h" -> seconds; nullopt when it does not parse.
std::optional<double> ParseDuration(const std::string& text);
// "65536", "64K", "16M" -> bytes (at most 2 GiB); "" -> 0; nullopt when it does not parse.
std::optional<uint32_t> ParseSize(const std::string& text);

}  // namespace threadscope::client
