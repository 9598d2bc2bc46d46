#include "client/cli_main.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "client/check_command.h"
#include "client/cli_options.h"
#include "client/commands.h"
#include "client/connection.h"
#include "client/dump_command.h"
#include "client/exit_codes.h"

namespace threadscope::client {

namespace {

// Colour when asked, or when stdout is a terminal that has not asked for none.
bool UseColor(const std::string& color) {
  const char* no_color = std::getenv("NO_COLOR");
  const char* term = std::getenv("TERM");
  return color == "always" || (color == "auto" && isatty(STDOUT_FILENO) &&
                               !(no_color && *no_color) && !(term && std::string(term) == "dumb"));
}

}  // namespace

int CliMain(int argc, char** argv, LocalEngineFactory local_engine) {
  ParsedCommandLine parsed = ParseCommandLine(std::vector<std::string>(argv, argv + argc));
  if (!parsed.out.empty()) std::fputs(parsed.out.c_str(), stdout);
  if (!parsed.error.empty()) std::fprintf(stderr, "threadscope: %s\n", parsed.error.c_str());
  if (!parsed.invocation) return parsed.exit_code;
  CliInvocation& inv = *parsed.invocation;
  if (inv.command == Subcommand::kCheck) return CheckCommand(inv.check, inv.argv);

  spdlog::set_level(inv.log_level == "off" ? spdlog::level::off
                                           : spdlog::level::from_str(inv.log_level));
  inv.trace.style.color = UseColor(inv.color);

  SignalWatch signals;  // before Connection::Open starts gRPC's threads
  inv.connect.local_engine = std::move(local_engine);
  auto conn = Connection::Open(inv.connect);
  if (!conn.ok()) {
    std::fprintf(stderr, "threadscope: %s\n", conn.status().message().c_str());
    switch (conn.status().code()) {
      case StatusCode::kUnavailable: return kExitNoDaemon;
      case StatusCode::kInvalidArgument: return kExitUsage;
      default: return kExitInternal;
    }
  }
  switch (inv.command) {
    case Subcommand::kExport:
      return ExportCommand(**conn, inv.input, inv.export_out, inv.export_format);
    case Subcommand::kAttach: return AttachCommand(**conn, signals, inv.pid, inv.trace);
    case Subcommand::kRun: return RunCommand(**conn, signals, inv.argv, inv.trace);
    case Subcommand::kRecord:
      if (inv.pid > 0) return AttachCommand(**conn, signals, inv.pid, inv.trace);
      return RunCommand(**conn, signals, inv.argv, inv.trace);
    case Subcommand::kReport:
      return ReportCommand(**conn, inv.input, inv.trace.output, inv.trace.report_file,
                           inv.trace.style);
    case Subcommand::kStatus: return StatusCommand(**conn, inv.trace.output);
    case Subcommand::kDump: return DumpCommand(**conn, inv.dump);
    case Subcommand::kCheck: break;  // handled above: it needs no connection
  }
  return kExitUsage;
}

}  // namespace threadscope::client
