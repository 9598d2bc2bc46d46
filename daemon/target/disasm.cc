#include "daemon/target/disasm.h"

#include <capstone/capstone.h>

#include <algorithm>

namespace threadscope::target {

namespace {

std::optional<ArgRegister> ToArgRegister(unsigned reg) {
  switch (reg) {
    case X86_REG_RDI: case X86_REG_EDI: case X86_REG_DI: case X86_REG_DIL:
      return ArgRegister::kRdi;
    case X86_REG_RSI: case X86_REG_ESI: case X86_REG_SI: case X86_REG_SIL:
      return ArgRegister::kRsi;
    case X86_REG_RDX: case X86_REG_EDX: case X86_REG_DX: case X86_REG_DL: case X86_REG_DH:
      return ArgRegister::kRdx;
    case X86_REG_RCX: case X86_REG_ECX: case X86_REG_CX: case X86_REG_CL: case X86_REG_CH:
      return ArgRegister::kRcx;
    default:
      return std::nullopt;
  }
}

// The 64-bit register a register operand is part of (edi -> rdi), for comparing operands.
unsigned Widen(unsigned reg) {
  switch (reg) {
    case X86_REG_EAX: case X86_REG_AX: case X86_REG_AL: case X86_REG_AH: return X86_REG_RAX;
    case X86_REG_EBX: case X86_REG_BX: case X86_REG_BL: case X86_REG_BH: return X86_REG_RBX;
    case X86_REG_ECX: case X86_REG_CX: case X86_REG_CL: case X86_REG_CH: return X86_REG_RCX;
    case X86_REG_EDX: case X86_REG_DX: case X86_REG_DL: case X86_REG_DH: return X86_REG_RDX;
    case X86_REG_ESI: case X86_REG_SI: case X86_REG_SIL: return X86_REG_RSI;
    case X86_REG_EDI: case X86_REG_DI: case X86_REG_DIL: return X86_REG_RDI;
    case X86_REG_EBP: case X86_REG_BP: case X86_REG_BPL: return X86_REG_RBP;
    case X86_REG_ESP: case X86_REG_SP: case X86_REG_SPL: return X86_REG_RSP;
    case X86_REG_R8D: case X86_REG_R8W: case X86_REG_R8B: return X86_REG_R8;
    case X86_REG_R9D: case X86_REG_R9W: case X86_REG_R9B: return X86_REG_R9;
    case X86_REG_R10D: case X86_REG_R10W: case X86_REG_R10B: return X86_REG_R10;
    case X86_REG_R11D: case X86_REG_R11W: case X86_REG_R11B: return X86_REG_R11;
    case X86_REG_R12D: case X86_REG_R12W: case X86_REG_R12B: return X86_REG_R12;
    case X86_REG_R13D: case X86_REG_R13W: case X86_REG_R13B: return X86_REG_R13;
    case X86_REG_R14D: case X86_REG_R14W: case X86_REG_R14B: return X86_REG_R14;
    case X86_REG_R15D: case X86_REG_R15W: case X86_REG_R15B: return X86_REG_R15;
    default: return reg;
  }
}

}  // namespace

int RegisterNumber(ArgRegister reg) {
  switch (reg) {
    case ArgRegister::kRdi: return X86_REG_RDI;
    case ArgRegister::kRsi: return X86_REG_RSI;
    case ArgRegister::kRdx: return X86_REG_RDX;
    case ArgRegister::kRcx: return X86_REG_RCX;
  }
  return 0;
}

StatusOr<std::unique_ptr<Disassembler>> Disassembler::Create() {
  csh handle;
  if (cs_open(CS_ARCH_X86, CS_MODE_64, &handle) != CS_ERR_OK) {
    return InternalError("capstone: cannot open an x86-64 disassembler");
  }
  cs_option(handle, CS_OPT_DETAIL, CS_OPT_ON);
  std::unique_ptr<Disassembler> d(new Disassembler());
  d->handle_ = handle;
  return d;
}

Disassembler::~Disassembler() {
  csh handle = handle_;
  cs_close(&handle);
}

std::vector<Instruction> Disassembler::Decode(std::string_view code, uint64_t address,
                                              size_t max_count, Budget* budget) const {
  std::vector<Instruction> out;
  size_t limit = max_count == 0 ? kMaxDecodedInstructions
                                : std::min(max_count, kMaxDecodedInstructions);
  // One cs_insn (with its ~1.7 KB of detail) reused for every instruction: cs_disasm would
  // allocate one per instruction of the whole range up front.
  cs_insn* ci = cs_malloc(handle_);
  if (ci == nullptr) return out;
  const uint8_t* p = reinterpret_cast<const uint8_t*>(code.data());
  size_t left = code.size();
  uint64_t pc = address;
  constexpr size_t kChargeEvery = 256;
  while (out.size() < limit && cs_disasm_iter(handle_, &p, &left, &pc, ci)) {
    if (out.size() % kChargeEvery == 0 && !Charge(budget, kChargeEvery, "decoding functions")) {
      break;
    }
    Instruction in;
    in.address = ci->address;
    in.size = ci->size;
    in.mnemonic = ci->mnemonic;
    in.operands = ci->op_str;
    const cs_x86& x86 = ci->detail->x86;
    for (uint8_t g = 0; g < ci->detail->groups_count; ++g) {
      switch (ci->detail->groups[g]) {
        case X86_GRP_CALL: in.is_call = true; break;
        case X86_GRP_RET: in.is_ret = true; break;
        case X86_GRP_JUMP:
          in.is_jump = ci->id == X86_INS_JMP;
          in.is_cond_jump = ci->id != X86_INS_JMP && ci->id != X86_INS_LJMP;
          break;
        default: break;
      }
    }
    if (x86.op_count > 0 && x86.operands[x86.op_count - 1].type == X86_OP_IMM) {
      in.immediate = x86.operands[x86.op_count - 1].imm;
    }
    for (uint8_t o = 0; o < x86.op_count; ++o) {
      const cs_x86_op& op = x86.operands[o];
      if (op.type != X86_OP_MEM || op.mem.index != X86_REG_INVALID ||
          op.mem.base == X86_REG_INVALID || op.mem.base == X86_REG_RIP) {
        continue;
      }
      in.memory = Instruction::Memory{static_cast<int>(Widen(op.mem.base)), op.mem.disp,
                                      (op.access & CS_AC_WRITE) != 0};
      break;
    }
    if (x86.op_count > 0) {
      const cs_x86_op& first = x86.operands[0];
      in.dest_size = first.size;
      if (first.type == X86_OP_REG && (first.access & CS_AC_WRITE)) {
        in.dest_reg = static_cast<int>(Widen(first.reg));
      }
    }
    if (x86.op_count == 1 && x86.operands[0].type == X86_OP_IMM &&
        (in.is_call || in.mnemonic[0] == 'j')) {
      in.branch_target = static_cast<uint64_t>(x86.operands[0].imm);
    }
    // Constants loaded into argument registers.
    if (x86.op_count == 2 && x86.operands[0].type == X86_OP_REG) {
      auto dest = ToArgRegister(x86.operands[0].reg);
      if (dest && ci->id == X86_INS_MOV && x86.operands[1].type == X86_OP_IMM) {
        in.const_dest = dest;
        in.const_value = static_cast<uint64_t>(x86.operands[1].imm);
      } else if (dest && ci->id == X86_INS_LEA && x86.operands[1].type == X86_OP_MEM &&
                 x86.operands[1].mem.base == X86_REG_RIP && x86.operands[1].mem.index ==
                                                                X86_REG_INVALID) {
        in.const_dest = dest;
        in.const_value = ci->address + ci->size + static_cast<uint64_t>(x86.operands[1].mem.disp);
      }
    }
    cs_regs read, written;
    uint8_t nread = 0, nwritten = 0;
    if (cs_regs_access(handle_, ci, read, &nread, written, &nwritten) == CS_ERR_OK) {
      for (uint8_t w = 0; w < nwritten; ++w) {
        unsigned reg = written[w];
        if (reg == X86_REG_RAX || reg == X86_REG_EAX || reg == X86_REG_AX || reg == X86_REG_AL ||
            reg == X86_REG_AH) {
          in.writes_rax = true;
        }
        if (auto r = ToArgRegister(reg); r && !in.const_dest && !in.clobbers) in.clobbers = r;
        if (auto g = GprIndex(static_cast<int>(Widen(reg)))) in.gpr_writes |= 1u << *g;
      }
    }
    if (ci->id == X86_INS_MOV && x86.op_count == 2 && x86.operands[0].type == X86_OP_REG &&
        x86.operands[1].type == X86_OP_REG && x86.operands[0].size == 8 &&
        x86.operands[1].size == 8) {
      in.copy_source = static_cast<int>(Widen(x86.operands[1].reg));
    }
    out.push_back(std::move(in));
  }
  cs_free(ci, 1);
  return out;
}

namespace {
constexpr unsigned kGprs[16] = {X86_REG_RAX, X86_REG_RCX, X86_REG_RDX, X86_REG_RBX,
                                X86_REG_RSP, X86_REG_RBP, X86_REG_RSI, X86_REG_RDI,
                                X86_REG_R8,  X86_REG_R9,  X86_REG_R10, X86_REG_R11,
                                X86_REG_R12, X86_REG_R13, X86_REG_R14, X86_REG_R15};
}  // namespace

std::optional<int> GprIndex(int reg) {
  for (int i = 0; i < 16; ++i) {
    if (static_cast<int>(kGprs[i]) == reg) return i;
  }
  return std::nullopt;
}

int GprRegister(int index) {
  return index >= 0 && index < 16 ? static_cast<int>(kGprs[index]) : 0;
}

const char* UprobeSiteKindName(UprobeSiteKind kind) {
  switch (kind) {
    case UprobeSiteKind::kEmulated: return "emulated";
    case UprobeSiteKind::kOptimizedNop5: return "optimized-nop5";
    case UprobeSiteKind::kSingleStepped: return "single-stepped";
  }
  return "single-stepped";
}

UprobeSiteKind ClassifyUprobeSite(std::string_view bytes) {
  // Mirrors arch/x86/kernel/uprobes.c: branch_setup_xol_ops() emulates jmp/call/jcc/nop (any
  // 0x66 operand-size prefix disqualifies), push_setup_xol_ops() emulates "push reg" with at
  // most a 0x41 REX prefix; 6.18 optimizes the 5-byte nop. The rest is single-stepped.
  auto b = [&](size_t i) -> int {
    return i < bytes.size() ? static_cast<uint8_t>(bytes[i]) : -1;
  };
  if (bytes.size() >= 5 && b(0) == 0x0f && b(1) == 0x1f && b(2) == 0x44 && b(3) == 0 && b(4) == 0) {
    return UprobeSiteKind::kOptimizedNop5;
  }
  size_t i = 0;
  bool has_66 = false;
  while (i < bytes.size()) {
    int p = b(i);
    if (p == 0x66) {
      has_66 = true;
    } else if (!(p == 0xf2 || p == 0xf3 || p == 0x2e || p == 0x3e || p == 0x26 || p == 0x64 ||
                 p == 0x65 || p == 0x36)) {
      break;
    }
    ++i;
  }
  int rex = -1;
  if (b(i) >= 0x40 && b(i) <= 0x4f) rex = b(i++);
  int op = b(i);
  if (op >= 0x50 && op <= 0x57 && i <= 1 && (rex == -1 || rex == 0x41) && !has_66) {
    return UprobeSiteKind::kEmulated;
  }
  bool branch = op == 0xeb || op == 0xe9 || op == 0xe8 || op == 0x90 || (op >= 0x70 && op <= 0x7f) ||
                (op == 0x0f && b(i + 1) >= 0x80 && b(i + 1) <= 0x8f);
  if (branch && !has_66) return UprobeSiteKind::kEmulated;
  return UprobeSiteKind::kSingleStepped;
}

std::vector<CallSite> CallSites(const std::vector<Instruction>& code) {
  std::vector<CallSite> out;
  std::optional<uint64_t> regs[4];
  for (const auto& in : code) {
    if ((in.is_call || in.is_jump) && in.branch_target) {
      CallSite site;
      site.address = in.address;
      site.target = *in.branch_target;
      site.is_jump = in.is_jump;
      for (int r = 0; r < 4; ++r) site.args[r] = regs[r];
      out.push_back(site);
    }
    if (in.is_call) {
      for (auto& r : regs) r.reset();  // argument registers are caller-saved
    } else if (in.const_dest) {
      regs[static_cast<int>(*in.const_dest)] = in.const_value;
    } else if (in.clobbers) {
      regs[static_cast<int>(*in.clobbers)].reset();
    }
  }
  return out;
}

}  // namespace threadscope::target
