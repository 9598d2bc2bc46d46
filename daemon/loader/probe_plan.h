// Which BPF program goes where, for one interpreter.
//
// The plan is computed from the interpreter's ELF (and libc's) before anything is loaded, so
// it is pure and testable, and it is what tools/probe_table prints. Every probe the options ask
// for appears in the plan: placed at one or more sites, or marked unavailable with the reason.
// Nothing is silently missing. What each probe means lives in the catalogue
// (probe_catalog.h); the per-feature planners (planner.h) decide where it goes on a build; what
// the model can know follows from the plan and what attached (capabilities.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/loader/probe_catalog.h"
#include "daemon/target/disasm.h"
#include "daemon/target/py_layout.h"
#include "daemon/target/python_process.h"
#include "probes/threadscope_events.h"
#include "settings/trace_settings.h"

namespace threadscope::loader {

struct ProbeSite {
  std::string binary;       // path as the target sees it
  std::string host_path;    // path this process attaches through
  uint64_t vaddr = 0;
  uint64_t file_offset = 0;
  std::string location;     // "thread_run", "t_bootstrap+0xd2 (call PyThread_exit_thread)"
  std::string resolved_by;  // ".symtab", ".dynsym", "PyMethodDef _thread.start_new_thread"...
  std::string instruction;  // first instruction at the site
  target::UprobeSiteKind site_kind = target::UprobeSiteKind::kSingleStepped;

  std::string Describe() const;
};

struct PlannedProbe {
  explicit PlannedProbe(ProbeId probe_id);  // kind, program, feeds and purpose from the catalogue

  ProbeId id;
  BpfProgram program;    // the catalogue's, or its alternate on builds that need it
  ProbeKind kind;
  CapabilitySet feeds;   // what it feeds on this build
  uint64_t cookie = 0;
  std::string purpose;   // one line for users
  std::vector<ProbeSite> sites;
  std::string unavailable;  // non-empty: not placed on this build, and why

  const ProbeSpec& spec() const { return Spec(id); }
  std::string_view name() const { return spec().name; }
  bool required() const { return spec().required; }
  std::string_view tracepoint() const { return spec().tracepoint; }
};

// How much of the lock machinery to trace: the settings' (settings/trace_settings.h).
using settings::LockMode;
using settings::LockModeName;
static_assert(settings::kMaxStackFrames == TS_PY_MAX_FRAMES,
              "settings' stack depth and the record ABI's must agree");
using settings::GilMode;
using settings::GilModeName;
using settings::ParseGilMode;

// What the GIL probes on this build can see (shown on the target, saved in recordings).
struct GilCoverage {
  bool traced = false;
  std::string unavailable;  // why not traced, when not
  GilMode mode = GilMode::kFull;  // what the probes placed trace (waits: no holds, no drops)
  size_t take_functions = 0;
  size_t drop_functions = 0;     // out-of-line drop_gil copies (and the final-release clone)
  size_t inlined_drops = 0;      // release sites of drop_gil copies inlined into other functions
  bool drops_complete = false;   // every drop site is known to be probed
  bool forced_known = false;     // forced drops are told from voluntary ones
  std::string notes;             // what is partial, and why
  // 3.13+: drop copies whose `locked = 0` was found at the offset _PyRuntime.debug_offsets
  // gives (agree) or elsewhere (disagree); -1 when there was nothing to check against.
  int debug_offsets_agree = -1;
  int debug_offsets_disagree = 0;
};

struct ProbePlan {
  std::vector<PlannedProbe> probes;
  LockMode locks = LockMode::kContended;
  uint32_t lockobject_lock_offset = 16;
  // Report every semaphore wait, not only join sentinels (any lock tracing).
  bool trace_all_sems = false;
  // Runtime addresses of Py_True / Py_False (acquire()'s results), 0 when unknown.
  uint64_t py_true = 0;
  uint64_t py_false = 0;
  // 2.7: runtime address of `interpreter_lock` (the GIL is a plain lock), 0 otherwise.
  uint64_t gil_lock_addr = 0;
  // --gil waits on 3.6: runtime address of the static `gil_locked` (3.7+: 0, the probes find
  // gil->locked from the `cond` their wait is passed).
  uint64_t gil_locked_addr = 0;
  // How lock objects look on this build (what the lock probes read):
  // which kinds hold a semaphore (bit 1 << enum ts_lock_kind; the others are PyMutexes),
  uint8_t sem_kinds = (1 << TS_LOCK_LOCK) | (1 << TS_LOCK_RLOCK);
  bool lock_pymutex = false;   // 3.13.1+: _thread.lock is a PyMutex
  bool rlock_pymutex = false;  // 3.14+: so is _thread.RLock
  // the object header (16 bytes; 32 free-threaded): where a lock's mutex, an object's type and
  // (free-threaded) its own ob_mutex are,
  bool free_threaded = false;
  uint32_t lock_mutex_off = 16;
  uint32_t ob_type_off = 8;
  uint32_t ob_mutex_off = 10;
  // an RLock's owner and recursion (rlock_owner/rlock_count up to 3.13, thread/level 3.14+),
  uint32_t rlock_owner_off = 24;
  uint32_t rlock_depth_off = 32;
  bool rlock_depth_is_level = false;
  // and how the daemon names the types records point at: PyType_Type's runtime address and
  // where a type object keeps tp_name (0: names come from lock records only).
  uint64_t type_type = 0;
  uint32_t tp_name_off = 24;
  // Python stacks: where frames live in this interpreter, or why stacks are off.
  std::optional<target::PyStackSupport> stacks;
  std::string stacks_unavailable;
  // Frames the BPF side records, derived from the settings and what this build allows: at lock
  // waits and creation, at every acquire (--locks=all), and at take_gil returns that waited at
  // least gil_stack_threshold_ns (not on 2.7, whose GIL probes are its lock functions').
  uint8_t stack_frames = 0;
  uint8_t stack_frames_acquire = 0;
  uint8_t gil_stack_frames = 0;
  uint64_t gil_stack_threshold_ns = settings::kDefaultGilStackThresholdNs;
  GilCoverage gil;

  // The planned probes with this id (most ids appear once; none when not planned).
  std::vector<const PlannedProbe*> Find(ProbeId id) const;
};

// Plans for what `settings` ask (locks, gil, the stack depths; the rest of the settings is not
// the plan's business).
ProbePlan PlanProbes(const target::InspectedProcess& target, const target::Disassembler& dis,
                     const settings::TraceSettings& settings = {});

// What attaching one planned probe gave; BpfTracer::Attach returns one per planned probe, in
// plan order.
struct ProbeAttachResult {
  ProbeId id = ProbeId::kThreadStart;
  bool attached = false;
  std::string reason;  // why not, or a summary of where
  size_t sites_attached = 0;
};

}  // namespace threadscope::loader
