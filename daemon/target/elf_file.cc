// Opening and parsing an ELF file a target chose, within a byte budget, and the lookups planning
// needs (symbols, PLT and GOT slots, file-backed bytes). Over 600 lines for one reason: Parse
// checks every table the file offers (program and section headers, symbol tables, relocations,
// dynamic section, notes) against the file's size and the budget, each bound next to the read it
// guards, which is what the fuzzer and the hostile-file tests exercise; split further, the
// checks would sit away from the reads. The .eh_frame reader is elf_eh_frame.cc.
#include "daemon/target/elf_file.h"

#include <elf.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace threadscope::target {

namespace {

uint64_t SaturatingEnd(uint64_t start, uint64_t len) {
  return len > UINT64_MAX - start ? UINT64_MAX : start + len;
}

// Longest symbol or library name kept. CPython's and glibc's are under 64 bytes; C++ names in
// a libpython built with a C++ compiler stay well under this too.
constexpr size_t kMaxNameLength = 1024;
constexpr size_t kMaxSectionNameLength = 256;
constexpr size_t kMaxNeeded = 1024;         // DT_NEEDED entries kept
constexpr uint32_t kMaxBuildIdBytes = 64;  // GNU build ids are 20 (sha1) or 16 (md5) bytes
// Reads go to the file in pieces of this size so the budget is charged as they progress.
constexpr uint64_t kReadChunk = uint64_t{8} << 20;

bool InRange(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

// Symbol names end up in reports (probe locations) and protos: only printable ASCII, which
// every name threadscope looks up is.
bool IsPrintableName(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

std::string Mib(uint64_t bytes) {
  if (bytes < (1u << 20)) return std::to_string(bytes) + " bytes";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f MiB", static_cast<double>(bytes) / (1u << 20));
  return buf;
}

// Sorts and merges [start, end) ranges.
std::vector<std::pair<uint64_t, uint64_t>> Merge(std::vector<std::pair<uint64_t, uint64_t>> r) {
  std::sort(r.begin(), r.end());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& [start, end] : r) {
    if (start >= end) continue;
    if (!out.empty() && start <= out.back().second) {
      out.back().second = std::max(out.back().second, end);
    } else {
      out.emplace_back(start, end);
    }
  }
  return out;
}

bool InRanges(const std::vector<std::pair<uint64_t, uint64_t>>& ranges, uint64_t v) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), std::make_pair(v, UINT64_MAX));
  if (it == ranges.begin()) return false;
  --it;
  return v >= it->first && v < it->second;
}

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

StatusOr<std::unique_ptr<ElfFile>> ElfFile::Open(const std::string& path,
                                                 const ElfOptions& options) {
  TS_ASSIGN_OR_RETURN(FileRef file, OpenRegularFile(path, path));
  return FromFile(std::move(file), path, options);
}

StatusOr<std::unique_ptr<ElfFile>> ElfFile::FromFile(FileRef file, std::string name,
                                                     const ElfOptions& options) {
  // Read, do not mmap: while any uprobe is registered on this file (another target running the
  // same interpreter, or another tool), a private mapping shows the int3 bytes the kernel
  // installed at the probed addresses, and call sites and first instructions would be misread.
  std::unique_ptr<ElfFile> elf(new ElfFile());
  elf->path_ = std::move(name);
  elf->budget_ = options.budget;
  elf->limits_ = options.limits;
  const FileHandle* f = file.get();
  Status s = elf->Parse(
      [f](uint64_t off, void* out, size_t n) { return f->ReadAt(off, out, n); }, f->size());
  if (!s.ok()) return s;
  return elf;
}

StatusOr<std::unique_ptr<ElfFile>> ElfFile::FromBytes(std::string_view bytes, std::string name,
                                                      const ElfOptions& options) {
  std::unique_ptr<ElfFile> elf(new ElfFile());
  elf->path_ = std::move(name);
  elf->budget_ = options.budget;
  elf->limits_ = options.limits;
  Status s = elf->Parse(
      [bytes](uint64_t off, void* out, size_t n) {
        if (!InRange(off, n, bytes.size())) return DataLossError("read past the end");
        if (n == 0) return OkStatus();  // `out` may be null (an empty table's data())
        std::memcpy(out, bytes.data() + off, n);
        return OkStatus();
      },
      bytes.size());
  if (!s.ok()) return s;
  return elf;
}

ElfFile::~ElfFile() = default;

Status ElfFile::ReadRegions(const Reader& read, std::vector<std::pair<uint64_t, uint64_t>> ranges) {
  ranges = Merge(std::move(ranges));
  uint64_t total = 0;
  for (const auto& [start, end] : ranges) total += end - start;
  if (total > limits_.max_read_bytes) {
    return ResourceExhaustedError(
        "refusing " + path_ + ": its headers, tables and loadable segments come to " +
        Mib(total) + ", more than the " + Mib(limits_.max_read_bytes) +
        " threadscope reads from one binary");
  }
  regions_.clear();
  for (const auto& [start, end] : ranges) {
    Region r{start, {}};
    r.bytes.resize(end - start);
    for (uint64_t done = 0; done < r.bytes.size(); done += kReadChunk) {
      uint64_t n = std::min<uint64_t>(kReadChunk, r.bytes.size() - done);
      if (!Charge(budget_.get(), n / 8 + 1, "reading its binaries")) return budget_->status();
      Status s = read(start + done, r.bytes.data() + done, n);
      if (!s.ok()) return s.WithContext(path_);
      bytes_read_ += n;
    }
    regions_.push_back(std::move(r));
  }
  return OkStatus();
}

const uint8_t* ElfFile::At(uint64_t off, uint64_t len) const {
  auto it = std::upper_bound(regions_.begin(), regions_.end(), off,
                             [](uint64_t v, const Region& r) { return v < r.offset; });
  if (it == regions_.begin()) return nullptr;
  --it;
  uint64_t rel = off - it->offset;
  if (!InRange(rel, len, it->bytes.size())) return nullptr;
  return it->bytes.data() + rel;
}

std::string_view ElfFile::From(uint64_t off) const {
  auto it = std::upper_bound(regions_.begin(), regions_.end(), off,
                             [](uint64_t v, const Region& r) { return v < r.offset; });
  if (it == regions_.begin()) return {};
  --it;
  uint64_t rel = off - it->offset;
  if (rel >= it->bytes.size()) return {};
  return std::string_view(reinterpret_cast<const char*>(it->bytes.data() + rel),
                          it->bytes.size() - rel);
}

Status ElfFile::Parse(const Reader& read, uint64_t file_size) {
  file_size_ = file_size;
  if (file_size < sizeof(Elf64_Ehdr)) {
    return FailedPreconditionError(path_ + " is not an ELF file (too small)");
  }
  Elf64_Ehdr eh;
  if (Status s = read(0, &eh, sizeof(eh)); !s.ok()) return s.WithContext(path_);
  bytes_read_ += sizeof(eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    return FailedPreconditionError(path_ + " is not an ELF file");
  }
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
      eh.e_machine != EM_X86_64) {
    return FailedPreconditionError(path_ + " is not an x86-64 ELF file");
  }
  is_dyn_ = eh.e_type == ET_DYN;
  auto corrupt = [&](const std::string& what) {
    return DataLossError(path_ + " is a corrupt ELF file: " + what);
  };

  // Program and section header tables.
  if (eh.e_phnum > 0 && eh.e_phentsize != sizeof(Elf64_Phdr)) {
    return corrupt("program header entries are " + std::to_string(eh.e_phentsize) + " bytes");
  }
  if (!InRange(eh.e_phoff, uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr), file_size)) {
    return DataLossError(path_ + ": program headers out of range");
  }
  if (eh.e_shnum == 0) return DataLossError(path_ + ": no section headers");
  if (eh.e_shentsize != sizeof(Elf64_Shdr)) {
    return corrupt("section header entries are " + std::to_string(eh.e_shentsize) + " bytes");
  }
  if (!InRange(eh.e_shoff, uint64_t{eh.e_shnum} * sizeof(Elf64_Shdr), file_size)) {
    return DataLossError(path_ + ": section headers out of range");
  }
  if (eh.e_shstrndx >= eh.e_shnum) {
    return corrupt("its section name table is section " + std::to_string(eh.e_shstrndx) +
                   " of " + std::to_string(eh.e_shnum));
  }
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  std::vector<Elf64_Shdr> sh(eh.e_shnum);
  // An ELF file may have no program headers (an object file); its empty table has no data().
  if (!ph.empty()) {
    if (Status s = read(eh.e_phoff, ph.data(), ph.size() * sizeof(Elf64_Phdr)); !s.ok()) {
      return s.WithContext(path_);
    }
  }
  if (Status s = read(eh.e_shoff, sh.data(), sh.size() * sizeof(Elf64_Shdr)); !s.ok()) {
    return s.WithContext(path_);
  }
  bytes_read_ += ph.size() * sizeof(Elf64_Phdr) + sh.size() * sizeof(Elf64_Shdr);
  const size_t shnum = sh.size();
  for (size_t i = 0; i < shnum; ++i) {
    uint32_t t = sh[i].sh_type;
    bool links = t == SHT_SYMTAB || t == SHT_DYNSYM || t == SHT_RELA || t == SHT_DYNAMIC;
    if (links && sh[i].sh_link >= shnum) {
      return corrupt("section " + std::to_string(i) + " links to section " +
                     std::to_string(sh[i].sh_link) + " of " + std::to_string(shnum));
    }
  }
  // The part of a section that is in the file: [offset, offset + size) clamped to its end.
  auto file_range = [&](const Elf64_Shdr& s) -> std::pair<uint64_t, uint64_t> {
    if (s.sh_type == SHT_NOBITS || s.sh_offset >= file_size) return {0, 0};
    return {s.sh_offset, s.sh_offset + std::min<uint64_t>(s.sh_size, file_size - s.sh_offset)};
  };

  // Loadable segments: file-backed parts, clamped to the file, in vaddr order. The kernel maps
  // them in ascending vaddr order; overlapping ones would make "the byte at vaddr" ambiguous.
  for (const auto& p : ph) {
    if (p.p_type != PT_LOAD || p.p_offset >= file_size) continue;
    uint64_t filesz = std::min<uint64_t>(p.p_filesz, file_size - p.p_offset);
    filesz = std::min<uint64_t>(filesz, UINT64_MAX - p.p_vaddr);
    if (filesz == 0) continue;
    loads_.push_back({p.p_vaddr, p.p_offset, filesz, p.p_memsz, p.p_flags});
  }
  std::sort(loads_.begin(), loads_.end(),
            [](const Segment& a, const Segment& b) { return a.vaddr < b.vaddr; });
  for (size_t i = 1; i < loads_.size(); ++i) {
    if (loads_[i].vaddr < loads_[i - 1].vaddr + loads_[i - 1].filesz) {
      return corrupt("loadable segments overlap at " + std::to_string(loads_[i].vaddr));
    }
  }

  // What to read: the section name table first (to find .eh_frame by name), then the rest.
  std::vector<std::pair<uint64_t, uint64_t>> ranges{file_range(sh[eh.e_shstrndx])};
  TS_RETURN_IF_ERROR(ReadRegions(read, ranges));
  const Elf64_Shdr& shstr = sh[eh.e_shstrndx];
  auto string_at = [&](const Elf64_Shdr& table, uint64_t off,
                       size_t max_len) -> std::optional<std::string_view> {
    auto [start, end] = file_range(table);
    if (off >= end - start) return std::nullopt;
    std::string_view rest = From(start + off);
    rest = rest.substr(0, std::min<uint64_t>(rest.size(), end - start - off));
    size_t n = rest.find('\0');
    if (n == std::string_view::npos || n > max_len) return std::nullopt;  // unterminated, long
    return rest.substr(0, n);
  };
  std::vector<std::string> names(shnum);
  for (size_t i = 0; i < shnum; ++i) {
    auto name = string_at(shstr, sh[i].sh_name, kMaxSectionNameLength);
    if (name && IsPrintableName(*name)) names[i] = std::string(*name);
  }
  for (size_t i = 0; i < shnum; ++i) {
    uint32_t t = sh[i].sh_type;
    if (t == SHT_SYMTAB || t == SHT_DYNSYM || t == SHT_RELA || t == SHT_DYNAMIC ||
        t == SHT_NOTE || t == SHT_STRTAB || names[i] == ".eh_frame") {
      ranges.push_back(file_range(sh[i]));
    }
  }
  for (const auto& seg : loads_) ranges.emplace_back(seg.offset, seg.offset + seg.filesz);
  TS_RETURN_IF_ERROR(ReadRegions(read, std::move(ranges)));

  for (size_t i = 0; i < shnum; ++i) {
    auto [start, end] = file_range(sh[i]);
    uint64_t size = sh[i].sh_type == SHT_NOBITS ? sh[i].sh_size : end - start;
    sections_.push_back({names[i], sh[i].sh_type, sh[i].sh_flags, sh[i].sh_addr,
                         sh[i].sh_offset, size});
  }
  // The loaded bytes of a table section whose entries are `entsize` bytes, if it is whole.
  auto table = [&](const Elf64_Shdr& s, size_t entsize) -> std::pair<const uint8_t*, size_t> {
    if (s.sh_entsize != entsize) return {nullptr, 0};
    auto [start, end] = file_range(s);
    const uint8_t* p = At(start, end - start);
    return p && end > start ? std::make_pair(p, (end - start) / entsize)
                            : std::make_pair(nullptr, size_t{0});
  };
  uint64_t name_bytes = 0;
  auto keep_name = [&](const std::string& name) {
    name_bytes += name.size();
    return name_bytes <= limits_.max_name_bytes;
  };
  auto too_many_names = [&] {
    return ResourceExhaustedError("refusing " + path_ + ": its symbol names come to more than " +
                                  Mib(limits_.max_name_bytes));
  };
  // A dynamic symbol's name without its version, from the symbol table linked to `symsec`.
  auto symbol_name = [&](const Elf64_Shdr& symsec, const uint8_t* syms, size_t count,
                         uint32_t idx) -> std::optional<std::string> {
    if (idx >= count) return std::nullopt;
    auto sym = Load<Elf64_Sym>(syms + size_t{idx} * sizeof(Elf64_Sym));
    auto raw = string_at(sh[symsec.sh_link], sym.st_name, kMaxNameLength);
    if (!raw || !IsPrintableName(*raw)) return std::nullopt;
    std::string name(*raw);
    if (auto at = name.find('@'); at != std::string::npos) name.resize(at);
    return name;
  };

  // Symbols: .symtab first (richer), then .dynsym for what .symtab lacks.
  for (uint32_t type : {SHT_SYMTAB, SHT_DYNSYM}) {
    for (size_t i = 0; i < shnum; ++i) {
      if (sh[i].sh_type != type) continue;
      auto [syms, count] = table(sh[i], sizeof(Elf64_Sym));
      if (!syms) continue;
      if (type == SHT_SYMTAB && count > 1) has_symtab_ = true;
      for (size_t k = 1; k < count; ++k) {
        auto s = Load<Elf64_Sym>(syms + k * sizeof(Elf64_Sym));
        if (s.st_shndx == SHN_UNDEF || s.st_value == 0) continue;
        auto raw = string_at(sh[sh[i].sh_link], s.st_name, kMaxNameLength);
        if (!raw || !IsPrintableName(*raw)) continue;
        std::string name(*raw);
        bool default_version = true;
        if (auto at = name.find('@'); at != std::string::npos) {
          default_version = name.compare(at, 2, "@@") == 0;
          name.resize(at);
        }
        if (name.empty()) continue;
        ElfSymbol sym{name, s.st_value, std::min<uint64_t>(s.st_size, UINT64_MAX - s.st_value),
                      ELF64_ST_TYPE(s.st_info) == STT_FUNC ||
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
        if (symbols_.size() >= limits_.max_symbols) {
          return ResourceExhaustedError("refusing " + path_ + ": it defines more than " +
                                        std::to_string(limits_.max_symbols) + " symbols");
        }
        if (!keep_name(name)) return too_many_names();
        by_name_.emplace(name, symbols_.size());
        symbols_.push_back(std::move(sym));
      }
    }
  }
  for (size_t i = 0; i < symbols_.size(); ++i) {
    if (symbols_[i].is_function && symbols_[i].size > 0) functions_by_addr_.push_back(i);
  }
  std::sort(functions_by_addr_.begin(), functions_by_addr_.end(),
            [&](size_t a, size_t b) { return symbols_[a].value < symbols_[b].value; });

  // Relocations that write absolute pointers into data (what PyMethodDef tables need), and
  // the GOT slots of imported functions.
  size_t relocations = 0;
  for (size_t i = 0; i < shnum; ++i) {
    if (sh[i].sh_type != SHT_RELA) continue;
    auto [relas, count] = table(sh[i], sizeof(Elf64_Rela));
    if (!relas) continue;
    relocations += count;
    if (relocations > limits_.max_relocations) {
      return ResourceExhaustedError("refusing " + path_ + ": it has more than " +
                                    std::to_string(limits_.max_relocations) + " relocations");
    }
    const Elf64_Shdr& symsec = sh[sh[i].sh_link];
    auto [dsyms, dsym_count] = symsec.sh_type == SHT_DYNSYM
                                   ? table(symsec, sizeof(Elf64_Sym))
                                   : std::make_pair(nullptr, size_t{0});
    for (size_t k = 0; k < count; ++k) {
      auto r = Load<Elf64_Rela>(relas + k * sizeof(Elf64_Rela));
      uint32_t rtype = ELF64_R_TYPE(r.r_info);
      uint32_t idx = ELF64_R_SYM(r.r_info);
      if ((rtype == R_X86_64_GLOB_DAT || rtype == R_X86_64_JUMP_SLOT) && dsyms) {
        if (auto name = symbol_name(symsec, dsyms, dsym_count, idx);
            name && !got_slots_.count(*name)) {
          if (!keep_name(*name)) return too_many_names();
          got_slots_.emplace(std::move(*name), r.r_offset);
        }
      }
      if (rtype == R_X86_64_RELATIVE) {
        relocated_pointers_.emplace_back(r.r_offset, static_cast<uint64_t>(r.r_addend));
      } else if (rtype == R_X86_64_64 && dsyms && idx < dsym_count) {
        auto s = Load<Elf64_Sym>(dsyms + size_t{idx} * sizeof(Elf64_Sym));
        if (s.st_shndx != SHN_UNDEF) {
          relocated_pointers_.emplace_back(r.r_offset,
                                           s.st_value + static_cast<uint64_t>(r.r_addend));
        }
      }
    }
  }
  // The dynamic loader applies relocations in order: for one address, the last one wins.
  std::stable_sort(relocated_pointers_.begin(), relocated_pointers_.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  {
    size_t out = 0;
    for (size_t k = 0; k < relocated_pointers_.size(); ++k) {
      if (k + 1 < relocated_pointers_.size() &&
          relocated_pointers_[k + 1].first == relocated_pointers_[k].first) {
        continue;
      }
      relocated_pointers_[out++] = relocated_pointers_[k];
    }
    relocated_pointers_.resize(out);
  }

  // PLT stubs: the i-th JUMP_SLOT relocation of .rela.plt belongs to the i-th stub, in .plt.sec
  // when the binary has IBT stubs, else in .plt after its 16-byte header.
  const ElfSection* plt_sec = FindSection(".plt.sec");
  const ElfSection* plt = FindSection(".plt");
  for (size_t i = 0; i < shnum; ++i) {
    if (sh[i].sh_type != SHT_RELA || names[i] != ".rela.plt" || (!plt && !plt_sec)) continue;
    const Elf64_Shdr& symsec = sh[sh[i].sh_link];
    if (symsec.sh_type != SHT_DYNSYM && symsec.sh_type != SHT_SYMTAB) continue;
    auto [dsyms, dsym_count] = table(symsec, sizeof(Elf64_Sym));
    auto [relas, count] = table(sh[i], sizeof(Elf64_Rela));
    if (!dsyms || !relas) continue;
    uint64_t slot = 0;
    for (size_t k = 0; k < count; ++k) {
      auto r = Load<Elf64_Rela>(relas + k * sizeof(Elf64_Rela));
      if (ELF64_R_TYPE(r.r_info) != R_X86_64_JUMP_SLOT) continue;
      uint64_t stub = plt_sec ? plt_sec->addr + 16 * slot : plt->addr + 16 * (slot + 1);
      ++slot;
      auto name = symbol_name(symsec, dsyms, dsym_count, ELF64_R_SYM(r.r_info));
      if (!name || plt_stubs_.count(stub)) continue;
      if (!keep_name(*name)) return too_many_names();
      plt_stubs_.emplace(stub, std::move(*name));
    }
  }

  // Dynamic section: DT_NEEDED, DT_SONAME.
  for (size_t i = 0; i < shnum; ++i) {
    if (sh[i].sh_type != SHT_DYNAMIC) continue;
    auto [dyn, count] = table(sh[i], sizeof(Elf64_Dyn));
    if (!dyn) continue;
    const Elf64_Shdr& strtab = sh[sh[i].sh_link];
    for (size_t k = 0; k < count; ++k) {
      auto d = Load<Elf64_Dyn>(dyn + k * sizeof(Elf64_Dyn));
      if (d.d_tag == DT_NULL) break;
      if (d.d_tag != DT_NEEDED && d.d_tag != DT_SONAME) continue;
      auto value = string_at(strtab, d.d_un.d_val, kMaxNameLength);
      if (!value || !IsPrintableName(*value)) continue;
      if (d.d_tag == DT_NEEDED) {
        if (needed_.size() < kMaxNeeded) needed_.emplace_back(*value);
      } else {
        soname_ = std::string(*value);
      }
    }
  }

  // GNU build id (note type 3).
  for (size_t i = 0; i < shnum; ++i) {
    if (sh[i].sh_type != SHT_NOTE || names[i] != ".note.gnu.build-id") continue;
    auto [start, end] = file_range(sh[i]);
    const uint8_t* note = At(start, end - start);
    if (!note || end - start < sizeof(Elf64_Nhdr)) continue;
    auto nh = Load<Elf64_Nhdr>(note);
    uint64_t desc = sizeof(Elf64_Nhdr) + ((uint64_t{nh.n_namesz} + 3) & ~uint64_t{3});
    if (nh.n_type != NT_GNU_BUILD_ID || nh.n_descsz > kMaxBuildIdBytes ||
        !InRange(desc, nh.n_descsz, end - start)) {
      continue;
    }
    static const char kHex[] = "0123456789abcdef";
    build_id_.clear();
    for (uint32_t b = 0; b < nh.n_descsz; ++b) {
      build_id_ += kHex[note[desc + b] >> 4];
      build_id_ += kHex[note[desc + b] & 15];
    }
  }

  // Address classes, merged so that lookups are logarithmic however many headers overlap.
  std::vector<std::pair<uint64_t, uint64_t>> text, rodata, data;
  for (const auto& s : sections_) {
    auto range = std::make_pair(s.addr, SaturatingEnd(s.addr, s.size));
    if (s.flags & SHF_EXECINSTR) text.push_back(range);
    if ((s.flags & SHF_ALLOC) && !(s.flags & SHF_WRITE) && !(s.flags & SHF_EXECINSTR) &&
        s.type == SHT_PROGBITS) {
      rodata.push_back(range);
    }
    if (s.type == SHT_PROGBITS && (s.flags & SHF_ALLOC) && (s.flags & SHF_WRITE)) {
      data.push_back(range);
    }
  }
  text_ranges_ = Merge(std::move(text));
  rodata_ranges_ = Merge(std::move(rodata));
  pointer_data_ranges_ = Merge(std::move(data));
  return ParseEhFrame();
}

std::optional<std::pair<uint64_t, uint64_t>> ElfFile::FunctionExtent(uint64_t vaddr) const {
  if (auto f = FunctionContaining(vaddr); f && f->value == vaddr) {
    return std::make_pair(f->value, f->value + f->size);
  }
  auto it = std::lower_bound(eh_frame_sorted_.begin(), eh_frame_sorted_.end(),
                             std::make_pair(vaddr, uint64_t{0}));
  if (it != eh_frame_sorted_.end() && it->first == vaddr) return *it;
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
  std::optional<uint64_t> found;
  for (const auto& [addr, stub_name] : plt_stubs_) {
    // The lowest address, so that the answer does not depend on hash order.
    if (stub_name == name && (!found || addr < *found)) found = addr;
  }
  return found;
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
  if (vaddr >= s.value && vaddr - s.value < s.size) return s;
  return std::nullopt;
}

std::optional<uint64_t> ElfFile::VaddrToOffset(uint64_t vaddr) const {
  auto it = std::upper_bound(loads_.begin(), loads_.end(), vaddr,
                             [](uint64_t v, const Segment& s) { return v < s.vaddr; });
  if (it == loads_.begin()) return std::nullopt;
  --it;
  if (vaddr - it->vaddr >= it->filesz) return std::nullopt;
  return vaddr - it->vaddr + it->offset;
}

std::string_view ElfFile::FileBytesAt(uint64_t vaddr, uint64_t max_len) const {
  auto it = std::upper_bound(loads_.begin(), loads_.end(), vaddr,
                             [](uint64_t v, const Segment& s) { return v < s.vaddr; });
  if (it == loads_.begin()) return {};
  --it;
  uint64_t rel = vaddr - it->vaddr;
  if (rel >= it->filesz) return {};
  uint64_t len = std::min<uint64_t>(max_len, it->filesz - rel);
  std::string_view bytes = From(it->offset + rel);
  return bytes.substr(0, std::min<uint64_t>(len, bytes.size()));
}

std::vector<std::pair<uint64_t, uint64_t>> ElfFile::FileBackedRanges(uint64_t start,
                                                                    uint64_t end) const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto it = std::upper_bound(loads_.begin(), loads_.end(), start,
                             [](uint64_t v, const Segment& s) { return v < s.vaddr; });
  if (it != loads_.begin()) --it;
  for (; it != loads_.end() && it->vaddr < end; ++it) {
    uint64_t a = std::max(start, it->vaddr);
    uint64_t b = std::min(end, it->vaddr + it->filesz);
    if (a < b) out.emplace_back(a, b);
  }
  return out;
}

std::string_view ElfFile::BytesAt(uint64_t vaddr, uint64_t len) const {
  std::string_view bytes = FileBytesAt(vaddr, len);
  return bytes.size() == len ? bytes : std::string_view();
}

std::optional<std::string> ElfFile::CStringAt(uint64_t vaddr, size_t max_len) const {
  std::string_view bytes = FileBytesAt(vaddr, max_len);
  size_t n = bytes.find('\0');
  if (n == std::string_view::npos) return std::nullopt;  // not terminated within max_len
  return std::string(bytes.substr(0, n));
}

std::optional<uint64_t> ElfFile::PointerAt(uint64_t vaddr) const {
  auto it = std::lower_bound(relocated_pointers_.begin(), relocated_pointers_.end(),
                             std::make_pair(vaddr, uint64_t{0}));
  if (it != relocated_pointers_.end() && it->first == vaddr) return it->second;
  std::string_view bytes = BytesAt(vaddr, 8);
  if (bytes.size() != 8) return std::nullopt;
  uint64_t v;
  std::memcpy(&v, bytes.data(), 8);
  return v;
}

bool ElfFile::IsText(uint64_t vaddr) const { return InRanges(text_ranges_, vaddr); }

bool ElfFile::IsReadOnlyData(uint64_t vaddr) const { return InRanges(rodata_ranges_, vaddr); }

}  // namespace threadscope::target
