#include "daemon/target/py_layout.h"

#include <algorithm>
#include <cstring>

namespace threadscope::target {

namespace {

PyLayout FrameObjectLayout() {  // 3.6-3.10: PyFrameObject chains
  PyLayout l;
  l.head_symbol = "_PyRuntime";
  l.interp_next = 0;
  l.interp_tstate_head = 8;
  l.tstate_next = 8;
  l.tstate_thread_id = 176;
  l.tstate_frame = 24;
  l.frame_previous = 24;  // f_back
  l.frame_code = 32;      // f_code
  l.frame_instr = 104;    // f_lasti
  return l;
}

PyLayout InterpreterFrameLayout() {  // 3.11+: _PyInterpreterFrame chains
  PyLayout l;
  l.head_symbol = "_PyRuntime";
  l.tstate_next = 8;
  l.instr_is_pointer = true;
  l.owner_generator = 1;
  l.code_filename = 112;
  l.code_name = 120;
  l.code_qualname = 128;
  l.code_linetable = 136;
  l.line_table = LineTableFormat::kLocations311;
  return l;
}

uint32_t ReadU64(std::string_view bytes, size_t off) {
  uint64_t v = 0;
  if (off + 8 <= bytes.size()) std::memcpy(&v, bytes.data() + off, 8);
  return static_cast<uint32_t>(v);
}

// Where each field sits inside _Py_DebugOffsets (the first member of _PyRuntime, statically
// initialized, so the binary on disk holds it). The struct grows between minor versions, so its
// own positions are per version: 3.13's Include/internal/pycore_runtime.h, 3.14's
// pycore_debug_offsets.h, and for 3.15 read off Debian's 3.15.2 (thread_state has 17 entries
// there: three frame-related ones after current_frame, and holds_gil/gil_requested after
// status), every value checked against a live process.
struct DebugOffsetsPositions {
  uint32_t bytes;  // what to read
  uint32_t interpreters_head, interp_next, interp_threads_head;
  uint32_t tstate_next, tstate_current_frame, tstate_thread_id;
  uint32_t frame_previous, frame_executable, frame_instr, frame_owner;
  uint32_t code_filename, code_name, code_qualname, code_linetable, code_firstlineno;
  uint32_t code_adaptive;
  int32_t code_tlbc;     // -1: not in this version's struct
  int32_t ascii_size;    // -1: not read (the built-in value stands)
  // Free-threaded builds need the object layout too (pyobject.ob_type, bytes_object.ob_size /
  // ob_sval, unicode_object.state / length); -1: this version's positions are not known, and
  // its free-threaded build is not read.
  int32_t ob_type = -1, bytes_size = -1, bytes_data = -1, unicode_state = -1,
          unicode_length = -1;
};

std::optional<DebugOffsetsPositions> PositionsFor(const PythonVersion& v) {
  if (v.Is(3, 13)) {
    return DebugOffsetsPositions{584, 40, 64, 72, 168, 184, 192, 232, 240, 248, 264,
                                 280, 288, 296, 304, 312, 344, -1, 560};
  }
  if (v.Is(3, 14)) {
    return DebugOffsetsPositions{648, 40, 64, 72, 192, 208, 216, 256, 264, 272, 288,
                                 320, 328, 336, 344, 352, 384, 392, 640,
                                 408, 600, 608, 624, 632};
  }
  if (v.Is(3, 15)) {
    return DebugOffsetsPositions{464, 40, 64, 72, 192, 208, 240, 320, 328, 336, 352,
                                 384, 392, 400, 408, 416, 448, 456, -1};
  }
  return std::nullopt;
}

Status ApplyDebugOffsets(const ElfFile& elf, uint64_t runtime_vaddr, const PythonVersion& version,
                         PyLayout* l) {
  auto pos = PositionsFor(version);
  if (!pos) return OkStatus();
  std::string_view d = elf.BytesAt(runtime_vaddr, pos->bytes);
  if (d.size() < pos->bytes || d.substr(0, 8) != "xdebugpy") {
    // 3.13+ always publishes them: without them, the built-in table is a guess.
    if (version.AtLeast(3, 14)) {
      return FailedPreconditionError("_PyRuntime.debug_offsets is missing or unreadable");
    }
    return OkStatus();
  }
  uint64_t hex = 0;
  std::memcpy(&hex, d.data() + 8, 8);
  if ((hex >> 24) != static_cast<uint64_t>(version.major) ||
      ((hex >> 16) & 0xff) != static_cast<uint64_t>(version.minor)) {
    return FailedPreconditionError("_PyRuntime.debug_offsets is for another version");
  }
  const bool free_threaded = ReadU64(d, 16) != 0;
  if (free_threaded && pos->ob_type < 0) {
    return FailedPreconditionError(
        "this is a free-threaded build of a version whose object layout threadscope does not "
        "read from _PyRuntime.debug_offsets yet; stacks are off");
  }
  if (free_threaded) {
    l->free_threaded = true;
    l->ob_type = ReadU64(d, pos->ob_type);
    l->var_size = l->ob_type + 8;  // ob_size follows ob_type in PyVarObject
    l->bytes_size = ReadU64(d, pos->bytes_size);
    l->bytes_data = ReadU64(d, pos->bytes_data);
    l->unicode_state = ReadU64(d, pos->unicode_state);
    l->unicode_length = ReadU64(d, pos->unicode_length);
    l->unicode_kind_shift = 8;
    // _PyStackRef tags (Py_TAG_BITS) sit in the low bits of f_executable.
    l->code_tag_mask = 7;
    if (l->ob_type >= 64 || l->bytes_data >= 128 || l->unicode_state >= 128 ||
        l->unicode_length >= 128) {
      return FailedPreconditionError("_PyRuntime.debug_offsets holds implausible object offsets");
    }
  }
  l->runtime_interp_head = ReadU64(d, pos->interpreters_head);
  l->interp_next = ReadU64(d, pos->interp_next);
  l->interp_tstate_head = ReadU64(d, pos->interp_threads_head);
  l->tstate_next = ReadU64(d, pos->tstate_next);
  l->tstate_frame = ReadU64(d, pos->tstate_current_frame);
  l->tstate_thread_id = ReadU64(d, pos->tstate_thread_id);
  l->frame_previous = ReadU64(d, pos->frame_previous);
  l->frame_code = ReadU64(d, pos->frame_executable);
  l->frame_instr = ReadU64(d, pos->frame_instr);
  l->frame_owner = static_cast<int32_t>(ReadU64(d, pos->frame_owner));
  l->code_filename = ReadU64(d, pos->code_filename);
  l->code_name = ReadU64(d, pos->code_name);
  l->code_qualname = static_cast<int32_t>(ReadU64(d, pos->code_qualname));
  l->code_linetable = ReadU64(d, pos->code_linetable);
  l->code_firstlineno = ReadU64(d, pos->code_firstlineno);
  l->code_adaptive = static_cast<int32_t>(ReadU64(d, pos->code_adaptive));
  // _co_firsttraceable is not published: it is the int 16 bytes before co_extra's end, i.e. 16
  // before co_code_adaptive (or before co_tlbc where a build has it) in 3.13-3.15.
  int32_t tlbc = pos->code_tlbc >= 0 ? static_cast<int32_t>(ReadU64(d, pos->code_tlbc)) : 0;
  l->code_firsttraceable = (tlbc > 0 ? tlbc : l->code_adaptive) - 16;
  // Per-thread bytecode exists only in free-threaded builds (the field is there regardless).
  if (free_threaded && tlbc > 0) l->code_tlbc = tlbc;
  if (pos->ascii_size >= 0) {
    l->ascii_data = ReadU64(d, pos->ascii_size);
    // PyCompactUnicodeObject adds utf8_length and utf8 to PyASCIIObject.
    l->compact_data = l->ascii_data + 16;
  }
  // Plausibility: every offset inside the structures they index (a corrupt or foreign table
  // must not send the stack walk astray).
  if (l->frame_previous >= 256 || l->frame_code >= 256 || l->frame_instr >= 256 ||
      l->frame_owner < 0 || l->frame_owner >= 256 || l->tstate_frame >= 4096 ||
      l->tstate_thread_id >= 4096 || l->code_filename >= 1024 || l->code_adaptive <= 0 ||
      l->code_adaptive >= 1024 || l->code_firsttraceable <= 0) {
    return FailedPreconditionError("_PyRuntime.debug_offsets holds implausible offsets");
  }
  l->source = "_PyRuntime.debug_offsets (+ built-in table for owners)";
  return OkStatus();
}

}  // namespace

std::optional<PyLayout> BuiltinPyLayout(const PythonVersion& v) {
  if (v.major != 3 || v.minor < 6 || v.minor > 15) return std::nullopt;
  PyLayout l;
  if (v.minor <= 10) {
    l = FrameObjectLayout();
    switch (v.minor) {
      case 6:
        l.head_symbol = "PyInterpreterState_Head";
        l.tstate_thread_id = 152;
        l.frame_instr = 120;
        break;
      case 7:
        l.runtime_interp_head = 24;
        break;
      default:  // 3.8-3.10
        l.runtime_interp_head = 32;
        break;
    }
    l.code_code = v.minor <= 7 ? 40 : 48;
    if (v.minor <= 7) {
      l.code_filename = 96;
      l.code_name = 104;
      l.code_firstlineno = 36;
      l.code_linetable = 112;
    } else {
      l.code_filename = 104;
      l.code_name = 112;
      l.code_firstlineno = 40;
      l.code_linetable = 120;
    }
    if (v.minor == 10) {
      l.frame_instr = 96;
      l.lasti_in_code_units = true;
      l.line_table = LineTableFormat::kLinetable310;
    }
  } else {
    l = InterpreterFrameLayout();
    switch (v.minor) {
      case 11:
        l.runtime_interp_head = 40;
        l.interp_tstate_head = 16;
        l.tstate_thread_id = 152;
        l.tstate_frame = 56;  // cframe
        l.cframe_current = 8;
        l.frame_previous = 48;
        l.frame_code = 32;
        l.frame_instr = 56;  // prev_instr
        l.frame_owner = 69;
        l.code_firstlineno = 72;
        l.code_adaptive = 184;
        l.code_firsttraceable = 168;
        break;
      case 12:
        l.runtime_interp_head = 40;
        l.interp_tstate_head = 72;
        l.tstate_thread_id = 136;
        l.tstate_frame = 56;  // cframe
        l.cframe_current = 0;
        l.frame_previous = 8;
        l.frame_code = 0;
        l.frame_instr = 56;  // prev_instr
        l.frame_owner = 70;
        l.owner_cstack = 3;
        l.code_firstlineno = 68;
        l.code_adaptive = 192;
        l.code_firsttraceable = 176;
        l.ascii_data = 40;
        l.compact_data = 56;
        break;
      case 14:
      case 15:
        // Everything but the frame owners comes from _PyRuntime.debug_offsets (required).
        // 3.14 made f_executable a _PyStackRef: bit 0 tags a deferred reference.
        l.code_tag_mask = 1;
        // FRAME_OWNED_BY_CSTACK (Include/internal/pycore_interpframe_structs.h 3.14: THREAD 0,
        // GENERATOR 1, FRAME_OBJECT 2, INTERPRETER 3, CSTACK 4).
        l.owner_cstack = 4;
        l.ascii_data = 40;
        l.compact_data = 56;
        break;
      default:  // 13
        l.runtime_interp_head = 632;
        l.interp_next = 7264;
        l.interp_tstate_head = 7344;
        l.tstate_thread_id = 152;
        l.tstate_frame = 72;  // current_frame
        l.frame_previous = 8;
        l.frame_code = 0;     // f_executable
        l.frame_instr = 56;   // instr_ptr
        l.frame_owner = 70;
        l.owner_cstack = 3;
        l.code_firstlineno = 68;
        l.code_adaptive = 200;
        l.code_firsttraceable = 184;
        l.ascii_data = 40;
        l.compact_data = 56;
        break;
    }
  }
  l.source = "built-in table for CPython 3." + std::to_string(v.minor);
  return l;
}

StatusOr<PyStackSupport> ResolvePyStackSupport(const InspectedProcess& target) {
  const PythonProcess& info = target.info;
  auto builtin = BuiltinPyLayout(info.version);
  if (!builtin) {
    return UnimplementedError("no frame layout for CPython " + info.version.ToString() +
                              " (Python stacks need 3.6-3.15)");
  }
  if (info.free_threaded && !info.version.AtLeast(3, 14)) {
    return UnimplementedError("free-threaded builds before 3.14 keep frames differently; stacks "
                              "are off");
  }
  const ElfFile& elf = *target.interpreter_elf;
  const uint64_t bias = info.interpreter.load_bias;
  PyStackSupport out;
  out.layout = *builtin;
  PyLayout& l = out.layout;

  uint64_t head_vaddr = 0;
  if (l.head_symbol == "_PyRuntime") {
    auto runtime = elf.FindSymbol("_PyRuntime");
    if (!runtime) return NotFoundError("_PyRuntime is not in " + elf.path());
    if (info.version.AtLeast(3, 13)) {
      if (Status s = ApplyDebugOffsets(elf, runtime->value, info.version, &l); !s.ok()) return s;
    }
    head_vaddr = runtime->value + l.runtime_interp_head;
  } else {
    auto head = InterpHeadFromAccessor(elf);
    if (!head) {
      return NotFoundError("PyInterpreterState_Head in " + elf.path() +
                           " is not the expected one-instruction accessor");
    }
    head_vaddr = *head;
  }
  for (auto [name, addr] : {std::make_pair("PyCode_Type", &out.code_type),
                            std::make_pair("PyUnicode_Type", &out.unicode_type),
                            std::make_pair("PyBytes_Type", &out.bytes_type),
                            std::make_pair("_Py_NoneStruct", &out.none)}) {
    auto sym = elf.FindSymbol(name);
    if (!sym) return NotFoundError(std::string(name) + " is not in " + elf.path());
    *addr = sym->value + bias;
  }

  ts_py_layout& b = out.bpf;
  b.interp_head_addr = head_vaddr + bias;
  b.interp_next = l.interp_next;
  b.interp_tstate_head = l.interp_tstate_head;
  b.tstate_next = l.tstate_next;
  b.tstate_thread_id = l.tstate_thread_id;
  b.tstate_frame = l.tstate_frame;
  b.cframe_current = l.cframe_current;
  b.frame_previous = l.frame_previous;
  b.frame_code = l.frame_code;
  b.frame_instr = l.frame_instr;
  b.frame_owner = l.frame_owner;
  uint32_t end = std::max({l.frame_previous + 8, l.frame_code + 8, l.frame_instr + 8,
                           l.frame_owner >= 0 ? static_cast<uint32_t>(l.frame_owner) + 1 : 0u});
  b.frame_read_size = (end + 7) & ~7u;
  b.instr_is_pointer = l.instr_is_pointer ? 1 : 0;
  b.owner_cstack = l.owner_cstack >= 0 ? static_cast<uint8_t>(l.owner_cstack) : 0xff;
  b.code_tag_mask = l.code_tag_mask;
  if (b.frame_read_size > 256) {
    return FailedPreconditionError("frame fields beyond 256 bytes; stacks are off");
  }
  return out;
}

std::optional<uint64_t> InterpHeadFromAccessor(const ElfFile& elf) {
  auto fn = elf.FindSymbol("PyInterpreterState_Head");
  if (!fn) return std::nullopt;
  std::string_view code = elf.BytesAt(fn->value, 8);
  if (code.size() < 8 || static_cast<uint8_t>(code[0]) != 0x48 ||
      static_cast<uint8_t>(code[1]) != 0x8b || static_cast<uint8_t>(code[2]) != 0x05 ||
      static_cast<uint8_t>(code[7]) != 0xc3) {
    return std::nullopt;
  }
  int32_t disp;
  std::memcpy(&disp, code.data() + 3, 4);
  return fn->value + 7 + static_cast<int64_t>(disp);
}

}  // namespace threadscope::target
