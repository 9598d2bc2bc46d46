// Where the GIL is taken and released: take_gil's entry and return, every drop_gil copy's
// release point, and the switch code's forced drops. Found the same way with or without .symtab,
// from what every build has: the condition-variable calls the GIL makes and the exported
// PyEval_* entry points. (plan_gil.cc makes probes of them.)
//
// What the code looks like (Python/ceval_gil.c; struct _gil_runtime_state is {interval,
// last_holder, locked@16, switch_number, cond@32, mutex@80, switch_cond@120, switch_mutex@168}
// from 3.7 to 3.15, separate statics in 3.6):
//  - take_gil waits on `cond` with a timeout (pthread_cond_timedwait) and signals
//    `switch_cond`. No other CPython code waits on a condition variable with a timeout, so the
//    callers of pthread_cond_timedwait are take_gil and its clones. It is never inlined (it is
//    large and has many callers).
//  - drop_gil locks `mutex`, sets `locked = 0`, signals `cond`: the release point. Then, when a
//    drop was requested, it waits on `switch_cond` (pthread_cond_wait; nothing else calls it).
//    LTO inlines drop_gil (PyEval_SaveThread, posix.stat, FileIO...), so Debian's builds have
//    10-13 copies. Every call to pthread_cond_signal outside take_gil is a copy's release.
//  - The final release of an exiting thread goes through a clone without the switch wait
//    (3.14+), called from take_gil's cold path and _PyThreadState_DeleteCurrent.
//  - The eval loop's switch code drops on request: drop_gil from _PyEval_EvalFrameDefault
//    (<=3.11) or _Py_HandlePending (3.12); 3.13+ _Py_HandlePending calls _PyThreadState_Detach
//    under its test of the GIL-drop-request bit (bit 0 of tstate->eval_breaker).
#include "daemon/loader/gil_sites.h"

#include <algorithm>
#include <set>

#include "daemon/target/debug_offsets.h"

namespace threadscope::loader {

namespace {

// Where the eval loop acts on a switch request, and what it calls there to drop the GIL.
enum class ForcedCallee {
  kDropFunction,  // an out-of-line drop_gil
  kDetach,        // _PyThreadState_Detach (-> drop_gil)
};
struct ForcedRule {
  Versions versions;
  const char* handler;
  ForcedCallee callee;
  // drop_gil copies inlined into the handler are the forced drop (no other drop lives there
  // before 3.13; from 3.13 the handler also suspends for stop-the-world requests, whose drops
  // are not switches).
  bool inlined_copies_forced;
};
constexpr ForcedRule kForcedRules[] = {
    // eval_frame_handle_pending is inlined into the eval loop: drop_gil; take_gil.
    {{3, 0, 3, 11}, "_PyEval_EvalFrameDefault", ForcedCallee::kDropFunction, true},
    {{3, 12, 3, 12}, "_Py_HandlePending", ForcedCallee::kDropFunction, true},
    {{3, 13}, "_Py_HandlePending", ForcedCallee::kDetach, false},
};
// 3.13+: _PyThreadState_Detach by symbol, else what PyEval_ReleaseThread jumps to.
constexpr const char* kDetachSymbol = "_PyThreadState_Detach";

// struct _gil_runtime_state {[int enabled (free-threaded builds)], interval, last_holder,
// locked, switch_number, cond, ...} (3.7-3.15): `cond` is 16 bytes past `locked` (+32 on GIL
// builds, +40 on free-threaded ones), so a copy's release signals gil + locked + 16.
constexpr int64_t kGilCondAfterLocked = 16;

// (call, owner) of every call the interpreter makes to an imported function.
// A search cut short (a binary built to make it long) leaves the list partial: the GIL is then
// not traced rather than traced with drops missing (see the callers' `truncated`).
std::vector<std::pair<uint64_t, uint64_t>> ImportCalls(const PlanContext& p, const char* fn,
                                                       std::string* truncated = nullptr) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto found = target::FindImportCallSitesBounded(p.py(), p.dis(), fn);
  if (found.truncated && truncated && truncated->empty()) {
    *truncated = std::string(fn) + ": " + found.truncated_reason;
  }
  for (const auto& s : found.sites) {
    out.emplace_back(s.call, p.code().OwnerOf(s.call).value_or(s.function));
  }
  return out;
}

std::set<uint64_t> Owners(const std::vector<std::pair<uint64_t, uint64_t>>& calls) {
  std::set<uint64_t> out;
  for (const auto& c : calls) out.insert(c.second);
  return out;
}

// A function's entry and its compiler clones ("take_gil.constprop.0"); .cold parts are not
// entries.
std::vector<uint64_t> EntryAndClones(const PlanContext& p, const char* name) {
  std::vector<uint64_t> out;
  if (auto e = FunctionEntry(p, name)) out.push_back(*e);
  for (const auto& clone : p.py().FindClones(name)) {
    if (clone.name.find(".cold") == std::string::npos) out.push_back(clone.value);
  }
  return out;
}

// The functions the one at `entry` calls or tail-jumps to inside the interpreter (no PLT
// stubs, not its own code), each followed through up to three unconditional jumps (thunks,
// tail calls).
std::set<uint64_t> BranchTargets(const PlanContext& p, uint64_t entry) {
  std::set<uint64_t> out;
  for (const auto& c : p.code().CallsOf(entry)) {
    if (!p.py().IsText(c.target) || p.py().PltStubName(c.target) ||
        p.code().InFunction(entry, c.target)) {
      continue;
    }
    for (uint64_t t : p.code().JumpChain(c.target, 3)) out.insert(t);
  }
  return out;
}

void FindTakes(const PlanContext& p, GilSites* f) {
  std::set<uint64_t> by_wait = Owners(ImportCalls(p, "pthread_cond_timedwait"));
  std::vector<uint64_t> by_symbol = EntryAndClones(p, "take_gil");
  if (!by_symbol.empty()) {
    f->takes = by_symbol;
    f->take_how = p.py().has_symtab() ? ".symtab" : ".dynsym";
    for (uint64_t w : by_wait) {
      if (std::find(by_symbol.begin(), by_symbol.end(), w) == by_symbol.end()) {
        f->notes.push_back("pthread_cond_timedwait is also called from " + p.code().NameOf(w));
      }
    }
  } else if (!by_wait.empty()) {
    f->takes.assign(by_wait.begin(), by_wait.end());
    f->take_how = "caller of pthread_cond_timedwait (the GIL's timed wait)";
  }
  // PyEval_AcquireLock is `take_gil(tstate)` in every 3.x: a cross-check, and what finds
  // take_gil in a build whose condition variables are not the GIL's alone.
  std::set<uint64_t> acquire;
  if (auto e = FunctionEntry(p, "PyEval_AcquireLock")) acquire = BranchTargets(p, *e);
  if (f->takes.empty()) {
    std::set<uint64_t> thread;
    if (auto e = FunctionEntry(p, "PyEval_AcquireThread")) thread = BranchTargets(p, *e);
    std::vector<uint64_t> shared;
    for (uint64_t t : acquire) {
      if (thread.count(t)) shared.push_back(t);
    }
    if (shared.size() == 1) {
      f->takes = shared;
      f->take_how = "call target shared by PyEval_AcquireLock and PyEval_AcquireThread";
    }
    return;
  }
  bool confirmed = false;
  for (uint64_t t : f->takes) confirmed |= acquire.count(t) > 0;
  if (confirmed) {
    f->take_how += "; PyEval_AcquireLock branches to it";
  } else {
    f->notes.push_back("PyEval_AcquireLock does not branch to take_gil directly");
  }
}

bool IsTake(const PlanContext& p, const GilSites& f, uint64_t owner, uint64_t address) {
  for (uint64_t t : f.takes) {
    if (owner == t || p.code().InFunction(t, address)) return true;
  }
  return false;
}

void FindDrops(const PlanContext& p, GilSites* f) {
  std::string truncated;
  std::set<uint64_t> locks_mutex = Owners(ImportCalls(p, "pthread_mutex_lock", &truncated));
  auto signals = ImportCalls(p, "pthread_cond_signal", &truncated);
  auto waits = Owners(ImportCalls(p, "pthread_cond_wait", &truncated));
  if (!truncated.empty()) {
    // A partial list of drop sites would make holds overlap and drops go unmatched.
    f->complete = false;
    f->notes.push_back("the search for the GIL's drop sites stopped early (" + truncated + ")");
  }
  for (const auto& [call, owner] : signals) {
    if (IsTake(p, *f, owner, call)) continue;  // take_gil signals switch_cond
    if (!locks_mutex.count(owner)) {
      f->notes.push_back("pthread_cond_signal in " + p.code().Describe(call) +
                         " is not under a mutex: not a GIL release, left out");
      continue;
    }
    f->releases.push_back(GilRelease{call, owner});
  }
  // Every drop_gil copy waits on switch_cond when a drop was requested; each must have been
  // found releasing.
  std::set<uint64_t> releasing;
  for (const auto& r : f->releases) releasing.insert(r.owner);
  for (uint64_t copy : waits) {
    if (releasing.count(copy)) continue;
    f->complete = false;
    f->notes.push_back("drop_gil copy in " + p.FunctionName(copy) +
                       ": its release (pthread_cond_signal) was not found");
  }

  // Out-of-line copies: what the GIL's own entry points reach. PyEval_ReleaseLock is
  // drop_gil(tstate) (3.13.0 inlines it there: then the copy is PyEval_ReleaseLock's own);
  // PyEval_ReleaseThread reaches it through _PyThreadState_Detach (3.13+); take_gil calls the
  // final-release clone when a thread must exit.
  std::set<uint64_t> api;
  for (const char* fn : {"PyEval_ReleaseLock", "PyEval_ReleaseThread"}) {
    if (auto e = FunctionEntry(p, fn)) {
      auto t = BranchTargets(p, *e);
      api.insert(t.begin(), t.end());
    }
  }
  std::set<uint64_t> from_take;
  for (uint64_t t : f->takes) {
    auto targets = BranchTargets(p, t);
    from_take.insert(targets.begin(), targets.end());
  }
  std::set<uint64_t> named;
  for (uint64_t e : EntryAndClones(p, "drop_gil")) named.insert(e);
  for (auto& r : f->releases) {
    r.out_of_line = named.count(r.owner) || api.count(r.owner) || from_take.count(r.owner);
    if (!r.out_of_line) continue;
    f->out_of_line.insert(r.owner);
    if (!named.count(r.owner) && !api.count(r.owner)) f->final_release.insert(r.owner);
  }
}

// True when the straight-line code leading to `call` is entered only when bit 0 of a word
// was set: `test x,0x1; jne <here>`, or `test x,0x1; je <elsewhere>` falling through to it.
// That bit is _PY_GIL_DROP_REQUEST_BIT of tstate->eval_breaker (3.13+).
bool GuardedByBit0(const PlanContext& p, uint64_t handler, uint64_t call) {
  auto is_bit0_test = [](const target::Instruction& in) {
    return in.mnemonic == "test" && in.immediate == 1;
  };
  auto parts = p.code().PartsOf(handler);
  uint64_t run_begin = call;
  for (const auto& part : parts) {
    if (!part.Contains(call)) continue;
    const auto& code = p.code().Code(part.begin);
    size_t k = 0;
    while (k < code.size() && code[k].address != call) ++k;
    if (k == code.size()) return false;
    size_t j = k;
    while (j > 0 && !(code[j - 1].is_jump || code[j - 1].is_cond_jump || code[j - 1].is_ret ||
                      code[j - 1].is_call)) {
      --j;
    }
    run_begin = code[j].address;
    if (j >= 2 && code[j - 1].is_cond_jump && is_bit0_test(code[j - 2]) &&
        (code[j - 1].mnemonic == "je" || code[j - 1].mnemonic == "jz")) {
      return true;
    }
  }
  for (const auto& part : parts) {
    const auto& code = p.code().Code(part.begin);
    for (size_t i = 1; i < code.size(); ++i) {
      const auto& in = code[i];
      if (in.is_cond_jump && in.branch_target && *in.branch_target >= run_begin &&
          *in.branch_target <= call && (in.mnemonic == "jne" || in.mnemonic == "jnz") &&
          is_bit0_test(code[i - 1])) {
        return true;
      }
    }
  }
  return false;
}

const ForcedRule* ForcedRuleFor(const target::PythonVersion& v) {
  for (const auto& r : kForcedRules) {
    if (r.versions.Contains(v)) return &r;
  }
  return nullptr;
}

void FindForced(const PlanContext& p, GilSites* f) {
  const ForcedRule* rule = ForcedRuleFor(p.version());
  if (!rule) {
    f->forced_missing = "no forced-switch rule for this version";
    return;
  }
  f->handler = FunctionEntry(p, rule->handler);
  if (!f->handler && p.version().Is(3, 12)) {
    // 3.12's _Py_HandlePending is static: the callee of the eval loop that both drops and
    // takes the GIL.
    std::set<uint64_t> candidates;
    if (auto eval = FunctionEntry(p, "_PyEval_EvalFrameDefault")) {
      for (uint64_t t : BranchTargets(p, *eval)) {
        auto targets = BranchTargets(p, t);
        bool takes = false, drops = false;
        for (uint64_t take : f->takes) takes |= targets.count(take) > 0;
        for (uint64_t drop : f->out_of_line) drops |= targets.count(drop) > 0;
        if (takes && drops) candidates.insert(t);
      }
    }
    if (candidates.size() == 1) f->handler = *candidates.begin();
  }
  if (!f->handler) {
    f->forced_missing = std::string(rule->handler) + " not found";
    return;
  }
  std::set<uint64_t> callees;
  for (const auto& r : f->releases) {
    if (r.out_of_line) callees.insert(r.owner);
  }
  if (rule->callee == ForcedCallee::kDetach) {
    if (auto d = FunctionEntry(p, kDetachSymbol)) callees.insert(*d);
    if (auto e = FunctionEntry(p, "PyEval_ReleaseThread")) {
      auto chain = p.code().JumpChain(*e, 3);
      callees.insert(chain.begin() + 1, chain.end());
    }
  }
  std::vector<uint64_t> candidates;
  for (const auto& c : p.code().CallsOf(*f->handler)) {
    if (!c.is_jump && callees.count(c.target)) candidates.push_back(c.address);
  }
  if (rule->callee == ForcedCallee::kDetach && candidates.size() > 1) {
    std::vector<uint64_t> guarded;
    for (uint64_t c : candidates) {
      if (GuardedByBit0(p, *f->handler, c)) guarded.push_back(c);
    }
    if (!guarded.empty()) {
      candidates = guarded;
    } else {
      f->notes.push_back("several calls into the drop path in " + std::string(rule->handler) +
                         ", none under the GIL-drop-request test: all counted as forced");
    }
  }
  f->forced_calls = candidates;
  for (auto& r : f->releases) {
    if (!r.out_of_line && rule->inlined_copies_forced && p.code().InFunction(*f->handler, r.call)) {
      r.forced = true;
    }
  }
  if (f->forced_calls.empty()) {
    bool inlined_forced = false;
    for (const auto& r : f->releases) inlined_forced |= r.forced;
    if (!inlined_forced) {
      f->forced_missing = "no call from " + std::string(rule->handler) +
                          " into the drop path found: forced and voluntary drops are not told "
                          "apart";
    }
  }
}

// 3.13+: the copies store `locked = 0` where _PyRuntime.debug_offsets says `locked` is, in the
// GIL whose `cond` they signal.
void CrossCheckDebugOffsets(const PlanContext& p, GilSites* f) {
  auto dbg = target::ReadGilDebugOffsets(p.py());
  if (!dbg.ok()) {
    if (p.version().AtLeast(3, 13)) {
      f->notes.push_back("no debug_offsets cross-check: " + dbg.status().message());
    }
    return;
  }
  const int rdi = target::RegisterNumber(target::ArgRegister::kRdi);
  size_t agree = 0, disagree = 0;
  for (const auto& r : f->releases) {
    auto range = p.code().RangeAround(r.call);
    if (!range) continue;
    const auto& code = p.code().Code(range->begin);
    size_t k = 0;
    while (k < code.size() && code[k].address != r.call) ++k;
    if (k == code.size()) continue;
    // The GIL the copy signals: `lea rdi,[gil + 32]`.
    std::optional<target::Instruction::Memory> cond;
    size_t from = k > 24 ? k - 24 : 0;
    for (size_t j = k; j-- > from;) {
      if (code[j].dest_reg != rdi) continue;
      if (code[j].mnemonic == "lea" && code[j].memory) cond = code[j].memory;
      break;
    }
    if (!cond) continue;
    int64_t gil = cond->disp - static_cast<int64_t>(dbg->LockedInGil()) - kGilCondAfterLocked;
    // Its store of 0 to a 4-byte field of that GIL, or through a register pointing into it.
    for (size_t j = k; j-- > from;) {
      const auto& in = code[j];
      if (in.mnemonic != "mov" || !in.memory || !in.memory->written || in.immediate != 0 ||
          in.dest_size != 4) {
        continue;
      }
      std::optional<int64_t> field;
      if (in.memory->base == cond->base) {
        field = in.memory->disp - gil;
      } else {
        for (size_t i = j; i-- > from;) {
          if (code[i].dest_reg != in.memory->base) continue;
          if (code[i].mnemonic == "lea" && code[i].memory && code[i].memory->base == cond->base) {
            field = code[i].memory->disp + in.memory->disp - gil;
          }
          break;
        }
      }
      if (!field) continue;
      (static_cast<uint64_t>(*field) == dbg->LockedInGil() ? agree : disagree)++;
      break;
    }
  }
  f->debug_agree = static_cast<int>(agree);
  f->debug_disagree = static_cast<int>(disagree);
  std::string what = std::to_string(agree) + " of " + std::to_string(f->releases.size()) +
                     " drops clear gil->locked at +" + std::to_string(dbg->LockedInGil()) +
                     " as _PyRuntime.debug_offsets says";
  if (disagree) {
    f->complete = false;
    what += ", " + std::to_string(disagree) + " at another offset";
  }
  f->notes.push_back(what);
}

}  // namespace

std::optional<uint64_t> FunctionEntry(const PlanContext& p, const char* name) {
  auto sym = p.py().FindSymbol(name);
  if (!sym || !sym->is_function) return std::nullopt;
  return sym->value;
}

GilSites FindGilTakes(const PlanContext& p) {
  GilSites f;
  FindTakes(p, &f);
  return f;
}

std::vector<GilWait> FindGilWaits(const PlanContext& p, const GilSites& f) {
  std::vector<GilWait> out;
  for (const auto& [call, owner] : ImportCalls(p, "pthread_cond_timedwait")) {
    if (!IsTake(p, f, owner, call)) continue;
    auto range = p.code().RangeAround(call);
    if (!range) continue;
    const auto& code = p.code().Code(range->begin);
    GilWait w;
    w.call = call;
    w.owner = owner;
    size_t k = 0;
    while (k < code.size() && code[k].address != call) ++k;
    if (k + 1 >= code.size()) continue;
    w.after = code[k + 1].address;
    std::set<uint64_t> targets;
    for (const auto& part : p.code().PartsOf(owner)) {
      for (const auto& in : p.code().Code(part.begin)) {
        if (in.branch_target) targets.insert(*in.branch_target);
      }
    }
    w.after_is_branch_target = targets.count(w.after) > 0;
    for (size_t j = k + 1; j < code.size() && j < k + 6; ++j) {
      const auto& in = code[j];
      if (j > k + 1 && targets.count(in.address)) break;
      if (in.is_call || in.is_ret || (in.memory && in.memory->written)) break;
      w.after_candidates.push_back(in.address);
      if (in.is_jump || in.is_cond_jump) break;
    }
    out.push_back(w);
  }
  return out;
}

GilSites FindGilSites(const PlanContext& p) {
  GilSites f;
  FindTakes(p, &f);
  if (f.takes.empty()) return f;
  FindDrops(p, &f);
  if (f.releases.empty()) return f;
  FindForced(p, &f);
  CrossCheckDebugOffsets(p, &f);
  return f;
}

}  // namespace threadscope::loader
