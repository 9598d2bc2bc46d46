#include "daemon/dump/layout.h"

#include <cstring>

#include "daemon/target/py_layout.h"

namespace threadscope::dump {

namespace {

uint64_t U64(std::string_view bytes, size_t off) {
  uint64_t v = 0;
  if (off + 8 <= bytes.size()) std::memcpy(&v, bytes.data() + off, 8);
  return v;
}

void FrameObjectVersion(DumpLayout& l, int minor) {
  // PyFrameObject (<= 3.10) and PyCodeObject, from each build's DWARF.
  l.frame_objects = true;
  l.frame_back = 24;
  l.frame_code = 32;
  l.frame_globals = 48;
  l.frame_valuestack = 64;
  switch (minor) {
    case 6:
      l.frame_lasti = 120;
      l.frame_iblock = 128;
      l.frame_blockstack = 136;
      l.frame_localsplus = 376;
      break;
    case 10:
      l.frame_lasti = 96;
      l.lasti_in_units = true;
      l.frame_iblock = 104;
      l.frame_blockstack = 112;
      l.frame_localsplus = 352;
      break;
    default:  // 3.7-3.9
      l.frame_lasti = 104;
      l.frame_iblock = 112;
      l.frame_blockstack = 120;
      l.frame_localsplus = 360;
      break;
  }
  if (minor <= 7) {
    l.code_argcount = 16;
    l.code_nlocals = 24;
    l.code_stacksize = 28;
    l.code_flags = 32;
    l.code_firstlineno = 36;
    l.code_code = 40;
    l.code_names = 56;
    l.code_varnames = 64;
    l.code_freevars = 72;
    l.code_cellvars = 80;
    l.code_filename = 96;
    l.code_name = 104;
    l.code_linetable = 112;
  } else {
    l.code_argcount = 16;
    l.code_nlocals = 28;
    l.code_stacksize = 32;
    l.code_flags = 36;
    l.code_firstlineno = 40;
    l.code_code = 48;
    l.code_names = 64;
    l.code_varnames = 72;
    l.code_freevars = 80;
    l.code_cellvars = 88;
    l.code_filename = 104;
    l.code_name = 112;
    l.code_linetable = 120;
  }
  l.line_format = minor == 10 ? LineFormat::kLinetable310 : LineFormat::kLnotab36;
}

void InterpreterFrameVersion(DumpLayout& l, int minor) {
  l.frame_objects = false;
  l.line_format = LineFormat::kLocations311;
  l.code_names = 32;
  l.code_exceptiontable = 40;
  l.code_flags = 48;
  l.code_localsplusnames = 96;
  l.code_filename = 112;
  l.code_name = 120;
  l.code_qualname = 128;
  l.code_linetable = 136;
  l.dict_format = DictFormat::k311;
  switch (minor) {
    case 11:
      l.code_argcount = 56;
      l.code_stacksize = 68;
      l.code_firstlineno = 72;
      l.code_nlocalsplus = 76;
      l.code_firsttraceable = 168;
      l.code_adaptive = 184;
      l.frame_code = 32;
      l.frame_back = 48;
      l.frame_globals = 8;
      l.frame_instr = 56;
      l.frame_stacktop = 64;
      l.frame_owner = 69;
      l.frame_localsplus = 72;
      break;
    case 12:
      l.code_argcount = 52;
      l.code_stacksize = 64;
      l.code_firstlineno = 68;
      l.code_nlocalsplus = 72;
      l.code_firsttraceable = 176;
      l.code_adaptive = 192;
      l.frame_code = 0;
      l.frame_back = 8;
      l.frame_globals = 24;
      l.frame_instr = 56;
      l.frame_stacktop = 64;
      l.frame_owner = 70;
      l.frame_localsplus = 72;
      break;
    case 13:
      l.code_argcount = 52;
      l.code_stacksize = 64;
      l.code_firstlineno = 68;
      l.code_nlocalsplus = 72;
      l.code_firsttraceable = 184;
      l.code_adaptive = 200;
      l.frame_code = 0;
      l.frame_back = 8;
      l.frame_globals = 24;
      l.frame_instr = 56;
      l.frame_stacktop = 64;
      l.frame_owner = 70;
      l.frame_localsplus = 72;
      break;
    default:  // 3.14, 3.15 (3.15 checked against its debug offsets and live objects)
      l.code_argcount = 52;
      l.code_stacksize = 64;
      l.code_firstlineno = 68;
      l.code_nlocalsplus = 72;
      l.code_firsttraceable = 192;
      l.code_adaptive = 208;
      l.frame_code = 0;
      l.frame_back = 8;
      l.frame_globals = 24;
      l.frame_instr = 56;
      l.frame_stackpointer = 64;
      l.frame_owner = 74;
      l.frame_localsplus = 80;
      l.stackrefs = true;
      break;
  }
}

// The object header of free-threaded builds is 32 bytes instead of 16 (ob_tid, flags, mutex,
// gc bits, local and shared refcounts, then ob_type): every object field moves by 16.
void FreeThreadedObjects(DumpLayout& l) {
  const uint32_t d = 16;
  l.ob_type += d;
  l.ob_size += d;
  l.tp_name += d;
  l.tp_basicsize += d;
  l.tp_flags += d;
  l.tp_base += d;
  l.tp_dictoffset += d;
  if (l.ht_cached_keys >= 0) l.ht_cached_keys += d;
  l.tuple_items += d;
  l.str_length += d;
  l.str_state += d;
  l.str_kind_shift = 8;  // `unsigned char interned` instead of a 2-bit field
  l.str_ascii_data += d;
  l.str_compact_data += d;
  l.bytes_data += d;
  l.long_size += d;
  l.long_digits += d;
  l.float_value += d;
  l.cfunc_self += d;
  l.method_func += d;
  l.method_self += d;
  l.descr_name += d;
  l.weakref_object += d;
  l.dict_keys += d;
  l.dict_values += d;
  l.lock_handle += d;
  l.rlock_owner += d;
  l.rlock_count += d;
  l.code_argcount += d;
  l.code_stacksize += d;
  l.code_flags += d;
  l.code_names += d;
  l.code_exceptiontable += d;
  l.code_firstlineno += d;
  l.code_nlocalsplus += d;
  l.code_localsplusnames += d;
  l.code_filename += d;
  l.code_name += d;
  l.code_qualname += d;
  l.code_linetable += d;
  l.code_firsttraceable += d;
  l.code_adaptive += 24;  // + co_tlbc (checked: 208 -> 232 in 3.14.7t)
  l.code_tlbc = l.code_adaptive - 8;
  l.managed_dict_offset = -8;  // no GC header before the object (pycore_object.h)
  l.gil_last_holder += 8;      // `int enabled` leads _gil_runtime_state
  l.gil_locked += 8;
  l.gil_size += 8;
  l.frame_owner = 78;          // + tlbc_index
  l.frame_tlbc_index = 72;
}

// _PyRuntime.debug_offsets: read at offset 0 of _PyRuntime, statically initialized, so the
// binary on disk holds it. Each version's struct has its own shape; these are the fields dump
// uses, by their byte position in the struct (3.13.0 pycore_runtime.h, 3.14.7
// pycore_debug_offsets.h, and for 3.15 the 3.14 shape with the thread-state block grown to 17
// entries, checked value by value against 3.15.2's binary and live objects).
struct DebugPositions {
  uint32_t interp_head, interp_next, interp_threads_head, interp_ceval_gil;
  uint32_t gil_locked, gil_holder;  // interpreter-relative
  uint32_t ts_next, ts_frame, ts_thread_id, ts_native_id, ts_status;
  int32_t ts_holds_gil, ts_gil_requested;
  uint32_t fr_previous, fr_executable, fr_instr, fr_localsplus, fr_owner;
  int32_t fr_stackpointer, fr_tlbc_index;
  uint32_t co_filename, co_name, co_qualname, co_linetable, co_firstlineno, co_argcount,
      co_localsplusnames, co_adaptive;
  int32_t co_tlbc;
  uint32_t ob_type, tp_name, tp_flags;
  uint32_t tuple_items, tuple_size, dict_keys, dict_values, long_tag, long_digits, bytes_size,
      bytes_data, str_state, str_length, str_ascii_size;
  size_t total;
};

constexpr DebugPositions kDebug313 = {
    40, 64, 72, 112, 136, 144,                      // runtime, interpreter
    168, 184, 192, 200, 216, -1, -1,                // thread state
    232, 240, 248, 256, 264, -1, -1,                // frame
    280, 288, 296, 304, 312, 320, 328, 344, -1,     // code
    360, 376, 392,                                  // object, type
    408, 416, 456, 464, 496, 504, 520, 528, 544, 552, 560, 568};
constexpr DebugPositions kDebug314 = {
    40, 64, 72, 120, 144, 152,
    192, 208, 216, 224, 240, -1, -1,
    256, 264, 272, 280, 288, 296, 304,
    320, 328, 336, 344, 352, 360, 368, 384, 392,
    408, 424, 440,
    456, 464, 536, 544, 576, 584, 600, 608, 624, 632, 640, 648};
constexpr DebugPositions kDebug315 = {
    40, 64, 72, 120, 144, 152,
    192, 208, 240, 248, 264, 272, 280,
    320, 328, 336, 344, 352, 360, 368,
    384, 392, 400, 408, 416, 424, 432, 448, 456,
    472, 488, 504,
    552, 560, 632, 640, 672, 680, 696, 704, 720, 728, 736, 744};

Status ApplyDebugOffsets(const target::ElfFile& elf, uint64_t runtime_vaddr, int minor,
                         bool free_threaded, DumpLayout* l) {
  const DebugPositions& p = minor == 13 ? kDebug313 : minor == 14 ? kDebug314 : kDebug315;
  std::string_view d = elf.BytesAt(runtime_vaddr, p.total);
  if (d.size() < p.total || d.substr(0, 8) != "xdebugpy") return OkStatus();  // not published
  const uint64_t version = U64(d, 8);
  if ((version >> 24) != 3 || ((version >> 16) & 0xff) != static_cast<uint64_t>(minor)) {
    return FailedPreconditionError("_PyRuntime.debug_offsets says version " +
                                   std::to_string(version >> 24) + "." +
                                   std::to_string((version >> 16) & 0xff) + ", the binary 3." +
                                   std::to_string(minor));
  }
  if ((U64(d, 16) != 0) != free_threaded) {
    return FailedPreconditionError(
        "_PyRuntime.debug_offsets and the binary's name disagree about free threading");
  }
  auto u32 = [&](uint32_t pos) { return static_cast<uint32_t>(U64(d, pos)); };
  auto i32 = [&](int32_t pos) { return pos < 0 ? -1 : static_cast<int32_t>(U64(d, pos)); };
  l->runtime_interp_head = u32(p.interp_head);
  l->interp_next = u32(p.interp_next);
  l->interp_tstate_head = u32(p.interp_threads_head);
  l->gil_offset = u32(p.interp_ceval_gil);
  l->tstate_next = u32(p.ts_next);
  l->tstate_frame = u32(p.ts_frame);
  l->cframe_current = -1;
  l->tstate_thread_id = u32(p.ts_thread_id);
  l->tstate_native_id = static_cast<int32_t>(u32(p.ts_native_id));
  if (minor == 13) l->tstate_status = static_cast<int32_t>(u32(p.ts_status));
  if (p.ts_holds_gil >= 0) l->tstate_holds_gil = i32(p.ts_holds_gil);
  if (p.ts_gil_requested >= 0) l->tstate_gil_requested = i32(p.ts_gil_requested);
  l->frame_back = u32(p.fr_previous);
  l->frame_code = u32(p.fr_executable);
  l->frame_instr = u32(p.fr_instr);
  l->frame_localsplus = u32(p.fr_localsplus);
  l->frame_owner = static_cast<int32_t>(u32(p.fr_owner));
  if (p.fr_stackpointer >= 0) l->frame_stackpointer = i32(p.fr_stackpointer);
  if (free_threaded && p.fr_tlbc_index >= 0) l->frame_tlbc_index = i32(p.fr_tlbc_index);
  l->code_filename = u32(p.co_filename);
  l->code_name = u32(p.co_name);
  l->code_qualname = static_cast<int32_t>(u32(p.co_qualname));
  l->code_linetable = u32(p.co_linetable);
  l->code_firstlineno = u32(p.co_firstlineno);
  l->code_argcount = u32(p.co_argcount);
  l->code_localsplusnames = static_cast<int32_t>(u32(p.co_localsplusnames));
  l->code_adaptive = static_cast<int32_t>(u32(p.co_adaptive));
  if (free_threaded && p.co_tlbc >= 0) l->code_tlbc = i32(p.co_tlbc);
  l->ob_type = u32(p.ob_type);
  l->tp_name = u32(p.tp_name);
  l->tp_flags = u32(p.tp_flags);
  l->tuple_items = u32(p.tuple_items);
  l->ob_size = u32(p.tuple_size);
  l->dict_keys = u32(p.dict_keys);
  l->dict_values = u32(p.dict_values);
  l->long_size = u32(p.long_tag);
  l->long_digits = u32(p.long_digits);
  l->bytes_data = u32(p.bytes_data);
  l->str_state = u32(p.str_state);
  l->str_length = u32(p.str_length);
  l->str_ascii_data = u32(p.str_ascii_size);
  l->str_compact_data = l->str_ascii_data + 16;  // + utf8_length, utf8
  l->source = "_PyRuntime.debug_offsets + built-in table for 3." + std::to_string(minor);
  return OkStatus();
}

}  // namespace

std::optional<DumpLayout> BuiltinDumpLayout(const target::PythonVersion& v, bool free_threaded) {
  DumpLayout l;
  l.major = v.major;
  l.minor = v.minor;
  l.free_threaded = free_threaded;
  if (v.major == 2 && v.minor == 7) {
    FrameObjectVersion(l, 6);  // 2.7's PyFrameObject matches 3.6's up to f_localsplus
    l.frame_lasti = 120;
    l.frame_iblock = 128;
    l.frame_blockstack = 132;
    l.frame_localsplus = 376;
    l.code_argcount = 16;
    l.code_nlocals = 20;
    l.code_stacksize = 24;
    l.code_flags = 28;
    l.code_code = 32;
    l.code_names = 48;
    l.code_varnames = 56;
    l.code_freevars = 64;
    l.code_cellvars = 72;
    l.code_filename = 80;
    l.code_name = 88;
    l.code_firstlineno = 96;
    l.code_linetable = 104;
    l.line_format = LineFormat::kLnotab27;
    l.py2_strings = true;
    l.str_length = 16;      // PyStringObject.ob_size
    l.str_ascii_data = 36;  // ob_sval
    l.bytes_data = 36;
    l.dict_format = DictFormat::k27;
    l.dict_keys = 32;       // ma_mask
    l.dict_values = 40;     // ma_table
    l.head_symbol = "PyInterpreterState_Head";
    l.interp_next = 0;
    l.interp_tstate_head = 8;
    l.tstate_next = 0;
    l.tstate_frame = 16;
    l.tstate_thread_id = 144;
    l.gil = GilKind::k27;
    l.source = "built-in table for CPython 2.7";
    return l;
  }
  if (v.major != 3 || v.minor < 6 || v.minor > 15) return std::nullopt;
  if (free_threaded && v.minor < 14) return std::nullopt;
  if (v.minor <= 10) {
    FrameObjectVersion(l, v.minor);
    l.lock_locked = 32;  // lockobject.locked (3.6.15's DWARF has it too)
    l.tstate_next = 8;
    l.tstate_frame = 24;
    l.tstate_thread_id = v.minor == 6 ? 152 : 176;
    l.tstate_on_delete_data = v.minor == 6 ? 184 : 208;
    l.interp_next = 0;
    l.interp_tstate_head = 8;
    l.ht_cached_keys = v.minor == 9 ? 864 : 872;
    switch (v.minor) {
      case 6:
        l.head_symbol = "PyInterpreterState_Head";
        l.gil = GilKind::kStatics36;
        break;
      case 7:
        l.runtime_interp_head = 24;
        l.gil_offset = 1264;
        break;
      case 8:
        l.runtime_interp_head = 32;
        l.gil_offset = 1152;
        break;
      default:
        l.runtime_interp_head = 32;
        l.gil_offset = 352;
        break;
    }
  } else {
    InterpreterFrameVersion(l, v.minor);
    l.lock_locked = v.minor <= 12 ? 32 : -1;
    switch (v.minor) {
      case 11:
        l.runtime_interp_head = 40;
        l.interp_tstate_head = 16;
        l.tstate_thread_id = 152;
        l.tstate_native_id = 160;
        l.tstate_on_delete_data = 192;
        l.tstate_frame = 56;  // cframe
        l.cframe_current = 8;
        l.gil_offset = 360;
        l.ht_cached_keys = 872;
        l.managed = ManagedDict::kValues311;
        break;
      case 12:
        l.runtime_interp_head = 40;
        l.interp_tstate_head = 72;
        l.tstate_thread_id = 136;
        l.tstate_native_id = 144;
        l.tstate_on_delete_data = 176;
        l.tstate_frame = 56;  // cframe
        l.cframe_current = 0;
        l.gil = GilKind::kInterpPtr;
        l.gil_offset = 384;
        l.ht_cached_keys = 880;
        l.managed = ManagedDict::kTagged312;
        l.str_ascii_data = 40;
        l.str_compact_data = 56;
        l.long_tagged = true;
        break;
      default:  // 3.13+: most of it comes from debug_offsets; these are 3.13.0's / 3.14.7's
        l.runtime_interp_head = 632;
        l.interp_next = 7264;
        l.interp_tstate_head = 7344;
        l.tstate_thread_id = v.minor >= 15 ? 176 : 152;
        l.tstate_native_id = v.minor >= 15 ? 184 : 160;
        l.tstate_frame = 72;
        if (v.minor == 13) l.tstate_status = 32;
        if (v.minor >= 14) l.tstate_holds_gil = 36;
        if (v.minor >= 15) l.tstate_gil_requested = 40;
        l.gil = GilKind::kInterpPtr;
        l.gil_offset = 16;
        l.ht_cached_keys = v.minor >= 15 ? 888 : 880;  // 3.15: also in its debug offsets
        l.managed = ManagedDict::kInline313;
        l.values_header = 8;
        l.str_ascii_data = 40;
        l.str_compact_data = 56;
        l.long_tagged = true;
        if (v.minor >= 14) {
          l.tuple_items = 32;  // + ob_hash
          l.rlock_is_mutex = true;
        }
        break;
    }
  }
  if (free_threaded) FreeThreadedObjects(l);
  l.source = "built-in table for CPython 3." + std::to_string(v.minor) +
             (free_threaded ? " (free-threaded)" : "");
  return l;
}

StatusOr<ResolvedLayout> ResolveLayout(const target::ElfFile& elf, uint64_t bias,
                                       const target::PythonVersion& version, bool free_threaded) {
  auto builtin = BuiltinDumpLayout(version, free_threaded);
  if (!builtin) {
    return FailedPreconditionError("threadscope dump reads CPython 2.7 and 3.6-3.15 (3.14+ when "
                                   "free-threaded); this is " + version.ToString() +
                                   (free_threaded ? " free-threaded" : ""));
  }
  ResolvedLayout out;
  out.layout = *builtin;
  DumpLayout& l = out.layout;
  RuntimeAddresses& a = out.addr;
  uint64_t head_vaddr = 0;
  if (l.head_symbol == "_PyRuntime") {
    auto runtime = elf.FindSymbol("_PyRuntime");
    if (!runtime) return NotFoundError("_PyRuntime is not in " + elf.path());
    if (version.AtLeast(3, 13)) {
      TS_RETURN_IF_ERROR(ApplyDebugOffsets(elf, runtime->value, version.minor, free_threaded, &l));
    }
    a.runtime = runtime->value + bias;
    head_vaddr = runtime->value + l.runtime_interp_head;
  } else {
    auto head = target::InterpHeadFromAccessor(elf);
    if (!head) {
      return NotFoundError("PyInterpreterState_Head in " + elf.path() +
                           " is not the expected one-instruction accessor");
    }
    head_vaddr = *head;
  }
  a.interp_head = head_vaddr + bias;

  auto sym = [&](const char* name) -> uint64_t {
    auto s = elf.FindSymbol(name);
    return s ? s->value + bias : 0;
  };
  a.code_type = sym("PyCode_Type");
  a.str_type = l.py2_strings ? sym("PyString_Type") : sym("PyUnicode_Type");
  a.bytes_type = l.py2_strings ? sym("PyString_Type") : sym("PyBytes_Type");
  a.tuple_type = sym("PyTuple_Type");
  a.dict_type = sym("PyDict_Type");
  a.none = sym("_Py_NoneStruct");
  a.cfunction_type = sym("PyCFunction_Type");
  a.method_type = sym("PyMethod_Type");
  a.method_descr_type = sym("PyMethodDescr_Type");
  a.weakref_type = sym("_PyWeakref_RefType");
  a.long_type = sym("PyLong_Type");
  a.int_type = l.py2_strings ? sym("PyInt_Type") : 0;
  a.float_type = sym("PyFloat_Type");
  a.bool_type = sym("PyBool_Type");
  a.true_obj = sym("_Py_TrueStruct");
  a.false_obj = l.py2_strings ? sym("_Py_ZeroStruct") : sym("_Py_FalseStruct");
  for (auto [name, value] : {std::make_pair("PyCode_Type", a.code_type),
                             std::make_pair("the str type", a.str_type),
                             std::make_pair("PyTuple_Type", a.tuple_type),
                             std::make_pair("_Py_NoneStruct", a.none)}) {
    if (!value) return NotFoundError(std::string(name) + " is not in " + elf.path());
  }
  if (l.gil == GilKind::k27) {
    a.tstate_current = sym("_PyThreadState_Current");
    a.interpreter_lock = sym("interpreter_lock");  // .symtab only
  } else if (l.gil == GilKind::kStatics36) {
    a.tstate_current = sym("_PyThreadState_Current");
    a.gil_statics[0] = sym("gil_locked");
    a.gil_statics[1] = sym("gil_last_holder");
    a.gil_statics[2] = sym("gil_cond");
    a.gil_statics[3] = sym("gil_mutex");
  }
  return out;
}

}  // namespace threadscope::dump
