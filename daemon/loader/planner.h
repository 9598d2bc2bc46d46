// The per-feature probe planners and what they share: turning names and addresses of one
// interpreter into probe sites. Internal to daemon/loader; PlanProbes (probe_plan.h) runs them
// in the order reports list probes.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/loader/probe_plan.h"
#include "daemon/target/code_map.h"
#include "daemon/target/cpython.h"

namespace threadscope::loader {

// A range of CPython versions, both ends included; per-version rules are rows keyed by one.
struct Versions {
  int from_major = 2, from_minor = 0;
  int to_major = 99, to_minor = 99;
  bool Contains(const target::PythonVersion& v) const {
    return v.AtLeast(from_major, from_minor) &&
           (v.major < to_major || (v.major == to_major && v.minor <= to_minor));
  }
};

std::string Hex(uint64_t v);

class PlanContext {
 public:
  PlanContext(const target::InspectedProcess& t, const target::Disassembler& dis);

  const target::ElfFile& py() const { return *t_.interpreter_elf; }
  const target::PythonVersion& version() const { return t_.info.version; }
  const target::InspectedProcess& target() const { return t_; }
  const target::Disassembler& dis() const { return dis_; }
  const target::CodeMap& code() const { return code_; }

  // A site at vaddr in `elf` (the interpreter or libc): its file offset and first instruction.
  std::optional<ProbeSite> Site(const target::ElfFile& elf, const target::BinaryRef& bin,
                                uint64_t vaddr, std::string location,
                                std::string resolved_by) const;
  // A site in the interpreter.
  std::optional<ProbeSite> PySite(uint64_t vaddr, std::string location,
                                  std::string resolved_by) const;
  // A function's entry in the interpreter. CET builds (Debian's 3.13+) start every function
  // with endbr64, which the kernel single-steps: the probe goes on the next instruction when
  // that one is emulated (a push) and no branch inside the function comes back to it. The
  // registers, and the return address a uretprobe needs, are the entry's there.
  std::optional<ProbeSite> EntrySite(uint64_t vaddr, const std::string& name,
                                     std::string resolved_by) const;
  // "name+0x73" for an address in the function at `entry` (known to the caller as `name`),
  // "name.cold+0x1a" in one of its fragments.
  std::string Where(uint64_t entry, const std::string& name, uint64_t vaddr) const;
  // What to call the function at `entry`: its symbol, else "fn_0x...", with the PyMethodDef
  // name when a method table points at it ("fn_0x661d90[stat]").
  std::string FunctionName(uint64_t entry) const;
  // A function by symbol name, in the interpreter.
  std::optional<ProbeSite> Function(const std::string& name) const;
  // A libc function by name (default symbol version).
  std::optional<ProbeSite> LibcFunction(const std::string& name) const;
  // A static method of the _thread module through its PyMethodDef table.
  std::optional<uint64_t> ThreadModuleMethod(const std::string& name) const;
  // A method of the _thread.lock or _thread.RLock type, and that type's tp_new.
  std::optional<uint64_t> TypeMethod(bool rlock, const std::string& name) const;
  std::optional<uint64_t> TypeNew(bool rlock) const;

 private:
  static std::vector<std::string_view> TypeSiblings(bool rlock);

  const target::InspectedProcess& t_;
  const target::Disassembler& dis_;
  target::CodeMap code_;
  mutable std::optional<std::vector<target::MethodTable>> tables_;
};

// Thread start, the kernel's tracepoints, the child's bootstrap and the end of its callable.
void PlanThreadProbes(const PlanContext& p, ProbePlan* plan);
// Semaphore waits and frees: joins on 3.4-3.12 (the sentinel lock) and lock contention on any
// 3.x, planned once for both.
void PlanSemaphoreProbes(const PlanContext& p, LockMode locks, ProbePlan* plan);
// Joins and detaches (after the semaphore probes, whose sites 3.4-3.12 joins use).
void PlanJoinProbes(const PlanContext& p, ProbePlan* plan);
// Lock creation, wakers and (--locks all) every acquire and release.
void PlanLockProbes(const PlanContext& p, LockMode locks, ProbePlan* plan);
// take_gil, every drop_gil copy, forced switches (GilMode::kFull); take_gil's condition waits
// (GilMode::kWaits).
void PlanGilProbes(const PlanContext& p, bool enabled, GilMode mode, ProbePlan* plan);

}  // namespace threadscope::loader
