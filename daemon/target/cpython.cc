#include "daemon/target/cpython.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <regex>
#include <map>
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
  size_t records = 0;
  // Only bytes the file has, each once: section headers can claim any size and overlap.
  for (const auto& [sec_start, sec_end] : elf.PointerDataRanges()) {
    if (sec_start > UINT64_MAX - 7) continue;
    for (const auto& [start, end] : elf.FileBackedRanges((sec_start + 7) & ~uint64_t{7}, sec_end)) {
      MethodTable current;
      uint64_t expect_next = 0;
      for (uint64_t addr = start; end - addr >= 32 && addr >= start; addr += 8) {
        if (!Charge(elf.budget(), 1, "looking for PyMethodDef tables")) return tables;
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
        // Stripped 3.6/3.7 keep docstrings in writable .data: a readable string is a doc too.
        if (doc && *doc != 0 && !elf.IsReadOnlyData(*doc) && !elf.CStringAt(*doc, 1 << 16)) {
          continue;
        }
        auto name = elf.CStringAt(*name_ptr, 80);
        if (!name || !is_identifier(*name)) continue;
        if (addr != expect_next && !current.empty()) {
          tables.push_back(std::move(current));
          current.clear();
        }
        if (++records > kMaxMethodDefs) break;
        current.push_back({addr, *name, *fn, static_cast<int>(flags)});
        expect_next = addr + 32;
        addr += 24;  // the loop adds the last 8
      }
      if (!current.empty()) tables.push_back(std::move(current));
      if (records > kMaxMethodDefs) return tables;
    }
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
  // CPython defines 83 slot ids (3.14); a slot array is never longer than that.
  constexpr int kMaxSlots = 128;
  auto slot_at = [&](uint64_t addr) -> std::optional<std::pair<int32_t, uint64_t>> {
    std::string_view raw = elf.BytesAt(addr, 4);
    auto ptr = elf.PointerAt(addr + 8);
    if (raw.size() != 4 || !ptr) return std::nullopt;
    int32_t slot;
    std::memcpy(&slot, raw.data(), 4);
    return std::make_pair(slot, *ptr);
  };
  for (const auto& [sec_start, sec_end] : elf.PointerDataRanges()) {
    if (sec_start > UINT64_MAX - 7) continue;
    for (const auto& [start, end] : elf.FileBackedRanges((sec_start + 7) & ~uint64_t{7}, sec_end)) {
      for (uint64_t a = start; end - a >= 16 && a >= start; a += 8) {
        if (!Charge(elf.budget(), 1, "looking for the lock type")) return std::nullopt;
        auto ptr = elf.PointerAt(a);
        if (!ptr || *ptr != methods_table) continue;
        // Heap type: {int slot; void* pfunc} records; this one is {Py_tp_methods, table}.
        if (auto here = slot_at(a - 8); here && here->first == kPyTpMethods) {
          for (int64_t dir : {-16, 16}) {
            uint64_t r = a - 8;
            for (int n = 0; n < kMaxSlots; ++n) {
              r += static_cast<uint64_t>(dir);
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
  }
  return std::nullopt;
}

std::vector<Instruction> DecodeFunction(const ElfFile& elf, const Disassembler& dis, uint64_t vaddr,
                                        uint64_t fallback_len) {
  uint64_t len = fallback_len;
  if (auto extent = elf.FunctionExtent(vaddr)) len = extent->second - extent->first;
  // Symbol sizes and .eh_frame ranges are the binary's word: decode what the file has, and
  // never more than any real function needs.
  std::string_view bytes = elf.FileBytesAt(vaddr, std::min(len, kMaxFunctionBytes));
  return dis.Decode(bytes, vaddr, 0, elf.budget());
}

std::vector<ResolvedCall> FindCallsByName(const ElfFile& elf, const Disassembler& dis,
                                          uint64_t function, std::string_view callee, int depth) {
  std::vector<ResolvedCall> out;
  std::set<uint64_t> visited;
  std::vector<std::pair<uint64_t, int>> work{{function, depth}};
  while (!work.empty() && visited.size() < kMaxFunctionsFollowed) {
    auto [fn, left] = work.back();
    work.pop_back();
    if (!visited.insert(fn).second) continue;
    if (elf.budget() && elf.budget()->exhausted()) break;
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

ImportCallSites FindImportCallSitesBounded(const ElfFile& elf, const Disassembler& dis,
                                           std::string_view name, size_t max_sites) {
  ImportCallSites out;
  std::optional<uint64_t> direct = elf.PltStubFor(name);
  if (!direct) {
    if (auto sym = elf.FindSymbol(name); sym && sym->is_function) direct = sym->value;
  }
  std::optional<uint64_t> got = elf.GotSlotFor(name);
  if (!direct && !got) return out;
  auto cut = [&](std::string why) {
    if (!out.truncated) out.truncated_reason = std::move(why);
    out.truncated = true;
  };

  // Candidates: call/jmp rel32 to the stub or the function, call/jmp *rel32(%rip) through its
  // GOT slot, anywhere in the code but the stubs themselves. Each code byte is scanned once.
  std::vector<std::pair<uint64_t, uint64_t>> code;
  for (const auto& sec : elf.sections()) {
    if (!(sec.flags & 0x4 /* SHF_EXECINSTR */) || sec.type != 1 /* SHT_PROGBITS */) continue;
    if (sec.name.rfind(".plt", 0) == 0) continue;
    uint64_t end = sec.size > UINT64_MAX - sec.addr ? UINT64_MAX : sec.addr + sec.size;
    code.emplace_back(sec.addr, end);
  }
  std::sort(code.begin(), code.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const auto& r : code) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  std::vector<uint64_t> candidates;
  for (const auto& [sec_start, sec_end] : merged) {
    for (const auto& [start, end] : elf.FileBackedRanges(sec_start, sec_end)) {
      std::string_view text = elf.FileBytesAt(start, end - start);
      if (!Charge(elf.budget(), text.size() / 8 + 1, "searching for call sites")) return out;
      for (size_t i = 0; i + 5 <= text.size() && candidates.size() <= kMaxCallCandidates; ++i) {
        uint8_t op = static_cast<uint8_t>(text[i]);
        uint64_t at = start + i;
        if (direct && (op == 0xe8 || op == 0xe9)) {
          int32_t rel;
          std::memcpy(&rel, text.data() + i + 1, 4);
          if (at + 5 + static_cast<uint64_t>(int64_t{rel}) == *direct) candidates.push_back(at);
        } else if (got && op == 0xff && i + 6 <= text.size() &&
                   (static_cast<uint8_t>(text[i + 1]) == 0x15 ||
                    static_cast<uint8_t>(text[i + 1]) == 0x25)) {
          int32_t rel;
          std::memcpy(&rel, text.data() + i + 2, 4);
          if (at + 6 + static_cast<uint64_t>(int64_t{rel}) == *got) candidates.push_back(at);
        }
      }
    }
  }
  if (candidates.size() > kMaxCallCandidates) {
    candidates.resize(kMaxCallCandidates);
    cut("more than " + std::to_string(kMaxCallCandidates) + " byte patterns look like calls to " +
        std::string(name));
  }

  // Keep only candidates that are real instruction boundaries of a known function, decoding
  // each function once however many candidates it holds.
  std::map<std::pair<uint64_t, uint64_t>, std::vector<uint64_t>> by_function;
  for (uint64_t addr : candidates) {
    if (auto fn = elf.FunctionAround(addr)) by_function[*fn].push_back(addr);
  }
  uint64_t decoded = 0;
  for (const auto& [fn, addrs] : by_function) {
    uint64_t len = std::min(fn.second - fn.first, kMaxFunctionBytes);
    if (decoded + len > kMaxCallSearchBytes) {
      cut("the functions calling " + std::string(name) + " exceed " +
          std::to_string(kMaxCallSearchBytes >> 20) + " MiB");
      break;
    }
    decoded += len;
    auto insns = dis.Decode(elf.FileBytesAt(fn.first, len), fn.first, 0, elf.budget());
    if (elf.budget() && elf.budget()->exhausted()) return out;
    for (uint64_t addr : addrs) {
      auto it = std::lower_bound(insns.begin(), insns.end(), addr,
                                 [](const Instruction& in, uint64_t a) { return in.address < a; });
      if (it == insns.end() || it->address != addr) continue;
      if (!it->is_call && !it->is_jump) continue;
      size_t k = static_cast<size_t>(it - insns.begin());
      ImportCallSite site;
      site.call = addr;
      site.function = fn.first;
      site.tail = insns[k].is_jump;
      if (!site.tail) {
        // Walk forward to the first emulated instruction (typically the jcc after
        // "cmp $-1,%eax"), as long as nothing writes rax and control does not leave.
        for (size_t j = k + 1; j < insns.size() && j < k + 8; ++j) {
          std::string_view ib = elf.BytesAt(insns[j].address, insns[j].size);
          if (ClassifyUprobeSite(ib) == UprobeSiteKind::kEmulated) {
            if (!insns[j].is_call) site.return_site = insns[j].address;
            break;
          }
          if (insns[j].writes_rax || insns[j].is_ret || insns[j].is_call || insns[j].is_jump) {
            break;
          }
        }
      }
      out.sites.push_back(site);
    }
  }
  std::sort(out.sites.begin(), out.sites.end(),
            [](const ImportCallSite& a, const ImportCallSite& b) { return a.call < b.call; });
  out.sites.erase(std::unique(out.sites.begin(), out.sites.end(),
                              [](const ImportCallSite& a, const ImportCallSite& b) {
                                return a.call == b.call;
                              }),
                  out.sites.end());
  if (out.sites.size() > max_sites) {
    out.sites.resize(max_sites);
    cut(std::to_string(max_sites) + " call sites of " + std::string(name) +
        " kept; the binary has more");
  }
  return out;
}

std::vector<ImportCallSite> FindImportCallSites(const ElfFile& elf, const Disassembler& dis,
                                                std::string_view name) {
  return FindImportCallSitesBounded(elf, dis, name).sites;
}

}  // namespace threadscope::target
