#include "daemon/target/code_map.h"

#include <cstdio>
#include <cstring>
#include <set>

namespace threadscope::target {

namespace {

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

constexpr char kEndbr64[] = "\xf3\x0f\x1e\xfa";

bool IsColdName(const std::string& name) { return name.find(".cold") != std::string::npos; }

}  // namespace

std::optional<CodeRange> CodeMap::RangeAround(uint64_t vaddr) const {
  auto r = elf_.FunctionAround(vaddr);
  if (!r) return std::nullopt;
  return CodeRange{r->first, r->second};
}

void CodeMap::IndexBranches() const {
  if (indexed_) return;
  indexed_ = true;
  for (const auto& sec : elf_.sections()) {
    if (!(sec.flags & 0x4 /* SHF_EXECINSTR */) || sec.type != 1 /* SHT_PROGBITS */) continue;
    if (sec.name.rfind(".plt", 0) == 0) continue;
    std::string_view text = elf_.BytesAt(sec.addr, sec.size);
    for (size_t i = 0; i + 5 <= text.size(); ++i) {
      uint8_t op = static_cast<uint8_t>(text[i]);
      // Addresses code takes: `lea reg,[rip+disp]` (PIC), `mov r32,imm32` (non-PIE).
      if ((op == 0x48 || op == 0x4c) && i + 7 <= text.size() &&
          static_cast<uint8_t>(text[i + 1]) == 0x8d &&
          (static_cast<uint8_t>(text[i + 2]) & 0xc7) == 0x05) {
        int32_t disp;
        std::memcpy(&disp, text.data() + i + 3, 4);
        uint64_t target = sec.addr + i + 7 + static_cast<int64_t>(disp);
        if (elf_.IsText(target)) data_refs_.insert(target);
      } else if (op >= 0xb8 && op <= 0xbf) {
        uint32_t imm;
        std::memcpy(&imm, text.data() + i + 1, 4);
        if (elf_.IsText(imm)) data_refs_.insert(imm);
      }
      size_t len = 0;
      if (op == 0xe8 || op == 0xe9) {
        len = 5;
      } else if (op == 0x0f && i + 6 <= text.size() && (static_cast<uint8_t>(text[i + 1]) & 0xf0) == 0x80) {
        len = 6;
      } else {
        continue;
      }
      int32_t rel;
      std::memcpy(&rel, text.data() + i + len - 4, 4);
      uint64_t source = sec.addr + i;
      uint64_t target = source + len + static_cast<int64_t>(rel);
      if (!elf_.IsText(target)) continue;
      if (op == 0xe8) {
        call_targets_.insert(target);
      } else {
        jumps_by_target_.emplace(target, source);
      }
    }
  }
  // Only bytes the file has, each once (section headers can claim any size and overlap).
  for (const auto& [sec_start, sec_end] : elf_.PointerDataRanges()) {
    if (sec_start > UINT64_MAX - 7) continue;
    for (const auto& [start, end] : elf_.FileBackedRanges((sec_start + 7) & ~uint64_t{7}, sec_end)) {
      for (uint64_t a = start; end - a >= 8 && a >= start; a += 8) {
        if (auto p = elf_.PointerAt(a); p && elf_.IsText(*p)) data_refs_.insert(*p);
      }
    }
  }
}

bool CodeMap::IsEntry(uint64_t begin) const {
  if (auto name = elf_.NameAt(begin)) return !IsColdName(*name);
  if (elf_.BytesAt(begin, 4) == std::string_view(kEndbr64, 4)) return true;
  IndexBranches();
  return call_targets_.count(begin) > 0 || data_refs_.count(begin) > 0;
}

const std::vector<Instruction>& CodeMap::Code(uint64_t begin) const {
  auto it = code_.find(begin);
  if (it != code_.end()) return it->second;
  std::vector<Instruction> code;
  if (auto r = RangeAround(begin); r && r->begin == begin) {
    code = dis_.Decode(elf_.BytesAt(r->begin, r->end - r->begin), r->begin, 0, elf_.budget());
  }
  return code_.emplace(begin, std::move(code)).first->second;
}

bool CodeMap::IsBoundary(uint64_t vaddr) const {
  auto r = RangeAround(vaddr);
  if (!r) return false;
  for (const auto& in : Code(r->begin)) {
    if (in.address == vaddr) return true;
    if (in.address > vaddr) break;
  }
  return false;
}

std::vector<uint64_t> CodeMap::JumpsInto(const CodeRange& r) const {
  IndexBranches();
  std::vector<uint64_t> out;
  for (auto it = jumps_by_target_.lower_bound(r.begin);
       it != jumps_by_target_.end() && it->first < r.end; ++it) {
    if (!r.Contains(it->second) && IsBoundary(it->second)) out.push_back(it->second);
  }
  return out;
}

std::optional<uint64_t> CodeMap::OwnerOfFragment(const CodeRange& r, int depth) const {
  if (auto name = elf_.NameAt(r.begin); name && IsColdName(*name)) {
    // "take_gil.cold" (symbols): the owner is named after it.
    if (auto owner = elf_.FindSymbol(name->substr(0, name->find(".cold")));
        owner && owner->is_function) {
      return owner->value;
    }
  }
  // The function that jumps into it. GCC shares a fragment between a function and the copies
  // of it inlined elsewhere (a lone `call abort`): several owners, none of them the owner.
  std::set<uint64_t> owners;
  for (uint64_t source : JumpsInto(r)) {
    auto from = RangeAround(source);
    if (!from) continue;
    if (IsEntry(from->begin)) {
      owners.insert(from->begin);
      continue;
    }
    if (depth > 0) {
      if (auto o = OwnerOfFragment(*from, depth - 1); o && *o != r.begin) {
        owners.insert(*o);
        continue;
      }
    }
    // Code nothing else jumps into is a function, however it is reached (we could not tell).
    bool reached = false;
    for (uint64_t s : JumpsInto(*from)) reached |= !r.Contains(s);
    if (!reached) owners.insert(from->begin);
  }
  if (owners.size() == 1) return *owners.begin();
  return std::nullopt;
}

std::optional<uint64_t> CodeMap::OwnerOf(uint64_t vaddr) const {
  auto r = RangeAround(vaddr);
  if (!r) return std::nullopt;
  auto cached = owners_.find(r->begin);
  if (cached != owners_.end()) return cached->second;
  std::optional<uint64_t> owner = r->begin;
  if (!IsEntry(r->begin)) {
    // A fragment: whoever jumps into it. A range nobody jumps into is taken as its own function.
    if (auto o = OwnerOfFragment(*r, 2)) owner = o;
  }
  owners_[r->begin] = owner;
  return owner;
}

std::vector<CodeRange> CodeMap::PartsOf(uint64_t entry) const {
  std::vector<CodeRange> parts;
  auto hot = RangeAround(entry);
  if (!hot) return parts;
  parts.push_back(*hot);
  std::set<uint64_t> seen{hot->begin};
  for (const auto& in : Code(hot->begin)) {
    if (!(in.is_jump || in.is_cond_jump) || !in.branch_target || hot->Contains(*in.branch_target)) {
      continue;
    }
    auto r = RangeAround(*in.branch_target);
    if (!r || !seen.insert(r->begin).second) continue;
    // A jump to another function's entry is a tail call; into a fragment, it is this
    // function's cold code.
    if (IsEntry(r->begin)) continue;
    if (OwnerOf(r->begin) == entry) parts.push_back(*r);
  }
  return parts;
}

bool CodeMap::InFunction(uint64_t entry, uint64_t vaddr) const {
  for (const auto& p : PartsOf(entry)) {
    if (p.Contains(vaddr)) return true;
  }
  return false;
}

std::vector<CallSite> CodeMap::CallsOf(uint64_t entry) const {
  std::vector<CallSite> out;
  for (const auto& part : PartsOf(entry)) {
    auto calls = CallSites(Code(part.begin));
    out.insert(out.end(), calls.begin(), calls.end());
  }
  return out;
}

std::vector<uint64_t> CodeMap::JumpChain(uint64_t entry, int hops) const {
  std::vector<uint64_t> chain{entry};
  uint64_t at = entry;
  for (int i = 0; i < hops; ++i) {
    const auto& code = Code(at);
    // A thunk: at most an endbr64 and register moves before its one jump.
    std::optional<uint64_t> next;
    for (size_t k = 0; k < code.size() && k < 12; ++k) {
      const auto& in = code[k];
      if (in.is_call || in.is_ret || in.is_cond_jump) break;
      if (in.is_jump) {
        if (in.branch_target && !RangeAround(at)->Contains(*in.branch_target)) {
          next = in.branch_target;
        }
        break;
      }
    }
    if (!next || !RangeAround(*next) || RangeAround(*next)->begin != *next) break;
    chain.push_back(*next);
    at = *next;
  }
  return chain;
}

std::string CodeMap::NameOf(uint64_t entry) const {
  if (auto name = elf_.NameAt(entry)) return *name;
  return "fn_" + Hex(entry);
}

std::string CodeMap::Describe(uint64_t vaddr) const {
  auto r = RangeAround(vaddr);
  if (!r) return Hex(vaddr);
  std::string base;
  if (auto name = elf_.NameAt(r->begin)) {
    base = *name;
  } else if (auto owner = OwnerOf(r->begin); owner && *owner != r->begin) {
    base = NameOf(*owner) + ".cold";
  } else {
    base = NameOf(r->begin);
  }
  return vaddr == r->begin ? base : base + "+" + Hex(vaddr - r->begin);
}

}  // namespace threadscope::target
