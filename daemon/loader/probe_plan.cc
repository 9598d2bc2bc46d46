#include "daemon/loader/probe_plan.h"

#include <algorithm>

#include "daemon/loader/planner.h"
#include "probes/threadscope_events.h"

namespace threadscope::loader {

ProbePlan PlanProbes(const target::InspectedProcess& t, const target::Disassembler& dis,
                     const settings::TraceSettings& options) {
  PlanContext p(t, dis);
  ProbePlan plan;
  plan.locks = options.locks;
  plan.trace_all_sems = options.locks != LockMode::kOff && t.info.version.major == 3;
  // Stacks say where locks are waited for, created and taken: only useful with lock tracing.
  if (!plan.trace_all_sems) {
    plan.stacks_unavailable = "lock tracing is off";
  } else if (options.lock_stack_frames == 0) {
    plan.stacks_unavailable = "turned off (--lock-stacks 0)";
  } else if (auto support = target::ResolvePyStackSupport(t); support.ok()) {
    plan.stacks = std::move(*support);
    plan.stack_frames = std::min<uint8_t>(options.lock_stack_frames, TS_PY_MAX_FRAMES);
    if (options.locks == LockMode::kAll) {
      plan.stack_frames_acquire = std::min<uint8_t>(options.acquire_stack_frames, TS_PY_MAX_FRAMES);
    }
  } else {
    plan.stacks_unavailable = support.status().message();
  }
  for (auto [name, out] : {std::make_pair("_Py_TrueStruct", &plan.py_true),
                           std::make_pair("_Py_FalseStruct", &plan.py_false)}) {
    if (auto sym = t.interpreter_elf->FindSymbol(name)) {
      *out = sym->value + t.info.interpreter.load_bias;
    }
  }

  // The order reports list probes in.
  PlanThreadProbes(p, &plan);
  PlanSemaphoreProbes(p, options.locks, &plan);
  PlanJoinProbes(p, &plan);
  PlanLockProbes(p, options.locks, &plan);
  PlanGilProbes(p, options.gil, options.gil_mode, &plan);
  // 2.7's GIL probes are its lock functions' (no stacks there: no frame layout either).
  if (plan.stacks && options.gil && plan.gil_lock_addr == 0) {
    plan.gil_stack_frames = std::min<uint8_t>(options.gil_stack_frames, TS_PY_MAX_FRAMES);
    plan.gil_stack_threshold_ns = options.gil_stack_threshold_ns;
  }
  return plan;
}

}  // namespace threadscope::loader
