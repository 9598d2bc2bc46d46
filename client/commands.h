// The CLI's commands. Each returns a process exit code (client/exit_codes.h).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "client/connection.h"
#include "client/report.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::client {

enum class OutputFormat { kText, kJson, kJsonl };

struct TraceOptions {
  OutputFormat output = OutputFormat::kText;
  double duration_s = 0;   // 0: until Ctrl-C (attach) or the command exits (run)
  double interval_s = 1.0; // live view refresh
  std::string report_file; // final JSON report
  std::string record_file; // raw recording
  std::string events_file; // JSON Lines events to a file instead of stdout
  bool live_view = true;   // refreshing table when stdout is a terminal and output is text
  // What the trace is asked to do, in its wire form, checked by settings::ValidateAttachOptions
  // (client/cli_options.cc) before it is sent.
  v1::AttachOptions attach;
  bool gil_events = false;  // stream GIL events too
  std::string timeline_file;                  // --perfetto-out / --chrome-out
  std::string timeline_format = "perfetto";
  std::string pprof_file;      // --pprof-out: contention profile (gzipped pprof)
  std::string collapsed_file;  // --collapsed-out: folded stacks (nanoseconds waited)
  TextStyle style;
};

// Signals as a file descriptor, so waits can include them. Construct it in main() before any
// thread exists (gRPC starts threads): every thread inherits the blocked mask, and no other
// thread can take a signal meant for the command loop.
class SignalWatch {
 public:
  SignalWatch();
  ~SignalWatch();
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;
  // Waits up to timeout_ms; returns the signal number, or 0.
  int Wait(int timeout_ms);

 private:
  sigset_t set_, old_;
  int fd_ = -1;
};

int AttachCommand(Connection& conn, SignalWatch& signals, pid_t pid, const TraceOptions& options);
int RunCommand(Connection& conn, SignalWatch& signals, const std::vector<std::string>& argv,
               const TraceOptions& options);
int ReportCommand(Connection& conn, const std::string& file, OutputFormat output,
                  const std::string& report_file, const TextStyle& style);
int StatusCommand(Connection& conn, OutputFormat output);
// A recording as a timeline, format "perfetto" (TrackEvent protobuf) or "chrome" (JSON), or as
// a contention profile: "pprof" (gzipped profile.proto) or "collapsed" (folded stacks).
int ExportCommand(Connection& conn, const std::string& recording, const std::string& out,
                  const std::string& format);

}  // namespace threadscope::client
