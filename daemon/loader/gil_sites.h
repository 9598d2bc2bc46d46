// Where a build takes and releases its GIL, found from its machine code alone (the rules are
// in gil_sites.cc's header). Internal to daemon/loader: plan_gil.cc turns the sites into probes.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/loader/planner.h"

namespace threadscope::loader {

struct GilRelease {
  uint64_t call = 0;
  uint64_t owner = 0;
  bool out_of_line = false;
  bool forced = false;
};

struct GilSites {
  std::vector<uint64_t> takes;
  std::string take_how;
  std::vector<GilRelease> releases;
  std::set<uint64_t> out_of_line;   // drop functions (entries) reached from the GIL's API
  std::set<uint64_t> final_release; // ... of which only take_gil calls (no switch wait)
  std::vector<uint64_t> forced_calls;
  std::optional<uint64_t> handler;
  int debug_agree = -1, debug_disagree = 0;
  std::string forced_missing;       // why no forced site, when none
  bool complete = true;
  std::vector<std::string> notes;
};

// take_gil's condition wait (--gil waits): the call, and the instruction after it, where the
// wait has returned with gil->mutex held.
struct GilWait {
  uint64_t call = 0;
  uint64_t after = 0;
  // `after` and the straight-line instructions that follow it up to the first branch (which
  // they include), none of them a branch target: where the probe may sit instead when `after`
  // would be single-stepped (the wait returned: still under gil->mutex, nothing written yet).
  std::vector<uint64_t> after_candidates;
  uint64_t owner = 0;
  bool after_is_branch_target = false;  // other code reaches `after` too (costs, still exact)
};

// A function of the interpreter by its .symtab/.dynsym name: its entry, when it has one.
std::optional<uint64_t> FunctionEntry(const PlanContext& p, const char* name);

// take_gil and its clones (stops there when there is none), every drop_gil copy's release
// (stops there when there is none), the switch code's forced drops, and (3.13+) the releases
// checked against _PyRuntime.debug_offsets.
GilSites FindGilSites(const PlanContext& p);

// take_gil (FindGilSites's takes only) and its calls to pthread_cond_timedwait.
GilSites FindGilTakes(const PlanContext& p);
std::vector<GilWait> FindGilWaits(const PlanContext& p, const GilSites& f);

}  // namespace threadscope::loader
