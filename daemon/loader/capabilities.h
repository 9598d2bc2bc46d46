// What the model can know about a target, derived from the probe plan and from what attached.
//
// One pure function, so the answer never depends on probe names: a capability is there when
// every planned probe that feeds it (the catalogue's `feeds`, narrowed per build by the plan)
// was placed and attached. The engine configures the model and the target it reports from it.
#pragma once

#include <string>
#include <vector>

#include "daemon/loader/probe_plan.h"
#include "daemon/model/thread_model.h"

namespace threadscope::loader {

struct LockCapabilities {
  bool waits = false;            // blocking waits on held locks
  bool wakers = false;           // who released a waited-on lock
  bool creation = false;         // lock objects and their creators
  bool frees = false;            // freed locks
  bool acquire_release = false;  // every acquire and release (--locks all)
  bool contention = false;       // 3.13+: critical sections and interpreter mutexes
  std::string reason;            // why waits are not seen, when they are not
};

struct ModelCapabilities {
  model::ThreadModelConfig threads;  // join visibility, body-done visibility
  GilCoverage gil;                   // the plan's, downgraded by probes that did not attach
  LockCapabilities locks;
};

// `results` holds one entry per planned probe, in plan order (BpfTracer::Attach).
ModelCapabilities DeriveCapabilities(const ProbePlan& plan,
                                     const std::vector<ProbeAttachResult>& results);
// What the plan promises if every placed probe attaches.
ModelCapabilities PlannedCapabilities(const ProbePlan& plan);

}  // namespace threadscope::loader
