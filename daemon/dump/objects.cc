#include "daemon/dump/objects.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "daemon/common/text.h"

namespace threadscope::dump {

namespace {

constexpr uint64_t kTpflagsManagedDict = 1ull << 4;  // 3.11+
constexpr uint64_t kTpflagsInlineValues = 1ull << 2;  // 3.13+

}  // namespace

uint64_t ObjectReader::TypeOf(uint64_t obj) const {
  if (!obj) return 0;
  return ReadU64(m_, obj + l_.ob_type).value_or(0);
}

std::optional<std::string> ObjectReader::CString(uint64_t addr, size_t max) const {
  if (!addr) return std::nullopt;
  std::string out;
  char buf[32];
  while (out.size() < max) {
    size_t want = std::min(sizeof(buf), max - out.size());
    if (!m_.Read(addr + out.size(), buf, want)) {
      // The string may end right before an unmapped page: byte by byte.
      if (!m_.Read(addr + out.size(), buf, 1)) return std::nullopt;
      want = 1;
    }
    for (size_t i = 0; i < want; ++i) {
      if (buf[i] == '\0') return ToValidUtf8(out);
      out.push_back(buf[i]);
    }
  }
  return ToValidUtf8(out);
}

std::string ObjectReader::TypeName(uint64_t type) const {
  if (!type) return "";
  auto it = type_names_->find(type);
  if (it != type_names_->end()) return it->second;
  std::string name;
  if (auto p = ReadU64(m_, type + l_.tp_name)) name = CString(*p, 128).value_or("");
  if (type_names_->size() > 4096) type_names_->clear();
  (*type_names_)[type] = name;
  return name;
}

std::vector<std::string> ObjectReader::TypeChain(uint64_t type) const {
  std::vector<std::string> out;
  for (int i = 0; i < 8 && type; ++i) {
    out.push_back(TypeName(type));
    type = ReadU64(m_, type + l_.tp_base).value_or(0);
  }
  return out;
}

std::optional<std::string> ObjectReader::Str(uint64_t obj, size_t max_chars) const {
  if (!obj) return std::nullopt;
  uint64_t type = TypeOf(obj);
  if (!type || type != a_.str_type) return std::nullopt;
  int64_t length = 0;
  if (!m_.Read(obj + l_.str_length, &length, 8) || length < 0) return std::nullopt;
  const bool truncated = static_cast<uint64_t>(length) > max_chars;
  const size_t n = truncated ? max_chars : static_cast<size_t>(length);
  if (l_.py2_strings) {
    std::string raw(n, '\0');
    if (!m_.Read(obj + l_.str_ascii_data, raw.data(), n)) return std::nullopt;
    return ToValidUtf8(raw) + (truncated ? "..." : "");
  }
  uint32_t state = 0;
  if (!m_.Read(obj + l_.str_state, &state, 4)) return std::nullopt;
  const uint32_t kind = (state >> l_.str_kind_shift) & 7;
  const bool compact = (state >> (l_.str_kind_shift + 3)) & 1;
  const bool ascii = (state >> (l_.str_kind_shift + 4)) & 1;
  if (!compact) return std::nullopt;  // legacy strings: never names or thread names
  if (ascii) {
    std::string s(n, '\0');
    if (!m_.Read(obj + l_.str_ascii_data, s.data(), n)) return std::nullopt;
    for (char& c : s) {
      if (static_cast<unsigned char>(c) >= 0x80) c = '?';  // not what an ASCII str holds
    }
    return s + (truncated ? "..." : "");
  }
  if (kind != 1 && kind != 2 && kind != 4) return std::nullopt;
  std::string raw(n * kind, '\0');
  if (!m_.Read(obj + l_.str_compact_data, raw.data(), raw.size())) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    uint32_t cp = 0;
    std::memcpy(&cp, raw.data() + i * kind, kind);
    AppendUtf8(&out, cp);
  }
  return out + (truncated ? "..." : "");
}

std::optional<std::string> ObjectReader::Bytes(uint64_t obj, size_t max) const {
  if (!obj || TypeOf(obj) != a_.bytes_type) return std::nullopt;
  int64_t size = 0;
  if (!m_.Read(obj + l_.ob_size, &size, 8) || size < 0 || static_cast<uint64_t>(size) > max) {
    return std::nullopt;
  }
  std::string s(static_cast<size_t>(size), '\0');
  if (!m_.Read(obj + l_.bytes_data, s.data(), s.size())) return std::nullopt;
  return s;
}

std::optional<int64_t> ObjectReader::Int(uint64_t obj) const {
  if (!obj) return std::nullopt;
  uint64_t type = TypeOf(obj);
  if (a_.bool_type && type == a_.bool_type) return obj == a_.true_obj ? 1 : 0;
  if (a_.int_type && type == a_.int_type) {  // 2.7 int
    int64_t v;
    if (!m_.Read(obj + 16 + (l_.ob_type - 8), &v, 8)) return std::nullopt;
    return v;
  }
  if (!a_.long_type || type != a_.long_type) return std::nullopt;
  int64_t ndigits = 0;
  bool negative = false;
  if (l_.long_tagged) {
    uint64_t tag = 0;
    if (!m_.Read(obj + l_.long_size, &tag, 8)) return std::nullopt;
    ndigits = static_cast<int64_t>(tag >> 3);
    negative = (tag & 3) == 2;
  } else {
    int64_t size = 0;
    if (!m_.Read(obj + l_.long_size, &size, 8)) return std::nullopt;
    negative = size < 0;
    ndigits = negative ? -size : size;
  }
  if (ndigits > 3) return std::nullopt;
  uint32_t digits[3] = {0, 0, 0};
  if (ndigits > 0 && !m_.Read(obj + l_.long_digits, digits, static_cast<size_t>(ndigits) * 4)) {
    return std::nullopt;
  }
  unsigned __int128 v = 0;
  for (int64_t i = ndigits - 1; i >= 0; --i) v = (v << 30) | (digits[i] & 0x3fffffff);
  if (v > static_cast<unsigned __int128>(INT64_MAX)) {
    // pthread idents are unsigned and can use all 64 bits: keep them when positive.
    if (!negative && v <= static_cast<unsigned __int128>(UINT64_MAX)) {
      return static_cast<int64_t>(static_cast<uint64_t>(v));
    }
    return std::nullopt;
  }
  return negative ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
}

std::optional<double> ObjectReader::Float(uint64_t obj) const {
  if (!obj || !a_.float_type || TypeOf(obj) != a_.float_type) return std::nullopt;
  double d;
  if (!m_.Read(obj + l_.float_value, &d, 8)) return std::nullopt;
  return d;
}

std::optional<std::vector<uint64_t>> ObjectReader::Tuple(uint64_t obj, size_t max) const {
  if (!obj || TypeOf(obj) != a_.tuple_type) return std::nullopt;
  int64_t size = 0;
  if (!m_.Read(obj + l_.ob_size, &size, 8) || size < 0 || static_cast<uint64_t>(size) > max) {
    return std::nullopt;
  }
  std::vector<uint64_t> items(static_cast<size_t>(size));
  if (size > 0 && !m_.Read(obj + l_.tuple_items, items.data(), items.size() * 8)) {
    return std::nullopt;
  }
  return items;
}

bool ObjectReader::KeyEquals(uint64_t key, std::string_view name) const {
  if (!key) return false;
  int64_t length = -1;
  if (!m_.Read(key + l_.str_length, &length, 8) ||
      length != static_cast<int64_t>(name.size())) {
    return false;
  }
  auto s = Str(key, name.size() + 1);
  return s && *s == name;
}

std::optional<uint64_t> ObjectReader::DictGet27(uint64_t dict, std::string_view name) const {
  int64_t mask = 0;
  uint64_t table = 0;
  if (!m_.Read(dict + l_.dict_keys, &mask, 8) || mask < 0 ||
      static_cast<uint64_t>(mask) >= kMaxDictEntries) {
    return std::nullopt;
  }
  table = ReadU64(m_, dict + l_.dict_values).value_or(0);
  if (!table) return std::nullopt;
  std::vector<uint64_t> entries(static_cast<size_t>(mask + 1) * 3);
  if (!m_.Read(table, entries.data(), entries.size() * 8)) return std::nullopt;
  for (size_t i = 0; i + 2 < entries.size(); i += 3) {
    if (entries[i + 2] && KeyEquals(entries[i + 1], name)) return entries[i + 2];
  }
  return std::nullopt;
}

std::optional<uint64_t> ObjectReader::DictGet36(uint64_t dict, std::string_view name) const {
  uint64_t keys = ReadU64(m_, dict + l_.dict_keys).value_or(0);
  uint64_t values = ReadU64(m_, dict + l_.dict_values).value_or(0);
  int64_t size = 0, nentries = 0;
  if (!keys || !m_.Read(keys + 8, &size, 8) || !m_.Read(keys + 32, &nentries, 8)) {
    return std::nullopt;
  }
  if (size <= 0 || size > static_cast<int64_t>(kMaxDictEntries) * 2 || nentries < 0 ||
      nentries > size) {
    return std::nullopt;
  }
  const uint64_t ixsize = size <= 0xff ? 1 : size <= 0xffff ? 2 : 4;
  const uint64_t entries = keys + 40 + static_cast<uint64_t>(size) * ixsize;
  std::vector<uint64_t> e(static_cast<size_t>(nentries) * 3);
  if (!e.empty() && !m_.Read(entries, e.data(), e.size() * 8)) return std::nullopt;
  for (size_t i = 0; i < static_cast<size_t>(nentries); ++i) {
    if (!KeyEquals(e[i * 3 + 1], name)) continue;
    if (values) return ReadU64(m_, values + i * 8);
    return e[i * 3 + 2];
  }
  return std::nullopt;
}

std::optional<size_t> ObjectReader::SharedKeyIndex(uint64_t keys, std::string_view name) const {
  uint8_t log2_index = 0, kind = 0;
  int64_t nentries = 0;
  if (!keys || !m_.Read(keys + 9, &log2_index, 1) || !m_.Read(keys + 10, &kind, 1) ||
      !m_.Read(keys + 24, &nentries, 8)) {
    return std::nullopt;
  }
  if (log2_index > 40 || nentries < 0 || nentries > static_cast<int64_t>(kMaxDictEntries)) {
    return std::nullopt;
  }
  const uint64_t entries = keys + 32 + (uint64_t{1} << log2_index);
  const size_t stride = kind == 0 ? 3 : 2;
  std::vector<uint64_t> e(static_cast<size_t>(nentries) * stride);
  if (!e.empty() && !m_.Read(entries, e.data(), e.size() * 8)) return std::nullopt;
  for (size_t i = 0; i < static_cast<size_t>(nentries); ++i) {
    if (KeyEquals(e[i * stride + (stride - 2)], name)) return i;
  }
  return std::nullopt;
}

std::optional<uint64_t> ObjectReader::DictGet311(uint64_t dict, std::string_view name) const {
  uint64_t keys = ReadU64(m_, dict + l_.dict_keys).value_or(0);
  uint64_t values = ReadU64(m_, dict + l_.dict_values).value_or(0);
  uint8_t log2_index = 0, kind = 0;
  int64_t nentries = 0;
  if (!keys || !m_.Read(keys + 9, &log2_index, 1) || !m_.Read(keys + 10, &kind, 1) ||
      !m_.Read(keys + 24, &nentries, 8)) {
    return std::nullopt;
  }
  if (log2_index > 40 || nentries < 0 || nentries > static_cast<int64_t>(kMaxDictEntries)) {
    return std::nullopt;
  }
  const uint64_t entries = keys + 32 + (uint64_t{1} << log2_index);
  const size_t stride = kind == 0 ? 3 : 2;  // general {hash, key, value}; unicode {key, value}
  std::vector<uint64_t> e(static_cast<size_t>(nentries) * stride);
  if (!e.empty() && !m_.Read(entries, e.data(), e.size() * 8)) return std::nullopt;
  for (size_t i = 0; i < static_cast<size_t>(nentries); ++i) {
    if (!KeyEquals(e[i * stride + (stride - 2)], name)) continue;
    if (values) return ReadU64(m_, values + l_.values_header + i * 8);
    return e[i * stride + (stride - 1)];
  }
  return std::nullopt;
}

std::optional<uint64_t> ObjectReader::DictGet(uint64_t dict, std::string_view name) const {
  if (!dict) return std::nullopt;
  uint64_t type = TypeOf(dict);
  if (!type || (a_.dict_type && type != a_.dict_type)) return std::nullopt;
  std::optional<uint64_t> v;
  switch (l_.dict_format) {
    case DictFormat::k27: v = DictGet27(dict, name); break;
    case DictFormat::k36: v = DictGet36(dict, name); break;
    case DictFormat::k311: v = DictGet311(dict, name); break;
  }
  if (v && *v == 0) return std::nullopt;
  return v;
}

std::optional<uint64_t> ObjectReader::GetAttr(uint64_t obj, std::string_view name) const {
  uint64_t type = TypeOf(obj);
  if (!type) return std::nullopt;
  uint64_t flags = ReadU64(m_, type + l_.tp_flags).value_or(0);
  auto from_values = [&](uint64_t values, uint64_t header) -> std::optional<uint64_t> {
    if (l_.ht_cached_keys < 0) return std::nullopt;
    uint64_t keys = ReadU64(m_, type + static_cast<uint32_t>(l_.ht_cached_keys)).value_or(0);
    auto i = SharedKeyIndex(keys, name);
    if (!i) return std::nullopt;
    auto v = ReadU64(m_, values + header + *i * 8);
    if (v && *v == 0) return std::nullopt;
    return v;
  };
  switch (l_.managed) {
    case ManagedDict::kNone:
      break;
    case ManagedDict::kValues311:
      if (flags & kTpflagsManagedDict) {
        uint64_t dict = ReadU64(m_, obj - 24).value_or(0);
        if (dict) return DictGet(dict, name);
        uint64_t values = ReadU64(m_, obj - 32).value_or(0);
        if (values) return from_values(values, 0);
        return std::nullopt;
      }
      break;
    case ManagedDict::kTagged312:
      if (flags & kTpflagsManagedDict) {
        // The values pointer is stored minus one (odd), a dict as itself (3.12 pycore_object.h).
        uint64_t dorv = ReadU64(m_, obj - 24).value_or(0);
        if (dorv & 1) return from_values(dorv + 1, 0);
        if (dorv) return DictGet(dorv, name);
        return std::nullopt;
      }
      break;
    case ManagedDict::kInline313:
      if (flags & kTpflagsManagedDict) {
        uint64_t dict = ReadU64(m_, obj + l_.managed_dict_offset).value_or(0);
        if (dict) return DictGet(dict, name);
      }
      if (flags & kTpflagsInlineValues) {
        int64_t basic = 0;
        if (!m_.Read(type + l_.tp_basicsize, &basic, 8) || basic <= 0 || basic > (1 << 16)) {
          return std::nullopt;
        }
        uint64_t values = obj + static_cast<uint64_t>(basic);
        if (ReadU8(m_, values + 3).value_or(0) == 0) return std::nullopt;  // not valid
        return from_values(values, l_.values_header);
      }
      if (flags & kTpflagsManagedDict) return std::nullopt;
      break;
  }
  int64_t dictoffset = 0;
  if (!m_.Read(type + l_.tp_dictoffset, &dictoffset, 8) || dictoffset <= 0 ||
      dictoffset > (1 << 16)) {
    return std::nullopt;
  }
  uint64_t dict = ReadU64(m_, obj + static_cast<uint64_t>(dictoffset)).value_or(0);
  return DictGet(dict, name);
}

std::optional<uint64_t> ObjectReader::BoundSelf(uint64_t obj, std::string* name) const {
  if (!obj) return std::nullopt;
  uint64_t type = TypeOf(obj);
  if (!type) return std::nullopt;
  std::string tn = TypeName(type);
  if ((a_.cfunction_type && type == a_.cfunction_type) || tn == "builtin_function_or_method" ||
      tn == "builtin_method") {
    if (name) {
      uint64_t ml = ReadU64(m_, obj + l_.cfunc_self - 8).value_or(0);  // m_ml precedes m_self
      uint64_t ml_name = ml ? ReadU64(m_, ml).value_or(0) : 0;
      *name = CString(ml_name, 64).value_or("");
    }
    return ReadU64(m_, obj + l_.cfunc_self);
  }
  if ((a_.method_type && type == a_.method_type) || tn == "method" || tn == "instancemethod") {
    if (name) {
      name->clear();
      // The function's name is on its code object; not needed by callers so far.
    }
    return ReadU64(m_, obj + l_.method_self);
  }
  return std::nullopt;
}

std::optional<uint64_t> ObjectReader::WeakrefTarget(uint64_t obj) const {
  if (!obj) return std::nullopt;
  uint64_t type = TypeOf(obj);
  if (!type) return std::nullopt;
  if (a_.weakref_type && type != a_.weakref_type) return std::nullopt;
  auto target = ReadU64(m_, obj + l_.weakref_object);
  if (!target || *target == a_.none) return std::nullopt;
  return target;
}

bool ObjectReader::IsMethodDescriptor(uint64_t obj, std::string* name) const {
  if (!obj) return false;
  uint64_t type = TypeOf(obj);
  if (!type || !(type == a_.method_descr_type || TypeName(type) == "method_descriptor")) {
    return false;
  }
  if (name) {
    uint64_t n = ReadU64(m_, obj + l_.descr_name).value_or(0);
    *name = Str(n, 64).value_or("");
  }
  return true;
}

bool ObjectReader::IsLock(uint64_t obj) const {
  std::string tn = TypeNameOf(obj);
  return tn == "_thread.lock" || tn == "thread.lock" || tn == "_thread.RLock" ||
         tn == "_RLock";
}

namespace {

// glibc's sem_t on 64-bit: the value is the low 32 bits of its first word (new_sem.data).
std::optional<bool> SemaphoreHeld(const MemoryReader& m, uint64_t sem) {
  if (!sem) return std::nullopt;
  auto v = ReadU32(m, sem);
  if (!v) return std::nullopt;
  return *v == 0;
}

}  // namespace

uint64_t ObjectReader::LockSemaphore(uint64_t obj) const {
  std::string tn = TypeNameOf(obj);
  if (tn == "_thread.lock" || tn == "thread.lock") {
    if (l_.minor >= 14 && l_.major == 3) return 0;
    if (l_.major == 3 && l_.minor == 13) {
      int64_t basic = 0;
      if (!m_.Read(TypeOf(obj) + l_.tp_basicsize, &basic, 8) || basic <= 24) return 0;  // PyMutex
    }
    return ReadU64(m_, obj + l_.lock_handle).value_or(0);
  }
  if (tn == "_thread.RLock") {
    if (l_.rlock_is_mutex) return 0;
    return ReadU64(m_, obj + l_.lock_handle).value_or(0);
  }
  return 0;
}

std::optional<LockInfo> ObjectReader::Lock(uint64_t obj) const {
  if (!obj) return std::nullopt;
  std::string tn = TypeNameOf(obj);
  LockInfo info;
  info.address = obj;
  info.type_name = tn;
  if (tn == "_thread.lock" || tn == "thread.lock") {
    info.type = LockType::kLock;
    uint64_t sem = LockSemaphore(obj);
    if (sem) {
      info.locked = SemaphoreHeld(m_, sem);
    } else if (auto b = ReadU8(m_, obj + l_.lock_handle)) {
      info.locked = (*b & 1) != 0;  // PyMutex: _Py_LOCKED
    }
    return info;
  }
  if (tn == "_thread.RLock") {
    info.type = LockType::kRLock;
    uint64_t owner = ReadU64(m_, obj + l_.rlock_owner).value_or(0);
    uint64_t count = ReadU64(m_, obj + l_.rlock_count).value_or(0);
    if (l_.rlock_is_mutex) {
      auto b = ReadU8(m_, obj + l_.lock_handle);
      info.locked = b ? std::optional<bool>((*b & 1) != 0) : std::nullopt;
      info.count = info.locked == true ? count + 1 : 0;  // `level` counts re-entries
    } else {
      info.count = count;
      info.locked = count > 0;
    }
    if (info.locked == true && owner) info.owner_ident = owner;
    return info;
  }
  if (tn == "_RLock") {
    // threading's Python RLock (2.7's only one): __block, __owner, __count.
    info.type = LockType::kRLock;
    const bool py2 = l_.major == 2;
    auto owner = GetAttr(obj, py2 ? "_RLock__owner" : "_owner");
    auto count = GetAttr(obj, py2 ? "_RLock__count" : "_count");
    if (count) {
      if (auto c = Int(*count)) info.count = static_cast<uint64_t>(std::max<int64_t>(*c, 0));
      info.locked = info.count > 0;
    }
    if (owner && *owner != a_.none) {
      if (auto id = Int(*owner); id && info.locked == true) info.owner_ident = *id;
    }
    return info;
  }
  return std::nullopt;
}

std::pair<std::string, std::string> ObjectReader::Describe(uint64_t obj) const {
  if (!obj) return {"NULL", ""};
  if (obj == a_.none) return {"NoneType", "None"};
  std::string type = TypeNameOf(obj);
  if (a_.bool_type && TypeOf(obj) == a_.bool_type) {
    return {type, obj == a_.true_obj ? "True" : "False"};
  }
  if (auto s = Str(obj, 80)) {
    std::string shown = "'";
    for (char c : *s) {
      if (c == '\'' || c == '\\') shown.push_back('\\');
      shown.push_back(c);
    }
    return {type, shown + "'"};
  }
  if (auto i = Int(obj)) return {type, std::to_string(*i)};
  if (auto d = Float(obj)) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", *d);
    return {type, buf};
  }
  return {type, ""};
}

}  // namespace threadscope::dump
