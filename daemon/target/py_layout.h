// Where CPython 3.6-3.15 keep threads, frames and code objects: what threadscope needs to say
// "app.py:42 in Cache.get" from outside the process.
//
// The offsets were measured on the builds the machine image carries (pyenv 3.6.15 ... 3.13.0
// and Debian's 3.11.2), checked against each build's DWARF and against live stacks the
// interpreters printed for themselves; docs/PROBES.md explains how to re-derive them. They are
// stable within a minor version for default (GIL, non-debug) x86-64 builds. 3.13+ publish the
// thread/frame/code part in _PyRuntime.debug_offsets, which is read and preferred (3.14 and 3.15
// require it: there is no built-in table for them beyond the frame owners).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "daemon/common/status.h"
#include "daemon/target/cpython.h"
#include "daemon/target/elf_file.h"
#include "daemon/target/python_process.h"
#include "probes/threadscope_events.h"

namespace threadscope::target {

enum class LineTableFormat {
  kLnotab36,       // 3.6-3.9 co_lnotab: (byte delta, signed line delta) pairs, f_lasti in bytes
  kLinetable310,   // 3.10 co_linetable: (byte length, signed line delta, -128 = none)
  kLocations311,   // 3.11+ co_linetable: PEP 657 location entries, in 2-byte code units
};

struct PyLayout {
  // Runtime -> interpreters -> threads.
  std::string head_symbol;       // "_PyRuntime", or "PyInterpreterState_Head" (3.6: decoded)
  uint32_t runtime_interp_head = 0;
  uint32_t interp_next = 0;
  uint32_t interp_tstate_head = 0;
  uint32_t tstate_next = 0;
  uint32_t tstate_thread_id = 0;
  // Thread -> frames.
  uint32_t tstate_frame = 0;     // innermost frame, or the _PyCFrame * when cframe_current >= 0
  int32_t cframe_current = -1;
  uint32_t frame_previous = 0;
  uint32_t frame_code = 0;
  uint32_t frame_instr = 0;      // int f_lasti (3.6-3.10) or instruction pointer (3.11+)
  bool instr_is_pointer = false;
  bool lasti_in_code_units = false;  // 3.10's f_lasti counts 2-byte units
  int32_t frame_owner = -1;
  int32_t owner_generator = -1;
  int32_t owner_cstack = -1;     // 3.12+
  uint8_t code_tag_mask = 0;     // 3.14+: f_executable is a tagged _PyStackRef
  // Code objects.
  uint32_t code_filename = 0;
  uint32_t code_name = 0;
  int32_t code_qualname = -1;    // 3.11+
  uint32_t code_firstlineno = 0;
  uint32_t code_linetable = 0;   // co_lnotab or co_linetable (a bytes object)
  int32_t code_adaptive = -1;    // 3.11+: co_code_adaptive, the start of the instructions
  int32_t code_code = -1;        // 3.6-3.10: co_code, a bytes object
  int32_t code_firsttraceable = -1;  // 3.11+: _co_firsttraceable
  LineTableFormat line_table = LineTableFormat::kLnotab36;
  // 3.14+ free-threaded: each thread runs its own copy of a code object's bytecode; frames
  // point into it. co_tlbc is the array of copies ({Py_ssize_t size; char *entries[]}).
  int32_t code_tlbc = -1;
  // Objects. A free-threaded build's object header is 32 bytes, not 16: everything after it
  // moves by 16.
  bool free_threaded = false;
  uint32_t ob_type = 8;          // PyObject.ob_type
  uint32_t var_size = 16;        // PyVarObject.ob_size
  uint32_t bytes_size = 16;      // PyBytesObject: ob_size, then (after ob_shash) ob_sval
  uint32_t bytes_data = 32;
  uint32_t unicode_length = 16;  // PyASCIIObject.length and .state
  uint32_t unicode_state = 32;
  // Where `kind` starts in the state bits (then compact, ascii): after a 2-bit `interned`, or
  // after a whole byte of it in free-threaded builds (Include/cpython/unicodeobject.h 3.14).
  uint32_t unicode_kind_shift = 2;
  uint32_t ascii_data = 48;      // sizeof(PyASCIIObject): compact ASCII str data
  uint32_t compact_data = 72;    // sizeof(PyCompactUnicodeObject): other compact str data
  std::string source;            // how these were established, for reports
};

// The built-in layout for a minor version; nullopt when threadscope has none (2.7, 3.16+).
std::optional<PyLayout> BuiltinPyLayout(const PythonVersion& version);

// 2.7 and 3.6 keep the interpreter list head in a static; their exported accessor
// PyInterpreterState_Head is `mov interp_head(%rip), %rax; ret`: the static's address.
std::optional<uint64_t> InterpHeadFromAccessor(const ElfFile& elf);

// The layout of one running interpreter, with the runtime addresses the stack walk starts from.
struct PyStackSupport {
  PyLayout layout;
  ts_py_layout bpf{};          // what the BPF programs get
  uint64_t code_type = 0;      // runtime address of PyCode_Type (frames whose code is not one
                               // are skipped: 3.13's C entry frames hold None)
  uint64_t unicode_type = 0;   // PyUnicode_Type
  uint64_t bytes_type = 0;     // PyBytes_Type
  uint64_t none = 0;           // _Py_NoneStruct
};

// Errors: Unimplemented (no layout for this version), NotFound (the runtime symbols are missing),
// FailedPrecondition (3.13 debug_offsets disagree with what the binary says about itself).
StatusOr<PyStackSupport> ResolvePyStackSupport(const InspectedProcess& target);

}  // namespace threadscope::target
