// Where CPython 3.13+ blocks and wakes threads on its own mutexes (PyMutex, the parking lot),
// and where its lock objects can be probed, found from the binary alone: with or without
// symbols, through PLT stubs (shared libpython) or direct calls (Debian's static, LTO+PGO
// interpreters), whatever LTO inlined and PGO copied. Pure functions of an ElfFile; the
// planner (daemon/loader/plan_locks.cc) turns their results into probes.
//
// Why these sites: in Debian's 3.13.1+ builds the lock code (`_PyMutex_LockTimed`, the park
// and unpark code) is inlined into its callers or copied into hidden clones, and the exported
// functions see a fraction of the traffic. Every wait still ends in the exported, never
// inlined `_PySemaphore_Wait(sema, timeout[, detach])` and every wake in
// `_PySemaphore_Wakeup(sema)`; their *call sites* are few (3-6 each), their call instructions
// are emulated by the kernel (a probe costs no single-step), and the waiter's `struct
// wait_entry {park_arg; addr; sema; ...}` is at `sema` on its stack.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/target/code_map.h"
#include "daemon/target/cpython.h"
#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"

namespace threadscope::target {

// A call of _PySemaphore_Wait made by park code.
struct ParkCallSite {
  uint64_t call = 0;                    // the call instruction
  std::optional<uint64_t> return_site;  // first emulated instruction after it with rax intact
  uint64_t function = 0;                // entry of the function it belongs to
  // Its timeout is the constant -1: `_PyParkingLot_Park`'s re-wait after a timeout that raced
  // with an unpark (the unparker had dequeued it). It continues the same park.
  bool retry = false;
};

struct ParkingLotSites {
  std::vector<ParkCallSite> parks;
  std::vector<uint64_t> unparks;  // calls (or tail jumps) of _PySemaphore_Wakeup
  // The parking lot's own bucket lock (`_PyRawMutex_LockSlow` / `_PyRawMutex_UnlockSlow`)
  // waits and wakes through the same functions with another wait entry (`{next; sema}`): its
  // sites are left out, and counted here.
  std::vector<uint64_t> raw_functions;
  size_t raw_waits = 0;
  size_t raw_wakes = 0;
};

// NotFound on builds without a parking lot (before 3.13).
StatusOr<ParkingLotSites> FindParkingLotSites(const ElfFile& elf, const Disassembler& dis,
                                              const CodeMap& code);

// A heap type's PyType_Spec {const char *name; int basicsize; int itemsize; unsigned flags;
// PyType_Slot *slots;}, found as the data word that points at its slot array.
struct TypeSpec {
  uint64_t address = 0;
  std::string name;  // "_thread.lock"
  int basicsize = 0;
  int itemsize = 0;
  uint32_t flags = 0;
};
// The spec of the type whose tp_methods is `methods_table`.
std::optional<TypeSpec> FindTypeSpec(const ElfFile& elf, uint64_t methods_table);
// Another slot of that type (Py_tp_dealloc 52, Py_tp_new 65, ...), through its slot array.
std::optional<uint64_t> FindTypeSlot(const ElfFile& elf, uint64_t methods_table, int slot);
inline constexpr int kPyTpDealloc = 52;
inline constexpr int kPyTpNew = 65;

// The _thread module's lock types as a binary defines them.
struct LockType {
  const MethodTable* methods = nullptr;
  std::optional<TypeSpec> spec;
  std::optional<uint64_t> tp_new;
  std::optional<uint64_t> tp_dealloc;
  // The C function behind a method name, if the type has it.
  std::optional<uint64_t> Method(std::string_view name) const;
};
LockType FindLockType(const ElfFile& elf, const std::vector<MethodTable>& tables, bool rlock);

// Whether a lock object holds a PyMutex (3.13.1+ Lock, 3.14+ RLock) or a semaphore pointer,
// decided by the type's size where its spec was found (default builds: lock 24 / 40, RLock
// 40 / 48; free-threaded: 40 / 56 and 56 / 64), else by the version.
bool LockIsPyMutex(const LockType& type, bool rlock, const PythonVersion& version,
                   bool free_threaded);

// Where a function can be probed for its first argument (`self`) without a single-step: the
// first instruction of its straight-line start that the kernel emulates, and the register
// holding self there, as `reg - adjust`. None when the start has no such instruction before a
// branch, self does not survive to it, or code jumps back into the start.
struct SelfSite {
  uint64_t vaddr = 0;
  int gpr = 7;  // hardware number (GprIndex): 7 = rdi
  uint32_t adjust = 0;
};
std::optional<SelfSite> FindSelfSite(const ElfFile& elf, const CodeMap& code, uint64_t entry);

// A PGO-promoted copy of a method (indirect-call promotion): generic method-call code that
// compares the callee with the method's address and, when equal, runs an inlined copy of it.
// Calls that take that path never enter the method.
struct PromotedCopy {
  uint64_t guard = 0;       // the `cmp reg, <method>`
  uint64_t copy_start = 0;  // where the copy begins
  uint64_t function = 0;    // the function holding it
  std::optional<SelfSite> entry;        // a probe site with the lock object, if found
  std::optional<uint64_t> result_site;  // where Py_True/Py_False results meet (acquire)
  int result_gpr = -1;
  std::string problem;  // what could not be established, if anything
};
// `mutex_off`: where the lock's mutex is (the copy's first access to [self + mutex_off] names
// the register holding self). `py_true`/`py_false`: their link-time addresses, to find the
// result of an acquire copy (0: not looked for). Non-PIE code only (`cmp reg, imm32`).
std::vector<PromotedCopy> FindPromotedCopies(const ElfFile& elf, const CodeMap& code,
                                             uint64_t method, uint32_t mutex_off,
                                             uint64_t py_true, uint64_t py_false);

// Free-threaded builds: `_PyCriticalSection_BeginSlow` (one object) and
// `_PyCriticalSection2_BeginSlow` (two), entered when a critical section's inline lock of an
// object's ob_mutex fails. 3.14 passes the mutex in rsi (m1, m2 in rsi, rdx); 3.15 added the
// thread state first (rdx; rdx, rcx).
struct CriticalSectionSite {
  uint64_t entry = 0;
  std::string name;
  int mutex_gpr = -1;
  int mutex2_gpr = -1;  // -1 for the one-object form
  // The register was seen reaching PyMutex_Lock's argument in the code.
  bool verified = false;
};
std::vector<CriticalSectionSite> FindCriticalSectionSites(const ElfFile& elf, const CodeMap& code,
                                                          const PythonVersion& version);

}  // namespace threadscope::target
