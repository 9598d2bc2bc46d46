#include "daemon/target/py_code.h"

#include <sys/uio.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "daemon/common/text.h"

namespace threadscope::target {

namespace {

constexpr int64_t kMaxStringChars = 4096;
constexpr int64_t kMaxTableBytes = 1 << 20;
// The code cache: entries, and bytes (names and line tables), so that a target fabricating
// many code objects with 1 MiB line tables costs the daemon at most this much.
constexpr size_t kMaxCachedCodes = 65536;
constexpr uint64_t kMaxCacheBytes = uint64_t{64} << 20;
// CPython limits a code object to INT_MAX bytes of bytecode; anything larger is not one.
constexpr int64_t kMaxCodeUnits = int64_t{1} << 30;

int8_t Signed(uint8_t b) { return static_cast<int8_t>(b); }

// Line arithmetic on tables read from a live (possibly hostile) process: kept in int64 and
// pinned far outside any real line number, so no sum can overflow; such lines become unknown.
constexpr int64_t kLineLimit = int64_t{1} << 40;
void AddLine(int64_t* line, int64_t delta) {
  *line = std::clamp<int64_t>(*line + std::clamp<int64_t>(delta, -kLineLimit, kLineLimit),
                              -kLineLimit, kLineLimit);
}
std::optional<int> AsLine(int64_t line) {
  if (line < std::numeric_limits<int>::min() || line > std::numeric_limits<int>::max()) {
    return std::nullopt;
  }
  return static_cast<int>(line);
}

// 3.6-3.9 co_lnotab (Objects/lnotab_notes.txt): (bytecode delta, signed line delta) pairs.
std::optional<int> LineLnotab36(std::string_view t, int64_t line, int64_t addrq) {
  int64_t addr = 0;
  for (size_t i = 0; i + 1 < t.size(); i += 2) {
    addr += static_cast<uint8_t>(t[i]);
    if (addr > addrq) break;
    AddLine(&line, Signed(static_cast<uint8_t>(t[i + 1])));
  }
  return AsLine(line);
}

// 3.10 co_linetable: (byte length of a range, signed line delta; -128 = no line).
std::optional<int> LineLinetable310(std::string_view t, int64_t line, int64_t addrq) {
  if (addrq < 0) return AsLine(line);
  int64_t start = 0;
  for (size_t i = 0; i + 1 < t.size(); i += 2) {
    int64_t end = start + static_cast<uint8_t>(t[i]);
    int delta = Signed(static_cast<uint8_t>(t[i + 1]));
    std::optional<int> current;
    if (delta != -128) {
      AddLine(&line, delta);
      current = AsLine(line);
    }
    if (start <= addrq && addrq < end) return current;
    start = end;
  }
  return std::nullopt;
}

uint64_t ScanVarint(std::string_view t, size_t* i) {
  uint8_t read = static_cast<uint8_t>(t[*i]);
  uint64_t value = read & 63;
  int shift = 0;
  while ((read & 64) && *i + 1 < t.size() && shift < 56) {
    ++*i;
    shift += 6;
    read = static_cast<uint8_t>(t[*i]);
    value |= static_cast<uint64_t>(read & 63) << shift;
  }
  return value;
}

int64_t ScanSignedVarint(std::string_view t, size_t* i) {
  uint64_t u = ScanVarint(t, i);
  return (u & 1) ? -static_cast<int64_t>(u >> 1) : static_cast<int64_t>(u >> 1);
}

// 3.11+ location table (Objects/locations.md). Entries start with a byte that has bit 7 set:
// 1CCCCLLL, code C, L+1 code units long. C=15 no location; 14 long form and 13 no-column form
// carry a signed-varint line delta; 10-12 one-line forms (delta C-10); 0-9 short forms (delta 0).
std::optional<int> LineLocations311(std::string_view t, int64_t line, int64_t units) {
  if (units < 0) return AsLine(line);
  int64_t addr = 0;
  size_t i = 0;
  while (i < t.size()) {
    uint8_t b = static_cast<uint8_t>(t[i]);
    int code = (b >> 3) & 15;
    int length = (b & 7) + 1;
    std::optional<int> current;
    if (code != 15) {
      if (code == 13 || code == 14) {
        size_t j = i + 1;
        if (j < t.size()) AddLine(&line, ScanSignedVarint(t, &j));
      } else if (code >= 10 && code <= 12) {
        AddLine(&line, code - 10);
      }
      current = AsLine(line);
    }
    if (addr <= units && units < addr + length) return current;
    addr += length;
    ++i;
    while (i < t.size() && !(static_cast<uint8_t>(t[i]) & 128)) ++i;
  }
  return std::nullopt;
}

}  // namespace

std::optional<int> LineForOffset(LineTableFormat format, std::string_view table, int firstlineno,
                                 int64_t offset) {
  switch (format) {
    case LineTableFormat::kLnotab36: return LineLnotab36(table, firstlineno, offset);
    case LineTableFormat::kLinetable310:
      // Offsets are in 2-byte units here; larger than any code object means no line.
      if (offset > kMaxCodeUnits || offset < -kMaxCodeUnits) return std::nullopt;
      return LineLinetable310(table, firstlineno, offset * 2);
    case LineTableFormat::kLocations311: return LineLocations311(table, firstlineno, offset);
  }
  return std::nullopt;
}

bool ProcessMemory::Read(uint64_t addr, void* out, size_t n) const {
  if (n == 0) return true;
  iovec local{out, n};
  iovec remote{reinterpret_cast<void*>(addr), n};
  return process_vm_readv(pid_, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(n);
}

std::optional<std::string> PyCodeResolver::ReadString(uint64_t obj) const {
  if (!obj) return std::nullopt;
  const PyLayout& l = support_.layout;
  uint64_t type = 0;
  if (!ReadU64(obj + l.ob_type, &type) || type != support_.unicode_type) return std::nullopt;
  int64_t length = 0;
  uint32_t state = 0;
  if (!memory_.Read(obj + l.unicode_length, &length, 8) ||
      !memory_.Read(obj + l.unicode_state, &state, 4)) {
    return std::nullopt;
  }
  const uint32_t kind = (state >> l.unicode_kind_shift) & 7;
  const bool compact = (state >> (l.unicode_kind_shift + 3)) & 1;
  const bool ascii = (state >> (l.unicode_kind_shift + 4)) & 1;
  if (length < 0 || length > kMaxStringChars || !compact) return std::nullopt;
  if (ascii) {
    std::string s(static_cast<size_t>(length), '\0');
    if (!memory_.Read(obj + l.ascii_data, s.data(), s.size())) return std::nullopt;
    // Read from a live process without stopping it: an object freed and reused under us shows
    // bytes that are not ASCII. Not a string we can trust.
    for (char c : s) {
      if (static_cast<unsigned char>(c) >= 0x80) return std::nullopt;
    }
    return s;
  }
  if (kind != 1 && kind != 2 && kind != 4) return std::nullopt;
  std::string raw(static_cast<size_t>(length) * kind, '\0');
  if (!memory_.Read(obj + l.compact_data, raw.data(), raw.size())) return std::nullopt;
  std::string out;
  for (int64_t i = 0; i < length; ++i) {
    uint32_t cp = 0;
    std::memcpy(&cp, raw.data() + i * kind, kind);
    AppendUtf8(&out, cp);
  }
  return out;
}

std::optional<std::string> PyCodeResolver::ReadBytes(uint64_t obj) const {
  if (!obj) return std::nullopt;
  const PyLayout& l = support_.layout;
  uint64_t type = 0;
  int64_t size = 0;
  if (!ReadU64(obj + l.ob_type, &type) || type != support_.bytes_type) return std::nullopt;
  if (!memory_.Read(obj + l.bytes_size, &size, 8) || size < 0 || size > kMaxTableBytes) {
    return std::nullopt;
  }
  std::string s(static_cast<size_t>(size), '\0');
  if (!memory_.Read(obj + l.bytes_data, s.data(), s.size())) return std::nullopt;
  return s;
}

const PyCodeResolver::CodeInfo* PyCodeResolver::Code(uint64_t code) {
  const PyLayout& l = support_.layout;
  const uint32_t name_off =
      l.code_qualname >= 0 ? static_cast<uint32_t>(l.code_qualname) : l.code_name;
  uint64_t filename_obj = 0, name_obj = 0;
  if (!ReadU64(code + l.code_filename, &filename_obj) || !ReadU64(code + name_off, &name_obj)) {
    return nullptr;
  }
  auto it = codes_.find(code);
  if (it != codes_.end() && it->second.filename_obj == filename_obj &&
      it->second.name_obj == name_obj) {
    return &it->second;
  }
  CodeInfo info;
  info.filename_obj = filename_obj;
  info.name_obj = name_obj;
  auto file = ReadString(filename_obj);
  auto name = ReadString(name_obj);
  uint64_t table_obj = 0;
  int32_t first = 0, traceable = 0;
  if (!file || !name || !memory_.Read(code + l.code_firstlineno, &first, 4) ||
      !ReadU64(code + l.code_linetable, &table_obj)) {
    return nullptr;
  }
  if (l.code_firsttraceable >= 0 &&
      !memory_.Read(code + static_cast<uint32_t>(l.code_firsttraceable), &traceable, 4)) {
    return nullptr;
  }
  auto table = ReadBytes(table_obj);
  if (l.code_adaptive >= 0) {
    if (!memory_.Read(code + l.var_size, &info.code_units, 8)) return nullptr;  // Py_SIZE: units
  } else {
    uint64_t code_obj = 0;
    int64_t bytes = 0;
    if (!ReadU64(code + static_cast<uint32_t>(l.code_code), &code_obj) ||
        !memory_.Read(code_obj + l.var_size, &bytes, 8)) {
      return nullptr;
    }
    info.code_units = bytes / 2;
  }
  if (info.code_units < 0 || info.code_units > kMaxCodeUnits) return nullptr;
  info.file = std::move(*file);
  info.function = std::move(*name);
  info.firstlineno = first;
  info.firsttraceable = traceable;
  info.table = table.value_or("");
  // Bounded in entries and in bytes; entries are cheap to rebuild, so a full cache starts over.
  if (it != codes_.end()) {
    cache_bytes_ -= CacheCost(it->second);
    codes_.erase(it);
  }
  uint64_t cost = CacheCost(info);
  if (codes_.size() >= kMaxCachedCodes || cache_bytes_ + cost > kMaxCacheBytes) {
    codes_.clear();
    cache_bytes_ = 0;
  }
  cache_bytes_ += cost;
  return &(codes_[code] = std::move(info));
}

std::optional<uint64_t> PyCodeResolver::TlbcCopyHolding(uint64_t code, uint64_t instr,
                                                        int64_t code_units) const {
  constexpr int64_t kMaxCopies = 1024;  // one per thread that ran it, bounded
  uint64_t array = 0;
  int64_t size = 0;
  if (!ReadU64(code + static_cast<uint32_t>(support_.layout.code_tlbc), &array) || !array ||
      !memory_.Read(array, &size, 8) || size <= 0 || size > kMaxCopies) {
    return std::nullopt;
  }
  std::vector<uint64_t> entries(static_cast<size_t>(size));
  if (!memory_.Read(array + 8, entries.data(), entries.size() * 8)) return std::nullopt;
  for (uint64_t e : entries) {
    if (e && instr >= e && instr < e + 2 * static_cast<uint64_t>(code_units)) return e;
  }
  return std::nullopt;
}

uint64_t PyCodeResolver::CacheCost(const CodeInfo& info) {
  // The strings' bytes plus the entry and its hash node.
  return info.file.size() + info.function.size() + info.table.size() + sizeof(CodeInfo) + 64;
}

ResolvedFrame PyCodeResolver::Resolve(uint64_t code, uint64_t instr) {
  ResolvedFrame out;
  uint64_t type = 0;
  if (code && code == support_.none) {
    out.kind = ResolvedFrame::Kind::kNotPython;  // 3.13's C entry frames hold None
    return out;
  }
  // Not a code object (any more): its frame finished and the memory was reused (a module's code
  // dies when its import ends). Unknown, rather than wrong.
  const PyLayout& l = support_.layout;
  if (!code || !ReadU64(code + l.ob_type, &type) || type != support_.code_type) return out;
  const CodeInfo* info = Code(code);
  if (!info) return out;
  int64_t offset;
  int64_t units;
  if (l.instr_is_pointer) {
    uint64_t base = code + static_cast<uint64_t>(l.code_adaptive);
    // Free-threaded: the frame may run a thread's own copy of the bytecode (co_tlbc); the
    // offset is the same in every copy.
    if (l.code_tlbc >= 0 && (instr < base || instr >= base + 2 * info->code_units)) {
      if (auto copy = TlbcCopyHolding(code, instr, info->code_units)) base = *copy;
    }
    // Unsigned difference: the pointer is the target's word and may be anything.
    offset = static_cast<int64_t>(instr - base) / 2;
    units = offset;
  } else {
    offset = static_cast<int64_t>(instr);  // f_lasti: bytes, or code units on 3.10
    units = l.lasti_in_code_units ? offset : offset / 2;
  }
  // An offset outside the code means a different code object now lives at this address.
  if (units < -1 || units >= info->code_units) return out;
  if (l.instr_is_pointer && offset < info->firsttraceable) {
    out.kind = ResolvedFrame::Kind::kNotPython;  // _PyFrame_IsIncomplete: not yet running
    return out;
  }
  out.kind = ResolvedFrame::Kind::kPython;
  out.file = info->file;
  out.function = info->function;
  out.line = LineForOffset(l.line_table, info->table, info->firstlineno, offset);
  return out;
}

}  // namespace threadscope::target
