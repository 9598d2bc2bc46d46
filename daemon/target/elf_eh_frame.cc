// .eh_frame: the extents of functions a stripped binary no longer names (DWARF call frame
// information, the one table every x86-64 build keeps for unwinding). Bounds-checked like the
// rest of ElfFile (elf_file.cc), and bounded in entries (ElfLimits::max_fdes).
#include <elf.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "daemon/target/elf_file.h"

namespace threadscope::target {

namespace {

uint64_t SaturatingEnd(uint64_t start, uint64_t len) {
  return len > UINT64_MAX - start ? UINT64_MAX : start + len;
}

// Reads a DWARF EH pointer (DW_EH_PE_*) at d[*pos]; `pc` is the vaddr of d[*pos] (for pcrel).
bool ReadEhPointer(std::string_view d, size_t* pos, uint8_t enc, uint64_t pc, uint64_t* out) {
  if (enc == 0xff) return false;  // DW_EH_PE_omit
  size_t n = 0;
  bool is_signed = false;
  switch (enc & 0x0f) {
    case 0x00: n = 8; break;                    // absptr
    case 0x02: n = 2; break;                    // udata2
    case 0x03: n = 4; break;                    // udata4
    case 0x04: n = 8; break;                    // udata8
    case 0x0a: n = 2; is_signed = true; break;  // sdata2
    case 0x0b: n = 4; is_signed = true; break;  // sdata4
    case 0x0c: n = 8; break;                    // sdata8
    default: return false;  // uleb/sleb pointers do not occur in x86-64 FDEs
  }
  if (*pos > d.size() || d.size() - *pos < n) return false;
  uint64_t v = 0;
  std::memcpy(&v, d.data() + *pos, n);
  if (is_signed && n < 8 && (v >> (n * 8 - 1)) & 1) v |= ~uint64_t{0} << (n * 8);
  *pos += n;
  if ((enc & 0x70) == 0x10) v += pc;  // DW_EH_PE_pcrel
  *out = v;
  return true;
}

void SkipUleb(std::string_view d, size_t* pos) {
  while (*pos < d.size() && (static_cast<uint8_t>(d[(*pos)++]) & 0x80)) {
  }
}

}  // namespace

Status ElfFile::ParseEhFrame() {
  const ElfSection* eh = FindSection(".eh_frame");
  if (!eh || eh->type != SHT_PROGBITS) return OkStatus();
  const uint8_t* base = At(eh->offset, eh->size);
  if (!base) return OkStatus();
  std::string_view all(reinterpret_cast<const char*>(base), eh->size);
  std::unordered_map<uint64_t, uint8_t> cie_fde_encoding;  // CIE offset -> FDE pointer enc
  size_t p = 0;
  while (all.size() - p >= 8) {
    uint32_t len32;
    std::memcpy(&len32, all.data() + p, 4);
    if (len32 == 0 || len32 == 0xffffffff) break;  // terminator; 64-bit DWARF (not on x86-64)
    if (len32 < 4 || len32 > all.size() - p - 4) break;
    std::string_view rec = all.substr(p + 4, len32);  // CIE pointer/id first
    uint64_t rec_off = p;
    p += 4 + size_t{len32};
    uint32_t cie_ptr;
    std::memcpy(&cie_ptr, rec.data(), 4);
    size_t q = 4;
    if (cie_ptr == 0) {
      // CIE: version, augmentation string, code/data alignment, return register, augmentation.
      uint8_t version = q < rec.size() ? static_cast<uint8_t>(rec[q++]) : 0;
      size_t aug_end = rec.find('\0', q);
      if (aug_end == std::string_view::npos) continue;
      std::string_view aug = rec.substr(q, aug_end - q);
      q = aug_end + 1;
      SkipUleb(rec, &q);  // code alignment
      SkipUleb(rec, &q);  // data alignment (sleb: same encoding length)
      if (version == 1) {
        ++q;
      } else {
        SkipUleb(rec, &q);
      }
      uint8_t fde_enc = 0;  // absptr
      if (!aug.empty() && aug[0] == 'z') {
        SkipUleb(rec, &q);  // augmentation data length
        for (size_t a = 1; a < aug.size() && q < rec.size(); ++a) {
          if (aug[a] == 'R') {
            fde_enc = static_cast<uint8_t>(rec[q++]);
          } else if (aug[a] == 'L') {
            ++q;
          } else if (aug[a] == 'P') {
            uint8_t penc = static_cast<uint8_t>(rec[q++]);
            uint64_t ignored;
            if (!ReadEhPointer(rec, &q, penc & 0x7f, 0, &ignored)) break;
          } else {
            break;
          }
        }
      }
      cie_fde_encoding[rec_off] = fde_enc;
    } else {
      auto it = cie_fde_encoding.find(rec_off + 4 - cie_ptr);
      if (it == cie_fde_encoding.end()) continue;
      uint64_t q_vaddr = eh->addr + rec_off + 4 + q;
      uint64_t pc_begin = 0, pc_range = 0;
      if (ReadEhPointer(rec, &q, it->second, q_vaddr, &pc_begin) &&
          ReadEhPointer(rec, &q, it->second & 0x0f, 0, &pc_range) && pc_range > 0) {
        if (eh_frame_sorted_.size() >= limits_.max_fdes) {
          return ResourceExhaustedError("refusing " + path_ +
                                        ": its .eh_frame describes more than " +
                                        std::to_string(limits_.max_fdes) + " functions");
        }
        eh_frame_sorted_.emplace_back(pc_begin, SaturatingEnd(pc_begin, pc_range));
      }
    }
  }
  std::sort(eh_frame_sorted_.begin(), eh_frame_sorted_.end());
  return OkStatus();
}

}  // namespace threadscope::target
