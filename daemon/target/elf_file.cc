#include "daemon/target/elf_file.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace threadscope::target {

StatusOr<std::unique_ptr<ElfFile>> ElfFile::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open " + path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return ErrnoToStatus(err, "cannot stat " + path);
  }
  if (st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    close(fd);
    return FailedPreconditionError(path + " is not an ELF file (too small)");
  }
  // Read, do not mmap: while any uprobe is registered on this file (another target running the
  // same interpreter, or another tool), a private mapping shows the int3 bytes the kernel
  // installed at the probed addresses, and call sites and first instructions would be misread.
  std::unique_ptr<ElfFile> elf(new ElfFile());
  elf->path_ = path;
  elf->storage_.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < elf->storage_.size()) {
    ssize_t n = pread(fd, elf->storage_.data() + done, elf->storage_.size() - done,
                      static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      close(fd);
      return ErrnoToStatus(err, "cannot read " + path);
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  elf->data_ = elf->storage_.data();
  elf->size_ = elf->storage_.size();
  TS_RETURN_IF_ERROR(elf->Parse());
  return elf;
}

ElfFile::~ElfFile() = default;

Status ElfFile::Parse() {
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(data_);
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0) {
    return FailedPreconditionError(path_ + " is not an ELF file");
  }
  if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
      eh->e_machine != EM_X86_64) {
    return FailedPreconditionError(path_ + " is not an x86-64 ELF file");
  }
  is_dyn_ = eh->e_type == ET_DYN;
  auto in_file = [&](uint64_t off, uint64_t len) { return off <= size_ && len <= size_ - off; };

  if (!in_file(eh->e_phoff, uint64_t{eh->e_phnum} * sizeof(Elf64_Phdr))) {
    return DataLossError(path_ + ": program headers out of range");
  }
  const auto* ph = reinterpret_cast<const Elf64_Phdr*>(data_ + eh->e_phoff);
  for (int i = 0; i < eh->e_phnum; ++i) {
    if (ph[i].p_type == PT_LOAD) {
      loads_.push_back({ph[i].p_vaddr, ph[i].p_offset, ph[i].p_filesz, ph[i].p_memsz,
                        ph[i].p_flags});
    }
  }

  if (!in_file(eh->e_shoff, uint64_t{eh->e_shnum} * sizeof(Elf64_Shdr)) || eh->e_shnum == 0) {
    return DataLossError(path_ + ": no section headers");
  }
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(data_ + eh->e_shoff);
  const Elf64_Shdr& shstr = sh[eh->e_shstrndx];
  auto section_name = [&](uint32_t off) -> std::string {
    if (!in_file(shstr.sh_offset + off, 1)) return {};
    const char* p = reinterpret_cast<const char*>(data_ + shstr.sh_offset + off);
    return std::string(p, strnlen(p, shstr.sh_size - off));
  };
  for (int i = 0; i < eh->e_shnum; ++i) {
    sections_.push_back({section_name(sh[i].sh_name), sh[i].sh_type, sh[i].sh_flags,
                         sh[i].sh_addr, sh[i].sh_offset, sh[i].sh_size});
  }

  // Symbols: .symtab first (richer), then .dynsym for what .symtab lacks.
  auto load_symbols = [&](uint32_t type) {
    for (int i = 0; i < eh->e_shnum; ++i) {
      if (sh[i].sh_type != type || sh[i].sh_entsize != sizeof(Elf64_Sym)) continue;
      if (!in_file(sh[i].sh_offset, sh[i].sh_size)) continue;
      const Elf64_Shdr& strtab = sh[sh[i].sh_link];
      const auto* syms = reinterpret_cast<const Elf64_Sym*>(data_ + sh[i].sh_offset);
      size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
      if (type == SHT_SYMTAB && count > 1) has_symtab_ = true;
      for (size_t k = 1; k < count; ++k) {
        const Elf64_Sym& s = syms[k];
        if (s.st_shndx == SHN_UNDEF || s.st_value == 0) continue;
        if (!in_file(strtab.sh_offset + s.st_name, 1)) continue;
        const char* raw = reinterpret_cast<const char*>(data_ + strtab.sh_offset + s.st_name);
        std::string name(raw, strnlen(raw, strtab.sh_size - s.st_name));
        bool default_version = true;
        if (auto at = name.find('@'); at != std::string::npos) {
          default_version = name.compare(at, 2, "@@") == 0;
          name.resize(at);
        }
        if (name.empty()) continue;
        ElfSymbol sym{name, s.st_value, s.st_size, ELF64_ST_TYPE(s.st_info) == STT_FUNC ||
                                                       ELF64_ST_TYPE(s.st_info) == STT_GNU_IFUNC,
                      ELF64_ST_BIND(s.st_info) != STB_LOCAL, type == SHT_DYNSYM};
        auto it = by_name_.find(name);
        if (it != by_name_.end()) {
          ElfSymbol& prev = symbols_[it->second];
          // Keep the first definition unless this one is the default version of a function.
          if (!(default_version && sym.is_function && !prev.is_function)) continue;
          prev = sym;
          continue;
        }
        by_name_.emplace(name, symbols_.size());
        symbols_.push_back(std::move(sym));
      }
    }
  };
  load_symbols(SHT_SYMTAB);
  load_symbols(SHT_DYNSYM);
  for (size_t i = 0; i < symbols_.size(); ++i) {
    if (symbols_[i].is_function && symbols_[i].size > 0) functions_by_addr_.push_back(i);
  }
  std::sort(functions_by_addr_.begin(), functions_by_addr_.end(),
            [&](size_t a, size_t b) { return symbols_[a].value < symbols_[b].value; });

  // Relocations that write absolute pointers into data (what PyMethodDef tables need).
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_RELA || sh[i].sh_entsize != sizeof(Elf64_Rela)) continue;
    if (!in_file(sh[i].sh_offset, sh[i].sh_size)) continue;
    const auto* relas = reinterpret_cast<const Elf64_Rela*>(data_ + sh[i].sh_offset);
    const Elf64_Shdr& symsec = sh[sh[i].sh_link];
    const auto* dsyms = symsec.sh_type == SHT_DYNSYM && in_file(symsec.sh_offset, symsec.sh_size)
                            ? reinterpret_cast<const Elf64_Sym*>(data_ + symsec.sh_offset)
                            : nullptr;
    size_t dsym_count = dsyms ? symsec.sh_size / sizeof(Elf64_Sym) : 0;
    for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Rela); ++k) {
      const Elf64_Rela& r = relas[k];
      uint32_t rtype = ELF64_R_TYPE(r.r_info);
      if ((rtype == R_X86_64_GLOB_DAT || rtype == R_X86_64_JUMP_SLOT) && dsyms) {
        uint32_t idx = ELF64_R_SYM(r.r_info);
        const Elf64_Shdr& dstr = sh[symsec.sh_link];
        if (idx < dsym_count && in_file(dstr.sh_offset + dsyms[idx].st_name, 1)) {
          const char* raw = reinterpret_cast<const char*>(data_ + dstr.sh_offset + dsyms[idx].st_name);
          std::string name(raw, strnlen(raw, dstr.sh_size - dsyms[idx].st_name));
          if (auto at = name.find('@'); at != std::string::npos) name.resize(at);
          got_slots_.emplace(std::move(name), r.r_offset);
        }
      }
      if (rtype == R_X86_64_RELATIVE) {
        relocated_pointers_[r.r_offset] = static_cast<uint64_t>(r.r_addend);
      } else if (rtype == R_X86_64_64 && dsyms) {
        uint32_t idx = ELF64_R_SYM(r.r_info);
        if (idx < dsym_count && dsyms[idx].st_shndx != SHN_UNDEF) {
          relocated_pointers_[r.r_offset] = dsyms[idx].st_value + static_cast<uint64_t>(r.r_addend);
        }
      }
    }
  }

  // PLT stubs: the i-th JUMP_SLOT relocation of .rela.plt belongs to the i-th stub, in .plt.sec
  // when the binary has IBT stubs, else in .plt after its 16-byte header.
  const ElfSection* plt_sec = FindSection(".plt.sec");
  const ElfSection* plt = FindSection(".plt");
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_RELA || section_name(sh[i].sh_name) != ".rela.plt") continue;
    if (!in_file(sh[i].sh_offset, sh[i].sh_size) || (!plt && !plt_sec)) continue;
    const Elf64_Shdr& symsec = sh[sh[i].sh_link];
    const Elf64_Shdr& strsec = sh[symsec.sh_link];
    if (!in_file(symsec.sh_offset, symsec.sh_size)) continue;
    const auto* dsyms = reinterpret_cast<const Elf64_Sym*>(data_ + symsec.sh_offset);
    size_t dsym_count = symsec.sh_size / sizeof(Elf64_Sym);
    const auto* relas = reinterpret_cast<const Elf64_Rela*>(data_ + sh[i].sh_offset);
    size_t slot = 0;
    for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Rela); ++k) {
      if (ELF64_R_TYPE(relas[k].r_info) != R_X86_64_JUMP_SLOT) continue;
      uint32_t idx = ELF64_R_SYM(relas[k].r_info);
      uint64_t stub = plt_sec ? plt_sec->addr + 16 * slot : plt->addr + 16 * (slot + 1);
      ++slot;
      if (idx >= dsym_count || !in_file(strsec.sh_offset + dsyms[idx].st_name, 1)) continue;
      const char* raw = reinterpret_cast<const char*>(data_ + strsec.sh_offset + dsyms[idx].st_name);
      std::string name(raw, strnlen(raw, strsec.sh_size - dsyms[idx].st_name));
      if (auto at = name.find('@'); at != std::string::npos) name.resize(at);
      plt_stubs_.emplace(stub, std::move(name));
    }
  }

  // Dynamic section: DT_NEEDED, DT_SONAME.
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_DYNAMIC || !in_file(sh[i].sh_offset, sh[i].sh_size)) continue;
    const Elf64_Shdr& strtab = sh[sh[i].sh_link];
    const auto* dyn = reinterpret_cast<const Elf64_Dyn*>(data_ + sh[i].sh_offset);
    for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Dyn) && dyn[k].d_tag != DT_NULL; ++k) {
      if (dyn[k].d_tag != DT_NEEDED && dyn[k].d_tag != DT_SONAME) continue;
      uint64_t off = strtab.sh_offset + dyn[k].d_un.d_val;
      if (!in_file(off, 1)) continue;
      const char* s = reinterpret_cast<const char*>(data_ + off);
      std::string value(s, strnlen(s, size_ - off));
      if (dyn[k].d_tag == DT_NEEDED) {
        needed_.push_back(value);
      } else {
        soname_ = value;
      }
    }
  }

  // GNU build id (note type 3).
  for (const auto& s : sections_) {
    if (s.type != SHT_NOTE || s.name != ".note.gnu.build-id" || !in_file(s.offset, s.size)) continue;
    if (s.size < sizeof(Elf64_Nhdr)) continue;
    const auto* nh = reinterpret_cast<const Elf64_Nhdr*>(data_ + s.offset);
    uint64_t desc = s.offset + sizeof(Elf64_Nhdr) + ((nh->n_namesz + 3) & ~3u);
    if (nh->n_type != NT_GNU_BUILD_ID || !in_file(desc, nh->n_descsz)) continue;
    static const char kHex[] = "0123456789abcdef";
    for (uint32_t b = 0; b < nh->n_descsz; ++b) {
      build_id_ += kHex[data_[desc + b] >> 4];
      build_id_ += kHex[data_[desc + b] & 15];
    }
  }
  ParseEhFrame();
  return OkStatus();
}

namespace {

// Reads a DWARF EH pointer (DW_EH_PE_*) at p; `pc` is the vaddr of p (for pcrel).
bool ReadEhPointer(const uint8_t*& p, const uint8_t* end, uint8_t enc, uint64_t pc, uint64_t* out) {
  if (enc == 0xff) return false;  // DW_EH_PE_omit
  uint64_t v = 0;
  auto need = [&](size_t n) { return static_cast<size_t>(end - p) >= n; };
  switch (enc & 0x0f) {
    case 0x00: if (!need(8)) return false; std::memcpy(&v, p, 8); p += 8; break;   // absptr
    case 0x03: { if (!need(4)) return false; uint32_t u; std::memcpy(&u, p, 4); v = u; p += 4; break; }
    case 0x0b: { if (!need(4)) return false; int32_t i; std::memcpy(&i, p, 4); v = static_cast<uint64_t>(int64_t{i}); p += 4; break; }
    case 0x04: if (!need(8)) return false; std::memcpy(&v, p, 8); p += 8; break;   // udata8
    case 0x0c: if (!need(8)) return false; std::memcpy(&v, p, 8); p += 8; break;   // sdata8
    case 0x02: { if (!need(2)) return false; uint16_t u; std::memcpy(&u, p, 2); v = u; p += 2; break; }
    case 0x0a: { if (!need(2)) return false; int16_t i; std::memcpy(&i, p, 2); v = static_cast<uint64_t>(int64_t{i}); p += 2; break; }
    default: return false;  // uleb/sleb pointers do not occur in x86-64 FDEs
  }
  if ((enc & 0x70) == 0x10) v += pc;  // DW_EH_PE_pcrel
  *out = v;
  return true;
}

uint64_t ReadUleb(const uint8_t*& p, const uint8_t* end) {
  uint64_t v = 0;
  int shift = 0;
  while (p < end) {
    uint8_t b = *p++;
    v |= uint64_t{b & 0x7fu} << shift;
    shift += 7;
    if (!(b & 0x80)) break;
  }
  return v;
}

}  // namespace

void ElfFile::ParseEhFrame() {
  const ElfSection* eh = FindSection(".eh_frame");
  if (!eh || eh->type != SHT_PROGBITS || eh->offset + eh->size > size_) return;
  const uint8_t* base = data_ + eh->offset;
  const uint8_t* end = base + eh->size;
  std::unordered_map<uint64_t, uint8_t> cie_fde_encoding;  // CIE offset -> FDE pointer enc
  const uint8_t* p = base;
  while (static_cast<size_t>(end - p) >= 8) {
    uint32_t len32;
    std::memcpy(&len32, p, 4);
    if (len32 == 0) break;
    if (len32 == 0xffffffff) break;  // 64-bit DWARF: not produced for x86-64 .eh_frame
    const uint8_t* rec = p + 4;
    const uint8_t* rec_end = rec + len32;
    if (rec_end > end) break;
    uint32_t cie_ptr;
    std::memcpy(&cie_ptr, rec, 4);
    uint64_t rec_off = static_cast<uint64_t>(p - base);
    if (cie_ptr == 0) {
      // CIE: version, augmentation string, code/data alignment, return register, augmentation.
      const uint8_t* q = rec + 4;
      uint8_t version = q < rec_end ? *q++ : 0;
      std::string aug;
      while (q < rec_end && *q) aug += static_cast<char>(*q++);
      ++q;
      ReadUleb(q, rec_end);  // code alignment
      ReadUleb(q, rec_end);  // data alignment (sleb, but we only skip it)
      if (version == 1) {
        ++q;
      } else {
        ReadUleb(q, rec_end);
      }
      uint8_t fde_enc = 0;  // absptr
      if (!aug.empty() && aug[0] == 'z') {
        ReadUleb(q, rec_end);  // augmentation data length
        for (size_t a = 1; a < aug.size() && q < rec_end; ++a) {
          if (aug[a] == 'R') {
            fde_enc = *q++;
          } else if (aug[a] == 'L') {
            ++q;
          } else if (aug[a] == 'P') {
            uint8_t penc = *q++;
            uint64_t ignored;
            if (!ReadEhPointer(q, rec_end, penc & 0x7f, 0, &ignored)) break;
          } else {
            break;
          }
        }
      }
      cie_fde_encoding[rec_off] = fde_enc;
    } else {
      uint64_t cie_off = rec_off + 4 - cie_ptr;
      auto it = cie_fde_encoding.find(cie_off);
      if (it != cie_fde_encoding.end()) {
        const uint8_t* q = rec + 4;
        uint64_t pc_begin = 0, pc_range = 0;
        uint64_t q_vaddr = eh->addr + static_cast<uint64_t>(q - base);
        if (ReadEhPointer(q, rec_end, it->second, q_vaddr, &pc_begin) &&
            ReadEhPointer(q, rec_end, it->second & 0x0f, 0, &pc_range) && pc_range > 0) {
          eh_frame_ranges_.emplace(pc_begin, pc_range);
          eh_frame_sorted_.emplace_back(pc_begin, pc_begin + pc_range);
        }
      }
    }
    p = rec_end;
  }
  std::sort(eh_frame_sorted_.begin(), eh_frame_sorted_.end());
}

std::optional<std::pair<uint64_t, uint64_t>> ElfFile::FunctionExtent(uint64_t vaddr) const {
  if (auto f = FunctionContaining(vaddr); f && f->value == vaddr) {
    return std::make_pair(f->value, f->value + f->size);
  }
  if (auto it = eh_frame_ranges_.find(vaddr); it != eh_frame_ranges_.end()) {
    return std::make_pair(vaddr, vaddr + it->second);
  }
  return std::nullopt;
}

const ElfSection* ElfFile::FindSection(std::string_view name) const {
  for (const auto& s : sections_) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::optional<ElfSymbol> ElfFile::FindSymbol(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  if (it == by_name_.end()) return std::nullopt;
  return symbols_[it->second];
}

std::vector<ElfSymbol> ElfFile::FindClones(std::string_view name) const {
  std::vector<ElfSymbol> out;
  std::string prefix = std::string(name) + ".";
  for (const auto& s : symbols_) {
    if (s.is_function && s.name.compare(0, prefix.size(), prefix) == 0) out.push_back(s);
  }
  std::sort(out.begin(), out.end(),
            [](const ElfSymbol& a, const ElfSymbol& b) { return a.name < b.name; });
  return out;
}

std::optional<std::string> ElfFile::PltStubName(uint64_t vaddr) const {
  auto it = plt_stubs_.find(vaddr);
  if (it == plt_stubs_.end()) return std::nullopt;
  return it->second;
}

std::optional<uint64_t> ElfFile::PltStubFor(std::string_view name) const {
  for (const auto& [addr, stub_name] : plt_stubs_) {
    if (stub_name == name) return addr;
  }
  return std::nullopt;
}

std::optional<uint64_t> ElfFile::GotSlotFor(std::string_view name) const {
  auto it = got_slots_.find(std::string(name));
  if (it == got_slots_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::pair<uint64_t, uint64_t>> ElfFile::FunctionAround(uint64_t vaddr) const {
  if (auto f = FunctionContaining(vaddr)) return std::make_pair(f->value, f->value + f->size);
  auto it = std::upper_bound(eh_frame_sorted_.begin(), eh_frame_sorted_.end(),
                             std::make_pair(vaddr, UINT64_MAX));
  if (it == eh_frame_sorted_.begin()) return std::nullopt;
  --it;
  if (vaddr >= it->first && vaddr < it->second) return *it;
  return std::nullopt;
}

std::optional<std::string> ElfFile::NameAt(uint64_t vaddr) const {
  if (auto f = FunctionContaining(vaddr); f && f->value == vaddr) return f->name;
  return PltStubName(vaddr);
}

std::optional<ElfSymbol> ElfFile::FunctionContaining(uint64_t vaddr) const {
  auto it = std::upper_bound(functions_by_addr_.begin(), functions_by_addr_.end(), vaddr,
                             [&](uint64_t v, size_t idx) { return v < symbols_[idx].value; });
  if (it == functions_by_addr_.begin()) return std::nullopt;
  const ElfSymbol& s = symbols_[*std::prev(it)];
  if (vaddr >= s.value && vaddr < s.value + s.size) return s;
  return std::nullopt;
}

std::optional<uint64_t> ElfFile::VaddrToOffset(uint64_t vaddr) const {
  for (const auto& seg : loads_) {
    if (vaddr >= seg.vaddr && vaddr < seg.vaddr + seg.filesz) return vaddr - seg.vaddr + seg.offset;
  }
  return std::nullopt;
}

std::string_view ElfFile::BytesAt(uint64_t vaddr, uint64_t len) const {
  for (const auto& seg : loads_) {
    if (vaddr >= seg.vaddr && len <= seg.filesz && vaddr - seg.vaddr <= seg.filesz - len) {
      uint64_t off = vaddr - seg.vaddr + seg.offset;
      if (off + len > size_) return {};
      return std::string_view(reinterpret_cast<const char*>(data_ + off), len);
    }
  }
  return {};
}

std::optional<std::string> ElfFile::CStringAt(uint64_t vaddr, size_t max_len) const {
  for (const auto& seg : loads_) {
    if (vaddr < seg.vaddr || vaddr >= seg.vaddr + seg.filesz) continue;
    uint64_t off = vaddr - seg.vaddr + seg.offset;
    uint64_t avail = std::min<uint64_t>(seg.vaddr + seg.filesz - vaddr, size_ - off);
    const char* p = reinterpret_cast<const char*>(data_ + off);
    size_t n = strnlen(p, std::min<uint64_t>(avail, max_len));
    if (n == std::min<uint64_t>(avail, max_len)) return std::nullopt;  // not terminated
    return std::string(p, n);
  }
  return std::nullopt;
}

std::optional<uint64_t> ElfFile::PointerAt(uint64_t vaddr) const {
  if (auto it = relocated_pointers_.find(vaddr); it != relocated_pointers_.end()) {
    return it->second;
  }
  std::string_view bytes = BytesAt(vaddr, 8);
  if (bytes.size() != 8) return std::nullopt;
  uint64_t v;
  std::memcpy(&v, bytes.data(), 8);
  return v;
}

bool ElfFile::IsText(uint64_t vaddr) const {
  for (const auto& s : sections_) {
    if ((s.flags & SHF_EXECINSTR) && vaddr >= s.addr && vaddr < s.addr + s.size) return true;
  }
  return false;
}

bool ElfFile::IsReadOnlyData(uint64_t vaddr) const {
  for (const auto& s : sections_) {
    if ((s.flags & SHF_ALLOC) && !(s.flags & SHF_WRITE) && !(s.flags & SHF_EXECINSTR) &&
        s.type == SHT_PROGBITS && vaddr >= s.addr && vaddr < s.addr + s.size) {
      return true;
    }
  }
  return false;
}

std::vector<const ElfSection*> ElfFile::PointerDataSections() const {
  std::vector<const ElfSection*> out;
  for (const auto& s : sections_) {
    if (s.type == SHT_PROGBITS && (s.flags & SHF_ALLOC) && (s.flags & SHF_WRITE)) {
      out.push_back(&s);
    }
  }
  return out;
}

}  // namespace threadscope::target
