// The overhead budget's per-hit costs, measured on this machine when threadscoped starts:
// uprobes on tiny functions of the daemon's own process, called with and without the probe.
// Bounded (well under a second) and never fatal: any failure gives the defaults and says why.
#pragma once

#include <string>

#include "daemon/budget/budget_controller.h"
#include "daemon/common/status.h"

namespace threadscope::loader {

struct CalibrationFigures {
  double emulated_ns = 0;     // a uprobe on an emulated instruction (push %rbp)
  double single_step_ns = 0;  // a uprobe on a single-stepped one (mov %rdi,%rax)
  double uretprobe_ns = 0;    // a uretprobe (entry trap on push %rbp, and the return)
  double tracepoint_ns = 0;   // a syscall's extra cost with a sys_enter raw tracepoint
  double elapsed_ms = 0;      // the whole calibration, load to detach
};

// Measures (the raw tracepoint: a getppid() with and without a sys_enter program). Fails
// (PermissionDenied without root, FailedPrecondition on a figure out of its sane range, ...) rather
// than guessing.
StatusOr<CalibrationFigures> MeasureProbeCosts();

// The budget's calibration: measured figures, or the defaults with `why_not` in the source.
budget::Calibration CalibrationFrom(const StatusOr<CalibrationFigures>& figures);

// MeasureProbeCosts, logged, as a Calibration; what threadscoped runs at start-up.
budget::Calibration CalibrateAtStartup();

}  // namespace threadscope::loader
