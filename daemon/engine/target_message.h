// The v1::Target message of a live trace, built from what is known once the probes are
// attached: the inspected process, the probe plan, and what each planned probe gave. Pure: no
// clock, no /proc, no BPF (the facts that need them come in TargetFacts), so every field is
// unit-tested from plans built by hand.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "daemon/loader/probe_plan.h"
#include "daemon/target/python_process.h"
#include "settings/trace_settings.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::engine {

// What the engine knows about the trace besides the plan.
struct TargetFacts {
  pid_t pid = 0;                    // in the engine's pid namespace
  uint64_t attached_ns = 0;         // CLOCK_MONOTONIC when the probes were live
  int64_t realtime_offset_ns = 0;   // CLOCK_REALTIME - CLOCK_MONOTONIC then
  std::string kernel_release;
  // What the client asked for (the threshold and labels are shown as asked; what the probes
  // do with the rest is the plan's).
  settings::TraceSettings settings;
};

// `results`: one per planned probe, in plan order (BpfTracer::Attach). Every string that comes
// from the target's files (paths, symbol names) is made valid UTF-8: proto3 strings must be, or
// the message fails to parse for every client that lists the target.
v1::Target BuildTarget(const target::PythonProcess& process, const loader::ProbePlan& plan,
                       const std::vector<loader::ProbeAttachResult>& results,
                       const TargetFacts& facts);

// One probe as the API shows it.
v1::Probe ProbeToProto(const loader::PlannedProbe& planned,
                       const loader::ProbeAttachResult& result);

}  // namespace threadscope::engine
