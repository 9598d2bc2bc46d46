// Where CPython 2.7 and 3.6-3.15 keep what `threadscope dump` reads: threads, frames, code
// objects, the GIL, lock objects, and the few object kinds needed to read them (str, bytes, int,
// tuple, dict, bound methods, instance attributes).
//
// The offsets come from the DWARF of the pyenv builds (2.7.18, 3.6.15 ... 3.13.0) and of the
// local 3.14.7 / 3.14.7t builds (`gdb -batch -ex 'ptype /o PyCodeObject' libpython...`), from
// _PyRuntime.debug_offsets where the interpreter publishes them (3.13+: preferred, and the only
// source for Debian's stripped 3.13/3.14/3.15), and from the frame layouts the BPF stack walker
// already uses (daemon/target/py_layout.cc). tests/unit/dump_layout_test.cc reads live objects
// of every interpreter of the matrix with them and compares with what the interpreter says.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "daemon/common/status.h"
#include "daemon/target/cpython.h"
#include "daemon/target/elf_file.h"

namespace threadscope::dump {

enum class LineFormat { kLnotab27, kLnotab36, kLinetable310, kLocations311 };
enum class DictFormat { k27, k36, k311 };
// How an instance's attributes are found when the type has no tp_dictoffset of its own.
enum class ManagedDict {
  kNone,         // <= 3.10: tp_dictoffset
  kValues311,    // 3.11: dict at obj-24, values array at obj-32
  kTagged312,    // 3.12: obj-24 holds a dict, or values|1
  kInline313,    // 3.13+: dict at obj+managed_dict_offset, else values inline at tp_basicsize
};
enum class GilKind {
  k27,          // the plain lock `interpreter_lock`; holder = _PyThreadState_Current
  kStatics36,   // 3.6: gil_locked, gil_last_holder, gil_cond, gil_mutex statics
  kRuntime,     // 3.7-3.11: _PyRuntime.ceval.gil
  kInterpPtr,   // 3.12+: interp->ceval.gil
};

struct DumpLayout {
  int major = 3;
  int minor = 0;
  bool free_threaded = false;
  std::string source;

  // Objects.
  uint32_t ob_type = 8;
  uint32_t ob_size = 16;
  uint32_t tp_name = 24;
  uint32_t tp_basicsize = 32;
  uint32_t tp_flags = 168;
  uint32_t tp_base = 256;
  uint32_t tp_dictoffset = 288;
  int32_t ht_cached_keys = -1;
  uint32_t tuple_items = 24;
  bool py2_strings = false;        // 2.7: names are str (bytes) objects
  uint32_t str_length = 16;        // unicode length / 2.7 str size
  uint32_t str_state = 32;
  uint32_t str_kind_shift = 2;     // free-threaded: `interned` is a whole byte
  uint32_t str_ascii_data = 48;    // 2.7: ob_sval at 36
  uint32_t str_compact_data = 72;
  uint32_t bytes_data = 32;
  bool long_tagged = false;        // 3.12+: lv_tag instead of a signed ob_size
  uint32_t long_size = 16;
  uint32_t long_digits = 24;
  uint32_t float_value = 16;
  uint32_t cfunc_self = 24;        // PyCFunctionObject.m_self
  uint32_t method_func = 16;       // PyMethodObject.im_func
  uint32_t method_self = 24;
  uint32_t descr_name = 24;        // PyMethodDescrObject.d_name
  uint32_t weakref_object = 16;
  // Dicts and instance attributes.
  DictFormat dict_format = DictFormat::k36;
  uint32_t dict_keys = 32;   // 2.7: ma_mask at 32, ma_table at 40
  uint32_t dict_values = 40;
  uint32_t values_header = 0;  // 3.13+: PyDictValues has 8 bytes before values[]
  ManagedDict managed = ManagedDict::kNone;
  int32_t managed_dict_offset = -24;
  // Locks (_thread.lock / _thread.RLock).
  uint32_t lock_handle = 16;       // sem_t* (<=3.13) or the PyMutex byte (3.13.1+ Lock, 3.14+)
  int32_t lock_locked = -1;        // char `locked` (3.8-3.12 and 3.13.0's Lock)
  uint32_t rlock_owner = 24;       // pthread ident
  uint32_t rlock_count = 32;
  bool rlock_is_mutex = false;     // 3.14+: _PyRecursiveMutex {mutex, thread, level = count-1}
  // Runtime -> interpreters -> threads.
  std::string head_symbol = "_PyRuntime";  // or "PyInterpreterState_Head" (2.7, 3.6: decoded)
  uint32_t runtime_interp_head = 0;
  uint32_t interp_next = 0;
  uint32_t interp_tstate_head = 8;
  uint32_t tstate_next = 8;
  uint32_t tstate_frame = 24;
  int32_t cframe_current = -1;     // 3.11/3.12: tstate->cframe->current_frame
  uint32_t tstate_thread_id = 176;
  int32_t tstate_native_id = -1;   // 3.11+
  int32_t tstate_on_delete_data = -1;  // 3.4-3.12: the join sentinel's weakref
  int32_t tstate_status = -1;      // 3.13: _status, holds_gil is bit 5
  int32_t tstate_holds_gil = -1;   // 3.14+
  int32_t tstate_gil_requested = -1;  // 3.15
  // The GIL.
  GilKind gil = GilKind::kRuntime;
  uint32_t gil_offset = 0;         // from _PyRuntime (kRuntime) or the interpreter (kInterpPtr)
  uint32_t gil_last_holder = 8;
  uint32_t gil_locked = 16;
  uint32_t gil_size = 208;
  // Frames.
  bool frame_objects = true;       // <= 3.10: PyFrameObject; 3.11+: _PyInterpreterFrame
  uint32_t frame_back = 24;
  uint32_t frame_code = 32;
  uint32_t frame_globals = 48;
  uint32_t frame_valuestack = 64;  // <= 3.10
  uint32_t frame_lasti = 104;      // <= 3.10: int, bytes (3.10: code units)
  bool lasti_in_units = false;
  uint32_t frame_iblock = 112;
  uint32_t frame_blockstack = 120;
  uint32_t frame_localsplus = 360;
  uint32_t frame_instr = 56;       // 3.11+: prev_instr / instr_ptr
  int32_t frame_stacktop = -1;     // 3.11-3.13: int, slots from localsplus
  int32_t frame_stackpointer = -1; // 3.14+: pointer
  int32_t frame_owner = -1;
  bool stackrefs = false;          // 3.14+: tagged _PyStackRef slots
  // Code objects.
  uint32_t code_argcount = 16;
  int32_t code_nlocals = -1;       // <= 3.10
  uint32_t code_stacksize = 32;
  uint32_t code_flags = 36;
  int32_t code_code = -1;          // <= 3.10: co_code (bytes)
  uint32_t code_names = 64;
  int32_t code_varnames = -1;      // <= 3.10
  int32_t code_cellvars = -1;
  int32_t code_freevars = -1;
  int32_t code_nlocalsplus = -1;   // 3.11+
  int32_t code_localsplusnames = -1;
  int32_t code_exceptiontable = -1;
  uint32_t code_filename = 104;
  uint32_t code_name = 112;
  int32_t code_qualname = -1;
  uint32_t code_firstlineno = 40;
  uint32_t code_linetable = 120;
  int32_t code_adaptive = -1;
  int32_t code_firsttraceable = -1;
  int32_t code_tlbc = -1;          // free-threaded 3.14+: per-thread bytecode copies
  int32_t frame_tlbc_index = -1;
  LineFormat line_format = LineFormat::kLnotab36;
};

// The built-in layout of a version (2.7, 3.6-3.15); nullopt for others.
std::optional<DumpLayout> BuiltinDumpLayout(const target::PythonVersion& version,
                                            bool free_threaded);

// Runtime addresses (load bias applied) the reader starts from.
struct RuntimeAddresses {
  uint64_t interp_head = 0;       // address of the PyInterpreterState * list head
  uint64_t runtime = 0;           // _PyRuntime (0 for 2.7 / 3.6)
  uint64_t tstate_current = 0;    // 2.7/3.6: _PyThreadState_Current
  uint64_t interpreter_lock = 0;  // 2.7: the static holding the GIL's sem_t *
  uint64_t gil_statics[4] = {0, 0, 0, 0};  // 3.6: gil_locked, gil_last_holder, gil_cond, gil_mutex
  // Type objects compared by address.
  uint64_t code_type = 0, str_type = 0, bytes_type = 0, tuple_type = 0, dict_type = 0,
           none = 0, cfunction_type = 0, method_type = 0, method_descr_type = 0,
           weakref_type = 0, int_type = 0, long_type = 0, float_type = 0, bool_type = 0,
           true_obj = 0, false_obj = 0;
};

struct ResolvedLayout {
  DumpLayout layout;
  RuntimeAddresses addr;
};

// The layout of one interpreter binary loaded at `bias`. Errors: FailedPrecondition (a version
// dump cannot read, or debug offsets that contradict the binary), NotFound (a symbol is missing).
StatusOr<ResolvedLayout> ResolveLayout(const target::ElfFile& interpreter, uint64_t bias,
                                       const target::PythonVersion& version, bool free_threaded);

}  // namespace threadscope::dump
