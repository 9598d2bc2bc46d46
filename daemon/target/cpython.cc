#include "daemon/target/cpython.h"

#include <cctype>
#include <cstring>
#include <regex>
#include <set>

namespace threadscope::target {

std::string PythonVersion::ToString() const {
  std::string s = std::to_string(major) + "." + std::to_string(minor);
  if (micro >= 0) s += "." + std::to_string(micro);
  return s + suffix;
}

std::optional<PythonVersion> ParsePythonVersion(std::string_view text) {
  static const std::regex kRe(R"(^([23])\.(\d{1,2})(?:\.(\d{1,2}))?((?:a|b|rc)\d+)?(\+)?$)");
  std::cmatch m;
  if (!std::regex_match(text.begin(), text.end(), m, kRe)) return std::nullopt;
  PythonVersion v;
  v.major = std::stoi(m[1]);
  v.minor = std::stoi(m[2]);
  if (m[3].matched) v.micro = std::stoi(m[3]);
  if (m[4].matched) v.suffix += m[4].str();
  if (m[5].matched) v.suffix += "+";
  return v;
}

std::optional<PythonVersion> VersionFromFileName(std::string_view basename) {
  static const std::regex kRe(R"(^(?:lib)?python([23])\.(\d{1,2})[a-z]*(?:\.so.*|-.*)?$)");
  std::cmatch m;
  if (!std::regex_match(basename.begin(), basename.end(), m, kRe)) return std::nullopt;
  PythonVersion v;
  v.major = std::stoi(m[1]);
  v.minor = std::stoi(m[2]);
  return v;
}

bool IsLibpythonName(std::string_view basename) {
  static const std::regex kRe(R"(^libpython[23]\.\d{1,2}[a-z]*\.so(\.[0-9.]+)?$)");
  return std::regex_match(basename.begin(), basename.end(), kRe);
}

bool DefinesCPythonRuntime(const ElfFile& elf) {
  for (const char* name : {"Py_Initialize", "PyEval_SaveThread", "Py_GetVersion"}) {
    auto sym = elf.FindSymbol(name);
    if (!sym || !sym->is_function) return false;
  }
  return true;
}

StatusOr<PythonVersion> DetectPythonVersion(const ElfFile& elf, const Disassembler& dis,
                                            std::string_view basename) {
  // 3.11+: const unsigned long Py_Version = PY_VERSION_HEX.
  if (auto sym = elf.FindSymbol("Py_Version"); sym && !sym->is_function) {
    std::string_view raw = elf.BytesAt(sym->value, 4);
    if (raw.size() == 4) {
      uint32_t hex;
      std::memcpy(&hex, raw.data(), 4);
      PythonVersion v;
      v.major = static_cast<int>(hex >> 24);
      v.minor = static_cast<int>((hex >> 16) & 0xff);
      v.micro = static_cast<int>((hex >> 8) & 0xff);
      int level = static_cast<int>((hex >> 4) & 0xf);
      int serial = static_cast<int>(hex & 0xf);
      if (level == 0xa) v.suffix = "a" + std::to_string(serial);
      if (level == 0xb) v.suffix = "b" + std::to_string(serial);
      if (level == 0xc) v.suffix = "rc" + std::to_string(serial);
      if (v.major == 3 || v.major == 2) return v;
    }
  }
  // Older: Py_GetVersion() formats "%.80s (%.80s) %.80s" with PY_VERSION as the 4th argument.
  if (auto sym = elf.FindSymbol("Py_GetVersion"); sym && sym->is_function) {
    for (const auto& site : CallSites(DecodeFunction(elf, dis, sym->value, 256))) {
      if (!site.args[2] || !site.args[3]) continue;
      auto format = elf.CStringAt(*site.args[2]);
      if (!format || format->rfind("%.80s", 0) != 0) continue;
      if (auto text = elf.CStringAt(*site.args[3])) {
        if (auto v = ParsePythonVersion(*text)) return *v;
      }
    }
  }
  if (auto v = VersionFromFileName(basename)) return *v;
  return FailedPreconditionError("cannot tell which CPython version " + elf.path() + " is");
}

std::vector<MethodTable> FindMethodTables(const ElfFile& elf) {
  // A record: name -> identifier string in read-only data, function -> code, small flags,
  // doc -> NULL or a string (read-only data; 3.6 and 3.7 keep docstrings in writable .data:
  // PyDoc_STRVAR was `static char[]`). Consecutive records (stride 32) form a table.
  auto is_identifier = [](const std::string& s) {
    if (s.empty() || s.size() > 64) return false;
    for (char c : s) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
    }
    return true;
  };
  std::vector<MethodTable> tables;
  for (const ElfSection* sec : elf.PointerDataSections()) {
    MethodTable current;
    uint64_t expect_next = 0;
    for (uint64_t addr = (sec->addr + 7) & ~uint64_t{7}; addr + 32 <= sec->addr + sec->size;
         addr += 8) {
      auto name_ptr = elf.PointerAt(addr);
      if (!name_ptr || !elf.IsReadOnlyData(*name_ptr)) continue;
      auto fn = elf.PointerAt(addr + 8);
      if (!fn || !elf.IsText(*fn)) continue;
      std::string_view flag_bytes = elf.BytesAt(addr + 16, 4);
      if (flag_bytes.size() != 4) continue;
      uint32_t flags;
      std::memcpy(&flags, flag_bytes.data(), 4);
      if (flags >= 1024) continue;
      auto doc = elf.PointerAt(addr + 24);
      if (doc && *doc != 0 && !elf.IsReadOnlyData(*doc) && !elf.CStringAt(*doc, 1 << 16)) {
        continue;
      }
      auto name = elf.CStringAt(*name_ptr, 80);
      if (!name || !is_identifier(*name)) continue;
      if (addr != expect_next && !current.empty()) {
        tables.push_back(std::move(current));
        current.clear();
      }
      current.push_back({addr, *name, *fn, static_cast<int>(flags)});
      expect_next = addr + 32;
      addr += 24;  // the loop adds the last 8
    }
    if (!current.empty()) tables.push_back(std::move(current));
  }
  return tables;
}

std::optional<uint64_t> FindMethod(const std::vector<MethodTable>& tables, std::string_view method,
                                   const std::vector<std::string_view>& siblings) {
  for (const auto& table : tables) {
    std::optional<uint64_t> found;
    size_t matched = 0;
    for (const auto& def : table) {
      if (def.name == method) found = def.function;
      for (auto s : siblings) matched += def.name == s;
    }
    if (found && matched >= siblings.size()) return found;
  }
  return std::nullopt;
}

const MethodTable* FindMethodTable(const std::vector<MethodTable>& tables,
                                   const std::vector<std::string_view>& siblings) {
  for (const auto& table : tables) {
    size_t matched = 0;
    for (auto name : siblings) {
      for (const auto& def : table) matched += def.name == name;
    }
    if (matched >= siblings.size()) return &table;
  }
  return nullptr;
}

std::optional<uint64_t> FindTypeNew(const ElfFile& elf, uint64_t methods_table) {
  constexpr int32_t kPyTpMethods = 64, kPyTpNew = 65;
  auto slot_at = [&](uint64_t addr) -> std::optional<std::pair<int32_t, uint64_t>> {
    std::string_view raw = elf.BytesAt(addr, 4);
    auto ptr = elf.PointerAt(addr + 8);
    if (raw.size() != 4 || !ptr) return std::nullopt;
    int32_t slot;
    std::memcpy(&slot, raw.data(), 4);
    return std::make_pair(slot, *ptr);
  };
  for (const ElfSection* sec : elf.PointerDataSections()) {
    for (uint64_t a = (sec->addr + 7) & ~uint64_t{7}; a + 16 <= sec->addr + sec->size; a += 8) {
      auto ptr = elf.PointerAt(a);
      if (!ptr || *ptr != methods_table) continue;
      // Heap type: {int slot; void* pfunc} records; this one is {Py_tp_methods, table}.
      if (auto here = slot_at(a - 8); here && here->first == kPyTpMethods) {
        for (int dir : {-1, 1}) {
          for (uint64_t r = a - 8 + static_cast<int64_t>(dir) * 16;; r += dir * 16) {
            auto rec = slot_at(r);
            if (!rec || rec->first <= 0 || rec->first > 100) break;
            if (rec->first == kPyTpNew && elf.IsText(rec->second)) return rec->second;
          }
        }
      }
      // Static type: tp_methods at +232 of PyTypeObject, tp_new at +312.
      if (auto tp_new = elf.PointerAt(a + 80); tp_new && elf.IsText(*tp_new)) {
        auto name = elf.PointerAt(a - 208);
        if (name && elf.IsReadOnlyData(*name)) return *tp_new;
      }
    }
  }
  return std::nullopt;
}

std::vector<Instruction> DecodeFunction(const ElfFile& elf, const Disassembler& dis, uint64_t vaddr,
                                        uint64_t fallback_len) {
  uint64_t len = fallback_len;
  if (auto extent = elf.FunctionExtent(vaddr)) len = extent->second - extent->first;
  std::string_view bytes = elf.BytesAt(vaddr, len);
  while (bytes.empty() && len > 16) {  // near the end of the text segment
    len /= 2;
    bytes = elf.BytesAt(vaddr, len);
  }
  return dis.Decode(bytes, vaddr);
}

std::vector<ResolvedCall> FindCallsByName(const ElfFile& elf, const Disassembler& dis,
                                          uint64_t function, std::string_view callee, int depth) {
  std::vector<ResolvedCall> out;
  std::set<uint64_t> visited;
  std::vector<std::pair<uint64_t, int>> work{{function, depth}};
  while (!work.empty()) {
    auto [fn, left] = work.back();
    work.pop_back();
    if (!visited.insert(fn).second) continue;
    for (const auto& site : CallSites(DecodeFunction(elf, dis, fn))) {
      auto name = elf.NameAt(site.target);
      if (name && *name == callee) {
        out.push_back({fn, site});
        continue;
      }
      // Follow calls into functions of this binary that are not exported (static helpers);
      // exported functions are named entry points we would have found directly.
      bool is_plt = elf.PltStubName(site.target).has_value();
      auto sym = elf.FunctionContaining(site.target);
      bool exported = sym && sym->is_global;
      if (left > 0 && !is_plt && !exported && elf.IsText(site.target) &&
          elf.FunctionExtent(site.target)) {
        work.emplace_back(site.target, left - 1);
      }
    }
  }
  return out;
}

std::vector<ImportCallSite> FindImportCallSites(const ElfFile& elf, const Disassembler& dis,
                                                std::string_view name) {
  std::vector<ImportCallSite> out;
  std::optional<uint64_t> direct = elf.PltStubFor(name);
  if (!direct) {
    if (auto sym = elf.FindSymbol(name); sym && sym->is_function) direct = sym->value;
  }
  std::optional<uint64_t> got = elf.GotSlotFor(name);
  if (!direct && !got) return out;

  std::set<uint64_t> candidates;
  for (const auto& sec : elf.sections()) {
    if (!(sec.flags & 0x4 /* SHF_EXECINSTR */) || sec.type != 1 /* SHT_PROGBITS */) continue;
    if (sec.name.rfind(".plt", 0) == 0) continue;  // the stubs themselves
    std::string_view text = elf.BytesAt(sec.addr, sec.size);
    for (size_t i = 0; i + 5 <= text.size(); ++i) {
      uint8_t op = static_cast<uint8_t>(text[i]);
      if (direct && (op == 0xe8 || op == 0xe9)) {
        int32_t rel;
        std::memcpy(&rel, text.data() + i + 1, 4);
        if (sec.addr + i + 5 + static_cast<int64_t>(rel) == *direct) candidates.insert(sec.addr + i);
      } else if (got && op == 0xff && i + 6 <= text.size() &&
                 (static_cast<uint8_t>(text[i + 1]) == 0x15 ||
                  static_cast<uint8_t>(text[i + 1]) == 0x25)) {
        int32_t rel;
        std::memcpy(&rel, text.data() + i + 2, 4);
        if (sec.addr + i + 6 + static_cast<int64_t>(rel) == *got) candidates.insert(sec.addr + i);
      }
    }
  }
  // Keep only candidates that are real instruction boundaries of a known function.
  for (uint64_t addr : candidates) {
    auto fn = elf.FunctionAround(addr);
    if (!fn) continue;
    std::string_view bytes = elf.BytesAt(fn->first, fn->second - fn->first);
    auto code = dis.Decode(bytes, fn->first);
    for (size_t k = 0; k < code.size(); ++k) {
      if (code[k].address != addr) continue;
      if (!code[k].is_call && !code[k].is_jump) break;
      ImportCallSite site;
      site.call = addr;
      site.function = fn->first;
      site.tail = code[k].is_jump;
      if (!site.tail) {
        // Walk forward to the first emulated instruction (typically the jcc after
        // "cmp $-1,%eax"), as long as nothing writes rax and control does not leave.
        for (size_t j = k + 1; j < code.size() && j < k + 8; ++j) {
          std::string_view ib = elf.BytesAt(code[j].address, code[j].size);
          if (ClassifyUprobeSite(ib) == UprobeSiteKind::kEmulated) {
            if (!code[j].is_call) site.return_site = code[j].address;
            break;
          }
          if (code[j].writes_rax || code[j].is_ret || code[j].is_call || code[j].is_jump) break;
        }
      }
      out.push_back(site);
      break;
    }
  }
  return out;
}

}  // namespace threadscope::target
