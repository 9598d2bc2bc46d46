// Functions as the machine code shows them, with or without symbols: where each one begins,
// which cold fragments belong to it, and who calls or jumps where.
//
// Why: LTO+PGO builds (Debian's 3.13-3.15) split every function into a hot part and cold
// fragments (`.text.unlikely`, merged into `.text` once stripped). A fragment has its own
// .eh_frame entry, so "the function around this address" is the fragment, which has no name
// and is never called: it is reached only by jumps from its function's hot part. The owner of
// a cold address is therefore the function whose hot part jumps into its fragment (never "the
// nearest endbr64 before it", which names an unrelated function).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "daemon/target/disasm.h"
#include "daemon/target/elf_file.h"

namespace threadscope::target {

struct CodeRange {
  uint64_t begin = 0;
  uint64_t end = 0;
  bool Contains(uint64_t a) const { return a >= begin && a < end; }
};

class CodeMap {
 public:
  CodeMap(const ElfFile& elf, const Disassembler& dis) : elf_(elf), dis_(dis) {}
  CodeMap(const CodeMap&) = delete;
  CodeMap& operator=(const CodeMap&) = delete;

  const ElfFile& elf() const { return elf_; }

  // The function or fragment holding vaddr: symbols first, then .eh_frame.
  std::optional<CodeRange> RangeAround(uint64_t vaddr) const;
  // True when `begin` starts a function rather than a fragment split off one: it has a name
  // (not "X.cold"), a direct call reaches it, its address is taken (method tables, type slots,
  // `lea`), or it is an endbr64 landing pad (CET builds mark every function that may be called, and no
  // fragment).
  bool IsEntry(uint64_t begin) const;
  // The entry of the function that owns vaddr: its own range's start, or for a fragment, the
  // entry of the function whose code jumps into it. nullopt outside any known code.
  std::optional<uint64_t> OwnerOf(uint64_t vaddr) const;
  // Every part of the function starting at `entry`: its range, then the fragments its code
  // jumps into.
  std::vector<CodeRange> PartsOf(uint64_t entry) const;
  // True when vaddr lies in one of the parts of the function at `entry`.
  bool InFunction(uint64_t entry, uint64_t vaddr) const;
  // Instructions of the range starting at `begin` (decoded once, cached).
  const std::vector<Instruction>& Code(uint64_t begin) const;
  // The jumps (jmp, jcc) from outside `r` into it, each checked to be an instruction.
  std::vector<uint64_t> JumpsInto(const CodeRange& r) const;
  // Direct calls and jumps of every part of the function at `entry`, with the constants the
  // caller loaded into argument registers.
  std::vector<CallSite> CallsOf(uint64_t entry) const;
  // Where a chain of unconditional jumps starting at `entry` ends (thunks, tail calls such as
  // PyEval_ReleaseThread -> _PyThreadState_Detach -> drop_gil), at most `hops` jumps; the
  // addresses passed, `entry` first.
  std::vector<uint64_t> JumpChain(uint64_t entry, int hops) const;
  // "take_gil", "PyEval_SaveThread+0x73", "_Py_HandlePending.cold+0x1a", "fn_0x56d520+0x4".
  std::string Describe(uint64_t vaddr) const;
  // The name of the function at `entry` ("fn_0x..." without symbols).
  std::string NameOf(uint64_t entry) const;

 private:
  void IndexBranches() const;
  std::optional<uint64_t> OwnerOfFragment(const CodeRange& r, int depth) const;
  bool IsBoundary(uint64_t vaddr) const;

  const ElfFile& elf_;
  const Disassembler& dis_;
  // Unverified rel32 call targets and jump sources by target (a byte scan of the code); enough
  // to tell entries from fragments and to find the jumps into a fragment, which are then
  // decoded to confirm them.
  mutable bool indexed_ = false;
  mutable std::unordered_set<uint64_t> call_targets_;
  mutable std::unordered_set<uint64_t> data_refs_;  // code addresses data holds or code takes
  mutable std::multimap<uint64_t, uint64_t> jumps_by_target_;
  mutable std::unordered_map<uint64_t, std::vector<Instruction>> code_;
  mutable std::unordered_map<uint64_t, std::optional<uint64_t>> owners_;
};

}  // namespace threadscope::target
