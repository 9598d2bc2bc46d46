// x86-64 decoding (capstone) for the two places threadscope reads machine code:
//   - finding static functions in stripped, LTO-built interpreters by following calls from
//     functions we can name (daemon/target/symbol_resolver.cc);
//   - telling, for each probe site, whether the kernel emulates its first instruction or has to
//     single-step it out of line (~0.4 us vs ~4 us per hit here, see docs/PERFORMANCE.md).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/target/budget.h"

namespace threadscope::target {

enum class ArgRegister { kRdi, kRsi, kRdx, kRcx };

struct Instruction {
  uint64_t address = 0;
  uint16_t size = 0;
  std::string mnemonic;
  std::string operands;
  bool is_call = false;
  bool is_jump = false;  // unconditional jmp (a tail call when it leaves the function)
  bool is_cond_jump = false;  // jcc
  bool is_ret = false;
  std::optional<uint64_t> branch_target;  // direct call/jmp/jcc target
  // The immediate operand, when the last operand is one ("test bl,0x1" -> 1).
  std::optional<int64_t> immediate;
  // The memory operand [base + disp] (no index), when there is one; `base` is an opaque
  // register number, equal for equal registers. lea reads it as an address, mov may write it.
  struct Memory {
    int base = 0;
    int64_t disp = 0;
    bool written = false;  // the instruction stores to it
  };
  std::optional<Memory> memory;
  // The register the first operand names when the instruction writes it ("lea rdi,[rbx+0x20]"),
  // as an opaque 64-bit register number (edi and rdi are the same); 0 when none.
  int dest_reg = 0;
  // The operand size of the first operand in bytes ("mov dword ptr [..],0" -> 4).
  uint8_t dest_size = 0;
  // Set when the instruction writes a constant or a RIP-relative address to an argument
  // register: "mov $0x679380,%edi", "lea 0x1234(%rip),%rdi".
  std::optional<ArgRegister> const_dest;
  uint64_t const_value = 0;
  // Set when it writes anything else to an argument register (the constant is then stale).
  std::optional<ArgRegister> clobbers;
  bool writes_rax = false;
  // Every general-purpose register it writes, one bit per GprIndex (a call's clobbers are not
  // listed: the callee's, not the instruction's).
  uint16_t gpr_writes = 0;
  // The register a reg-to-reg `mov` copies ("mov rbx,rdi": rdi), as an opaque 64-bit number
  // like dest_reg; 0 for anything else.
  int copy_source = 0;

  std::string ToString() const { return mnemonic + (operands.empty() ? "" : " " + operands); }
};

// No function of the interpreters here has more than 30k instructions (the largest,
// _PyEval_EvalFrameDefault of Debian's 3.14, is 84 KiB); a decode stops after this many.
inline constexpr size_t kMaxDecodedInstructions = size_t{1} << 18;

// One capstone handle. capstone handles are not thread-safe (each keeps its last error and
// decoding state), so each thread that plans (each attach) creates its own; they are cheap.
class Disassembler {
 public:
  static StatusOr<std::unique_ptr<Disassembler>> Create();
  ~Disassembler();
  Disassembler(const Disassembler&) = delete;
  Disassembler& operator=(const Disassembler&) = delete;

  // Decodes up to max_count instructions (0 = until the bytes run out or decoding fails), and
  // never more than kMaxDecodedInstructions; stops early once `budget` is spent.
  std::vector<Instruction> Decode(std::string_view code, uint64_t address, size_t max_count = 0,
                                  Budget* budget = nullptr) const;

 private:
  Disassembler() = default;
  size_t handle_ = 0;
};

// How the kernel (x86, 6.x) runs the instruction a uprobe replaces.
enum class UprobeSiteKind {
  kEmulated,       // branches, call, nop, push reg: handled in the trap, no single-step
  kOptimizedNop5,  // 5-byte nop: 6.18+ rewrites it into a call to the uprobe trampoline
  kSingleStepped,  // everything else: executed out of line with a single-step trap
};

// The opaque number Instruction::dest_reg and Instruction::Memory::base use for an argument
// register.
int RegisterNumber(ArgRegister reg);

// The hardware number (0 rax, 1 rcx, 2 rdx, 3 rbx, 4 rsp, 5 rbp, 6 rsi, 7 rdi, 8-15 r8-r15)
// of an opaque register number (dest_reg, Memory::base, copy_source), if it is a 64-bit GPR.
std::optional<int> GprIndex(int reg);
// And back: the opaque number of hardware GPR `index`.
int GprRegister(int index);

const char* UprobeSiteKindName(UprobeSiteKind kind);
// Classifies from the raw bytes of the probed instruction.
UprobeSiteKind ClassifyUprobeSite(std::string_view insn_bytes);

// Every direct call or jmp in `code`, with the constants the caller had loaded into the
// first four argument registers (cleared by any other write to them and by earlier calls).
// A linear sweep is enough for what we read this way: arguments set up right before a call.
struct CallSite {
  uint64_t address = 0;
  uint64_t target = 0;
  bool is_jump = false;  // jmp rather than call: a tail call when it leaves the function
  std::optional<uint64_t> args[4];
};
std::vector<CallSite> CallSites(const std::vector<Instruction>& code);

}  // namespace threadscope::target
