#include "daemon/target/pymutex.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

namespace threadscope::target {

namespace {

constexpr int kRax = 0, kRcx = 1, kRdx = 2, kRsp = 4, kRsi = 6, kRdi = 7;
// Registers a call may change (System V x86-64).
constexpr uint16_t kCallerSaved = (1u << kRax) | (1u << kRcx) | (1u << kRdx) | (1u << kRsi) |
                                  (1u << kRdi) | (1u << 8) | (1u << 9) | (1u << 10) | (1u << 11);
constexpr int kPyTpMethods = 64;
constexpr std::string_view kEndbr64("\xf3\x0f\x1e\xfa", 4);

UprobeSiteKind KindOf(const ElfFile& elf, const Instruction& in) {
  return ClassifyUprobeSite(elf.BytesAt(in.address, in.size));
}

// The decoded instructions of the range holding `vaddr`, and the index of `vaddr` in them.
struct Located {
  const std::vector<Instruction>* code = nullptr;
  size_t index = 0;
};
std::optional<Located> Locate(const CodeMap& code, uint64_t vaddr) {
  auto r = code.RangeAround(vaddr);
  if (!r) return std::nullopt;
  const auto& insns = code.Code(r->begin);
  for (size_t i = 0; i < insns.size(); ++i) {
    if (insns[i].address == vaddr) return Located{&insns, i};
    if (insns[i].address > vaddr) break;
  }
  return std::nullopt;
}

// Whether any branch of the function at `entry` lands in (from, to]: code reached again there
// (a loop) would hit a probe more than once per call.
bool BranchesInto(const CodeMap& code, uint64_t entry, uint64_t from, uint64_t to) {
  for (const auto& part : code.PartsOf(entry)) {
    for (const auto& in : code.Code(part.begin)) {
      if (in.branch_target && !in.is_call && *in.branch_target > from && *in.branch_target <= to) {
        return true;
      }
    }
  }
  return false;
}

// Does the instruction set `gpr` to the constant -1 ("mov rsi,-1", "or rsi,-1")?
bool SetsMinusOne(const Instruction& in, int gpr) {
  if (!in.dest_reg || GprIndex(in.dest_reg) != gpr || !in.immediate || *in.immediate != -1) {
    return false;
  }
  return in.mnemonic == "mov" || in.mnemonic == "or";
}

std::set<uint64_t> CallTargetsOf(const CodeMap& code, const ElfFile& elf, const char* name) {
  std::set<uint64_t> out;
  auto sym = elf.FindSymbol(name);
  if (!sym || !sym->is_function) return out;
  for (const auto& c : code.CallsOf(sym->value)) out.insert(c.target);
  return out;
}

std::optional<std::pair<int32_t, uint64_t>> SlotAt(const ElfFile& elf, uint64_t addr) {
  std::string_view raw = elf.BytesAt(addr, 4);
  auto ptr = elf.PointerAt(addr + 8);
  if (raw.size() != 4 || !ptr) return std::nullopt;
  int32_t slot;
  std::memcpy(&slot, raw.data(), 4);
  return std::make_pair(slot, *ptr);
}

bool PlausibleSlot(const std::optional<std::pair<int32_t, uint64_t>>& s) {
  return s && s->first > 0 && s->first <= 100;
}

// The address of the {Py_tp_methods, table} record of a heap type's slot array.
std::optional<uint64_t> MethodsSlot(const ElfFile& elf, uint64_t methods_table) {
  for (const auto& [start, end] : elf.PointerDataRanges()) {
    for (uint64_t a = (start + 7) & ~uint64_t{7}; a + 8 <= end; a += 8) {
      auto ptr = elf.PointerAt(a);
      if (!ptr || *ptr != methods_table) continue;
      if (auto here = SlotAt(elf, a - 8); here && here->first == kPyTpMethods) return a - 8;
    }
  }
  return std::nullopt;
}

}  // namespace

StatusOr<ParkingLotSites> FindParkingLotSites(const ElfFile& elf, const Disassembler& dis,
                                              const CodeMap& code) {
  auto wait = elf.FindSymbol("_PySemaphore_Wait");
  if (!wait || !wait->is_function) {
    return NotFoundError(elf.path() + " has no _PySemaphore_Wait (no parking lot before 3.13)");
  }
  ParkingLotSites out;
  // The bucket lock's slow paths: by name where the binary has symbols; else the functions the
  // exported park calls that wait (or wake) with nothing but constant arguments (a park copy
  // passes its caller's timeout).
  std::set<uint64_t> raw;
  for (const char* name : {"_PyRawMutex_LockSlow", "_PyRawMutex_UnlockSlow"}) {
    if (auto sym = elf.FindSymbol(name); sym && sym->is_function) raw.insert(sym->value);
  }
  std::set<uint64_t> park_callees = CallTargetsOf(code, elf, "_PyParkingLot_Park");

  auto waits = FindImportCallSites(elf, dis, "_PySemaphore_Wait");
  // Wait calls per owner, to tell the raw lock (only constant -1 timeouts) from park copies.
  std::map<uint64_t, std::vector<std::pair<const ImportCallSite*, bool>>> by_owner;
  for (const auto& site : waits) {
    uint64_t owner = code.OwnerOf(site.call).value_or(site.function);
    bool minus_one = false;
    if (auto at = Locate(code, site.call)) {
      for (size_t k = at->index; k-- > 0 && at->index - k <= 12;) {
        const Instruction& in = (*at->code)[k];
        if (in.is_call || in.is_jump || in.is_ret) break;
        if (in.gpr_writes & (1u << kRsi)) {
          minus_one = SetsMinusOne(in, kRsi);
          break;
        }
      }
    }
    by_owner[owner].push_back({&site, minus_one});
  }
  if (raw.empty()) {
    for (const auto& [owner, sites] : by_owner) {
      bool all_constant = std::all_of(sites.begin(), sites.end(),
                                      [](const auto& s) { return s.second; });
      if (park_callees.count(owner) && all_constant) raw.insert(owner);
    }
  }
  for (const auto& [owner, sites] : by_owner) {
    for (const auto& [site, minus_one] : sites) {
      if (raw.count(owner)) {
        ++out.raw_waits;
        continue;
      }
      ParkCallSite p;
      p.call = site->call;
      p.return_site = site->return_site;
      p.function = owner;
      p.retry = minus_one;
      out.parks.push_back(p);
    }
  }
  std::sort(out.parks.begin(), out.parks.end(),
            [](const ParkCallSite& a, const ParkCallSite& b) { return a.call < b.call; });

  // Wakes: the raw unlock is the other function the exported park calls that wakes.
  std::set<uint64_t> raw_unlock;
  for (const auto& site : FindImportCallSites(elf, dis, "_PySemaphore_Wakeup")) {
    uint64_t owner = code.OwnerOf(site.call).value_or(site.function);
    bool is_raw = raw.count(owner) > 0;
    if (!is_raw && park_callees.count(owner) && !elf.FindSymbol("_PyRawMutex_UnlockSlow")) {
      is_raw = true;
      raw_unlock.insert(owner);
    }
    if (is_raw) {
      ++out.raw_wakes;
    } else {
      out.unparks.push_back(site.call);
    }
  }
  std::sort(out.unparks.begin(), out.unparks.end());
  raw.insert(raw_unlock.begin(), raw_unlock.end());
  out.raw_functions.assign(raw.begin(), raw.end());
  return out;
}

std::optional<uint64_t> FindTypeSlot(const ElfFile& elf, uint64_t methods_table, int slot) {
  auto at = MethodsSlot(elf, methods_table);
  if (!at) return std::nullopt;
  for (int dir : {-1, 1}) {
    for (uint64_t r = *at + static_cast<int64_t>(dir) * 16;; r += dir * 16) {
      auto rec = SlotAt(elf, r);
      if (!PlausibleSlot(rec)) break;
      if (rec->first == slot && elf.IsText(rec->second)) return rec->second;
    }
  }
  return std::nullopt;
}

std::optional<TypeSpec> FindTypeSpec(const ElfFile& elf, uint64_t methods_table) {
  auto at = MethodsSlot(elf, methods_table);
  if (!at) return std::nullopt;
  uint64_t slots = *at;
  while (PlausibleSlot(SlotAt(elf, slots - 16))) slots -= 16;
  for (const auto& [start, end] : elf.PointerDataRanges()) {
    for (uint64_t a = (start + 7) & ~uint64_t{7}; a + 8 <= end; a += 8) {
      auto ptr = elf.PointerAt(a);
      if (!ptr || *ptr != slots || a < 24) continue;
      uint64_t spec = a - 24;
      auto name_ptr = elf.PointerAt(spec);
      std::string_view raw = elf.BytesAt(spec + 8, 12);
      if (!name_ptr || raw.size() != 12) continue;
      auto name = elf.CStringAt(*name_ptr, 128);
      if (!name || name->find('.') == std::string::npos) continue;
      TypeSpec out;
      out.address = spec;
      out.name = *name;
      std::memcpy(&out.basicsize, raw.data(), 4);
      std::memcpy(&out.itemsize, raw.data() + 4, 4);
      std::memcpy(&out.flags, raw.data() + 8, 4);
      if (out.basicsize <= 0 || out.basicsize > 4096) continue;
      return out;
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> LockType::Method(std::string_view name) const {
  if (!methods) return std::nullopt;
  for (const auto& def : *methods) {
    if (def.name == name) return def.function;
  }
  return std::nullopt;
}

LockType FindLockType(const ElfFile& elf, const std::vector<MethodTable>& tables, bool rlock) {
  LockType out;
  std::vector<std::string_view> siblings =
      rlock ? std::vector<std::string_view>{"_release_save", "_acquire_restore", "_is_owned"}
            : std::vector<std::string_view>{"acquire_lock", "release_lock", "locked_lock"};
  out.methods = FindMethodTable(tables, siblings);
  if (!out.methods || out.methods->empty()) return out;
  uint64_t table = out.methods->front().address;
  out.spec = FindTypeSpec(elf, table);
  out.tp_new = FindTypeSlot(elf, table, kPyTpNew);
  out.tp_dealloc = FindTypeSlot(elf, table, kPyTpDealloc);
  return out;
}

bool LockIsPyMutex(const LockType& type, bool rlock, const PythonVersion& v, bool free_threaded) {
  if (type.spec) {
    // {PyObject_HEAD; PyMutex lock} / {PyObject_HEAD; _PyRecursiveMutex {mutex, thread, level}}
    int header = free_threaded ? 32 : 16;
    return type.spec->basicsize == header + (rlock ? 24 : 8);
  }
  if (rlock) return v.AtLeast(3, 14);
  return v.AtLeast(3, 14) || (v.Is(3, 13) && v.micro >= 1);
}

std::optional<SelfSite> FindSelfSite(const ElfFile& elf, const CodeMap& code, uint64_t entry) {
  auto range = code.RangeAround(entry);
  if (!range || range->begin != entry) return std::nullopt;
  const auto& insns = code.Code(entry);
  size_t k = 0;
  if (!insns.empty() && elf.BytesAt(entry, 4) == kEndbr64) k = 1;
  // Registers holding self + adjust.
  std::map<int, int64_t> holders{{kRdi, 0}};
  for (size_t end = std::min<size_t>(insns.size(), k + 40); k < end; ++k) {
    const Instruction& in = insns[k];
    if (KindOf(elf, in) == UprobeSiteKind::kEmulated) {
      if (BranchesInto(code, entry, entry, in.address)) return std::nullopt;
      std::optional<SelfSite> best;
      for (const auto& [gpr, adjust] : holders) {
        if (adjust < 0 || adjust > 255 || gpr == kRsp) continue;
        if (!best || adjust < static_cast<int64_t>(best->adjust)) {
          best = SelfSite{in.address, gpr, static_cast<uint32_t>(adjust)};
        }
      }
      return best;
    }
    if (in.is_ret || in.is_call || in.is_jump || in.is_cond_jump) return std::nullopt;
    std::map<int, int64_t> next = holders;
    for (int g = 0; g < 16; ++g) {
      if (in.gpr_writes & (1u << g)) next.erase(g);
    }
    auto dest = in.dest_reg ? GprIndex(in.dest_reg) : std::nullopt;
    if (dest) {
      auto src = in.copy_source ? GprIndex(in.copy_source) : std::nullopt;
      if (src && holders.count(*src)) {
        next[*dest] = holders.at(*src);  // mov rbx, rdi
      } else if (in.mnemonic == "lea" && in.memory && GprIndex(in.memory->base) &&
                 holders.count(*GprIndex(in.memory->base))) {
        next[*dest] = holders.at(*GprIndex(in.memory->base)) + in.memory->disp;  // lea r,[rdi+16]
      } else if ((in.mnemonic == "add" || in.mnemonic == "sub") && in.immediate &&
                 holders.count(*dest) && !in.memory) {
        next[*dest] = holders.at(*dest) + (in.mnemonic == "add" ? *in.immediate : -*in.immediate);
      }
    }
    holders = std::move(next);
    if (holders.empty()) return std::nullopt;
  }
  return std::nullopt;
}

std::vector<PromotedCopy> FindPromotedCopies(const ElfFile& elf, const CodeMap& code,
                                             uint64_t method, uint32_t mutex_off,
                                             uint64_t py_true, uint64_t py_false) {
  std::vector<PromotedCopy> out;
  if (method > 0x7fffffff) return out;  // a PIE compares against a register, not an imm32
  uint8_t needle[4];
  uint32_t imm = static_cast<uint32_t>(method);
  std::memcpy(needle, &imm, 4);
  std::set<uint64_t> guards;
  for (const auto& sec : elf.sections()) {
    if (!(sec.flags & 0x4 /* SHF_EXECINSTR */) || sec.type != 1 /* SHT_PROGBITS */) continue;
    if (sec.name.rfind(".plt", 0) == 0) continue;
    std::string_view text = elf.BytesAt(sec.addr, sec.size);
    for (size_t i = 3; i + 4 <= text.size(); ++i) {
      if (std::memcmp(text.data() + i, needle, 4) != 0) continue;
      // cmp r64, imm32: REX.W 81 /7 id (imm at +3), or cmp rax, imm32: REX.W 3D id (at +2).
      for (size_t back : {size_t{3}, size_t{2}}) {
        uint64_t at = sec.addr + i - back;
        auto found = Locate(code, at);
        if (!found) continue;
        const Instruction& in = (*found->code)[found->index];
        if (in.mnemonic == "cmp" && in.immediate && static_cast<uint64_t>(*in.immediate) == method &&
            in.size == back + 4) {
          guards.insert(at);
        }
      }
    }
  }
  for (uint64_t g : guards) {
    auto found = Locate(code, g);
    if (!found || found->index + 1 >= found->code->size()) continue;
    const auto& insns = *found->code;
    const Instruction& branch = insns[found->index + 1];
    if (!branch.is_cond_jump || !branch.branch_target) continue;
    PromotedCopy copy;
    copy.guard = g;
    copy.function = code.OwnerOf(g).value_or(g);
    if (branch.mnemonic == "jne") {
      copy.copy_start = branch.address + branch.size;
    } else if (branch.mnemonic == "je") {
      copy.copy_start = *branch.branch_target;
    } else {
      continue;
    }
    auto start = Locate(code, copy.copy_start);
    if (!start) {
      copy.problem = "the copy's code could not be decoded";
      out.push_back(copy);
      continue;
    }
    const auto& cc = *start->code;
    // self: the register of the copy's first access to [reg + mutex_off], unchanged since the
    // copy began. The probe: the first emulated instruction of the copy, with that register
    // still unchanged there.
    std::optional<int> self;
    uint16_t written = 0;
    size_t use = start->index;
    for (size_t k = start->index; k < cc.size() && k < start->index + 64; ++k) {
      const Instruction& in = cc[k];
      if (in.memory && !in.memory->written && in.memory->disp == mutex_off) {
        auto base = GprIndex(in.memory->base);
        if (base && !(written & (1u << *base))) {
          self = base;
          use = k;
          break;
        }
      }
      written |= in.gpr_writes;
      if (in.is_call) written |= kCallerSaved;
      if (in.is_jump || in.is_ret) break;
    }
    if (!self) {
      copy.problem = "no access to the lock's mutex found in the copy";
      out.push_back(copy);
      continue;
    }
    written = 0;
    for (size_t k = start->index; k < cc.size() && k <= use + 16; ++k) {
      const Instruction& in = cc[k];
      if (KindOf(elf, in) == UprobeSiteKind::kEmulated && !(written & (1u << *self))) {
        if (!BranchesInto(code, copy.function, copy.copy_start, in.address)) {
          copy.entry = SelfSite{in.address, *self, 0};
        }
        break;
      }
      written |= in.gpr_writes;
      if (in.is_call) written |= kCallerSaved;
      if (written & (1u << *self)) break;
    }
    if (!copy.entry) copy.problem = "no emulated instruction holds the lock object in the copy";
    if (py_true && py_false && py_true <= 0xffffffff && py_false <= 0xffffffff) {
      // The result: every `mov r32, Py_True|Py_False` of the copy's range, and where each one
      // continues (its fall-through, or the jmp right after it). The copy's result site is
      // the nearest point after the copy's start that both a True and a False reach with the
      // same register, and that nothing else reaches.
      std::map<uint64_t, std::vector<std::pair<const Instruction*, bool>>> joins;  // by successor
      for (size_t k = 0; k + 1 < cc.size(); ++k) {
        const Instruction& in = cc[k];
        if (in.mnemonic != "mov" || !in.immediate || !in.dest_reg) continue;
        bool is_true = static_cast<uint64_t>(*in.immediate) == py_true;
        bool is_false = static_cast<uint64_t>(*in.immediate) == py_false;
        if (!is_true && !is_false) continue;
        const Instruction& next = cc[k + 1];
        uint64_t succ = next.is_jump && next.branch_target ? *next.branch_target : next.address;
        joins[succ].push_back({&in, is_true});
      }
      for (const auto& [x, mats] : joins) {
        if (x <= copy.copy_start) continue;
        bool t = false, f = false, same_reg = true;
        for (const auto& [in, is_true] : mats) {
          (is_true ? t : f) = true;
          same_reg &= in->dest_reg == mats.front().first->dest_reg;
        }
        if (!t || !f || !same_reg) continue;
        // Exclusive: jumps to x come only from a materialization's jmp, and what falls into x
        // is a materialization (or nothing falls in).
        std::set<uint64_t> allowed;
        for (const auto& [in, is_true] : mats) allowed.insert(in->address);
        bool exclusive = true;
        for (size_t k = 0; k < cc.size(); ++k) {
          const Instruction& in = cc[k];
          if (in.branch_target == x && !in.is_call) {
            exclusive &= k > 0 && allowed.count(cc[k - 1].address) && in.is_jump;
          }
          if (k + 1 < cc.size() && cc[k + 1].address == x && !in.is_jump && !in.is_ret) {
            exclusive &= allowed.count(in.address) > 0;
          }
        }
        if (!exclusive) continue;
        copy.result_site = x;
        copy.result_gpr = GprIndex(mats.front().first->dest_reg).value_or(-1);
        break;
      }
      if (!copy.result_site && copy.problem.empty()) {
        copy.problem = "no result site shared only by the copy's True and False results";
      }
    }
    out.push_back(copy);
  }
  return out;
}

std::vector<CriticalSectionSite> FindCriticalSectionSites(const ElfFile& elf, const CodeMap& code,
                                                          const PythonVersion& version) {
  std::vector<CriticalSectionSite> out;
  // 3.15 (gh-140795) passes the thread state first.
  const bool tstate_first = version.AtLeast(3, 15);
  struct Fn {
    const char* name;
    bool two;
  };
  for (const Fn& fn : {Fn{"_PyCriticalSection_BeginSlow", false},
                       Fn{"_PyCriticalSection2_BeginSlow", true}}) {
    auto sym = elf.FindSymbol(fn.name);
    if (!sym || !sym->is_function) continue;
    CriticalSectionSite site;
    site.entry = sym->value;
    site.name = fn.name;
    site.mutex_gpr = tstate_first ? kRdx : kRsi;
    if (fn.two) site.mutex2_gpr = tstate_first ? kRcx : kRdx;
    // A default build's copy is a bare `ret`: nothing to probe.
    const auto& insns = code.Code(sym->value);
    size_t first = !insns.empty() && elf.BytesAt(sym->value, 4) == kEndbr64 ? 1 : 0;
    if (insns.size() <= first || insns[first].is_ret) continue;
    // Verify: the registers holding the mutex at the end of the straight-line prologue (it is
    // kept in a callee-saved one across calls), and the call of PyMutex_Lock (or of
    // _PyMutex_LockTimed) whose argument was last set from one of those.
    uint16_t holders = 1u << site.mutex_gpr;
    size_t k = 0;
    for (; k < insns.size(); ++k) {
      const Instruction& in = insns[k];
      if (in.is_jump || in.is_cond_jump || in.is_ret) break;
      if (in.is_call) {
        holders &= static_cast<uint16_t>(~kCallerSaved);
        continue;
      }
      uint16_t next = holders & static_cast<uint16_t>(~in.gpr_writes);
      auto src = in.copy_source ? GprIndex(in.copy_source) : std::nullopt;
      auto dest = in.dest_reg ? GprIndex(in.dest_reg) : std::nullopt;
      if (src && dest && (holders & (1u << *src))) next |= 1u << *dest;
      holders = next;
    }
    constexpr uint16_t kCalleeSaved = (1u << 3) | (1u << 5) | (1u << 12) | (1u << 13) |
                                      (1u << 14) | (1u << 15);
    holders &= kCalleeSaved;
    for (size_t c = k; c < insns.size() && !site.verified; ++c) {
      const Instruction& in = insns[c];
      if (!in.is_call || !in.branch_target) continue;
      std::string callee = elf.NameAt(*in.branch_target).value_or("");
      if (auto stub = elf.PltStubName(*in.branch_target)) callee = *stub;
      if (callee != "PyMutex_Lock" && callee != "_PyMutex_LockTimed") continue;
      for (size_t b = c; b-- > k;) {
        const Instruction& set = insns[b];
        if (!(set.gpr_writes & (1u << kRdi))) continue;
        auto src = set.copy_source ? GprIndex(set.copy_source) : std::nullopt;
        site.verified = src && (holders & (1u << *src));
        break;
      }
    }
    out.push_back(site);
  }
  return out;
}

}  // namespace threadscope::target
