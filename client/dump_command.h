// `threadscope dump`: a hung process explained (daemon/dump), rendered for people (text:
// deadlocks first, then every thread like `py-spy dump`, with what it waits for and who holds
// it) and programs (the JSON contract in README.md, "dump JSON").
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "client/connection.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::client {

struct DumpCommandOptions {
  int pid = 0;
  std::string core;
  std::string executable;
  bool json = false;
  bool native = false;
  bool locals = false;
  bool nonblocking = false;
};

int DumpCommand(Connection& conn, const DumpCommandOptions& options);

nlohmann::json DumpJson(const v1::ProcessDump& dump);
std::string DumpText(const v1::ProcessDump& dump);

// The exit code of a failed Dump: from its DumpError details when present.
int DumpExitCode(const grpc::Status& status);

}  // namespace threadscope::client
