// How much of a target is traced, as the overhead budget decides (issue 15, item 2).
//
// This is the hook: every target reports a stage (Target.budget_stage, the
// threadscope_budget_stage series, `threadscope status`), and today every target is traced in
// full. The budget's controller will estimate each target's tracing cost as it goes and call
// Session::SetBudgetStage to step down (and back up) through the stages it adds here, each
// one documented in docs/DESIGN.md with what it stops knowing exactly; the metrics and the
// dashboard already show whatever name this returns.
#pragma once

#include <cstdint>

namespace threadscope::engine {

enum class BudgetStage : uint8_t {
  kFull,  // every probe the options asked for: all figures exact
};

inline const char* BudgetStageName(BudgetStage stage) {
  switch (stage) {
    case BudgetStage::kFull: return "full";
  }
  return "full";
}

}  // namespace threadscope::engine
