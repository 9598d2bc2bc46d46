// Writes small x86-64 ELF files by hand, for tests of the ELF reader on crafted and corrupt
// input and as seeds for its fuzzer. No compiler, no interpreter binary: every byte is ours.
//
// Layout (fixed, so tests can name addresses before building): one PT_LOAD from file offset 0
// at kBase covering the allocated sections, each at its own vaddr = kBase + file offset:
//   .plt 0x401000, .rodata 0x402000, .data 0x403000, .eh_frame 0x404000,
//   .note.gnu.build-id 0x405000, .text 0x410000 (grows as code is added);
// then the tables the loader does not map (.dynsym, .dynstr, .symtab, .strtab, .rela.dyn,
// .rela.plt, .dynamic, .shstrtab) and the section headers.
#pragma once

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace threadscope::testing {

class ElfBuilder {
 public:
  static constexpr uint64_t kBase = 0x400000;
  static constexpr uint64_t kPlt = 0x401000;
  static constexpr uint64_t kRodata = 0x402000;
  static constexpr uint64_t kData = 0x403000;
  static constexpr uint64_t kEhFrame = 0x404000;
  static constexpr uint64_t kNote = 0x405000;
  static constexpr uint64_t kText = 0x410000;
  static constexpr uint64_t kSlot = 0x1000;  // capacity of each section but .text

  // Appends bytes to a section and returns their vaddr.
  uint64_t Text(const std::string& bytes) { return Append(&text_, kText, bytes, 1 << 30); }
  uint64_t Rodata(const std::string& bytes) { return Append(&rodata_, kRodata, bytes, kSlot); }
  uint64_t Data(const std::string& bytes) { return Append(&data_, kData, bytes, kSlot); }
  uint64_t CString(const std::string& s) { return Rodata(s + std::string(1, '\0')); }
  uint64_t text_end() const { return kText + text_.size(); }

  // A symbol in .dynsym (dynamic) or .symtab.
  void Symbol(const std::string& name, uint64_t value, uint64_t size, bool function,
              bool dynamic = true, bool global = true) {
    Elf64_Sym s{};
    s.st_name = 0;  // set at build time
    s.st_info = ELF64_ST_INFO(global ? STB_GLOBAL : STB_LOCAL, function ? STT_FUNC : STT_OBJECT);
    s.st_shndx = 1;  // any defined section
    s.st_value = value;
    s.st_size = size;
    (dynamic ? dynsyms_ : symtab_).push_back({name, s});
  }
  // An imported function: an undefined .dynsym entry and a JUMP_SLOT in .rela.plt; its stub
  // is the next 16-byte slot of .plt (after the 16-byte header). Returns the stub's vaddr.
  uint64_t Import(const std::string& name) {
    Elf64_Sym s{};
    s.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
    dynsyms_.push_back({name, s});
    uint64_t slot = imports_.size();
    imports_.push_back({name, dynsyms_.size()});  // 1-based index once the null symbol is in
    return kPlt + 16 * (slot + 1);
  }
  // The GOT slot of the i-th import (its JUMP_SLOT relocation's address): the end of .data.
  static uint64_t GotSlot(size_t import_index) { return kData + kSlot - 8 * (import_index + 1); }
  // R_X86_64_RELATIVE at `where` with `addend` (a pointer PIE code would store).
  void Relative(uint64_t where, uint64_t addend) { relatives_.push_back({where, addend}); }
  // An .eh_frame FDE describing [start, start+len).
  void Fde(uint64_t start, uint64_t len) { fdes_.push_back({start, len}); }
  void BuildId(const std::string& id) { build_id_ = id; }
  void Needed(const std::string& lib) { needed_.push_back(lib); }
  void set_shared_object(bool dyn) { dyn_ = dyn; }

  std::string Build() const;

  // Little-endian helpers for code and data.
  static std::string U32(uint32_t v) { return std::string(reinterpret_cast<char*>(&v), 4); }
  static std::string U64(uint64_t v) { return std::string(reinterpret_cast<char*>(&v), 8); }
  // mov $imm32,%edx / %ecx / %edi; call rel32 / jmp rel32 from `at` to `target`; ret.
  static std::string MovEdx(uint32_t v) { return "\xba" + U32(v); }
  static std::string MovEcx(uint32_t v) { return "\xb9" + U32(v); }
  static std::string MovEdi(uint32_t v) { return "\xbf" + U32(v); }
  static std::string Call(uint64_t at, uint64_t target) {
    return "\xe8" + U32(static_cast<uint32_t>(target - (at + 5)));
  }
  static std::string Ret() { return "\xc3"; }

 private:
  static uint64_t Append(std::string* section, uint64_t base, const std::string& bytes,
                         uint64_t capacity) {
    if (section->size() + bytes.size() > capacity) throw std::length_error("section full");
    uint64_t at = base + section->size();
    *section += bytes;
    return at;
  }

  std::string text_, rodata_, data_;
  std::vector<std::pair<std::string, Elf64_Sym>> dynsyms_, symtab_;
  std::vector<std::pair<std::string, size_t>> imports_;  // name, .dynsym index
  std::vector<std::pair<uint64_t, uint64_t>> relatives_;
  std::vector<std::pair<uint64_t, uint64_t>> fdes_;
  std::string build_id_;
  std::vector<std::string> needed_;
  bool dyn_ = false;
};

// ---- implementation (header-only: tests and fuzzers each build it in) ----

namespace elf_builder_internal {

struct Out {
  std::string bytes;
  void At(uint64_t off, const std::string& b) {
    if (bytes.size() < off + b.size()) bytes.resize(off + b.size(), '\0');
    std::memcpy(bytes.data() + off, b.data(), b.size());
  }
  uint64_t AppendAligned(const std::string& b, uint64_t align = 16) {
    uint64_t off = (bytes.size() + align - 1) / align * align;
    At(off, b);
    return off;
  }
};

template <typename T>
std::string Raw(const T& v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
}

struct StrTab {
  std::string data{std::string(1, '\0')};
  std::map<std::string, uint32_t> index;
  uint32_t Add(const std::string& s) {
    auto it = index.find(s);
    if (it != index.end()) return it->second;
    uint32_t off = static_cast<uint32_t>(data.size());
    data += s;
    data += '\0';
    index[s] = off;
    return off;
  }
};

}  // namespace elf_builder_internal

inline std::string ElfBuilder::Build() const {
  using namespace elf_builder_internal;
  Out out;
  // Allocated contents at their fixed offsets (vaddr - kBase).
  std::string plt(16 * (imports_.size() + 1), '\xcc');
  out.At(kPlt - kBase, plt);
  out.At(kRodata - kBase, rodata_);
  out.At(kData - kBase, data_);
  // .eh_frame: one CIE ("zR", FDE pointers pcrel|sdata4), then the FDEs, then a terminator.
  std::string eh;
  {
    std::string cie = U32(0) + std::string("\x01zR\0", 4) + "\x01\x78\x10\x01\x1b" +
                      std::string("\x0c\x07\x08\x90\x01\0\0", 7);
    eh += U32(static_cast<uint32_t>(cie.size())) + cie;
    for (const auto& [start, len] : fdes_) {
      uint64_t rec = kEhFrame + eh.size();
      uint32_t cie_ptr = static_cast<uint32_t>(eh.size() + 4);
      uint64_t pc_field = rec + 8;
      std::string fde = U32(cie_ptr) + U32(static_cast<uint32_t>(start - pc_field)) +
                        U32(static_cast<uint32_t>(len)) + std::string("\0\0\0\0", 4);
      eh += U32(static_cast<uint32_t>(fde.size())) + fde;
    }
    eh += U32(0);
  }
  out.At(kEhFrame - kBase, eh);
  std::string note;
  if (!build_id_.empty()) {
    Elf64_Nhdr nh{4, static_cast<Elf64_Word>(build_id_.size()), NT_GNU_BUILD_ID};
    note = Raw(nh) + std::string("GNU\0", 4) + build_id_;
    out.At(kNote - kBase, note);
  }
  out.At(kText - kBase, text_.empty() ? Ret() : text_);
  uint64_t alloc_end = out.bytes.size();

  // Dynamic symbols and strings.
  StrTab dynstr, strtab, shstr;
  std::string dynsym = Raw(Elf64_Sym{});
  for (const auto& [name, sym] : dynsyms_) {
    Elf64_Sym s = sym;
    s.st_name = dynstr.Add(name);
    dynsym += Raw(s);
  }
  std::string symtab = Raw(Elf64_Sym{});
  for (const auto& [name, sym] : symtab_) {
    Elf64_Sym s = sym;
    s.st_name = strtab.Add(name);
    symtab += Raw(s);
  }
  std::string rela_dyn, rela_plt, dynamic;
  for (const auto& [where, addend] : relatives_) {
    Elf64_Rela r{where, ELF64_R_INFO(0, R_X86_64_RELATIVE), static_cast<Elf64_Sxword>(addend)};
    rela_dyn += Raw(r);
  }
  for (size_t i = 0; i < imports_.size(); ++i) {
    Elf64_Rela r{GotSlot(i), ELF64_R_INFO(imports_[i].second, R_X86_64_JUMP_SLOT), 0};
    rela_plt += Raw(r);
  }
  for (const auto& lib : needed_) {
    Elf64_Dyn d{};
    d.d_tag = DT_NEEDED;
    d.d_un.d_val = dynstr.Add(lib);
    dynamic += Raw(d);
  }
  dynamic += Raw(Elf64_Dyn{});

  struct Sec {
    std::string name;
    uint32_t type;
    uint64_t flags, addr, offset, size;
    uint32_t link;
    uint64_t entsize;
  };
  std::vector<Sec> secs;
  secs.push_back({"", SHT_NULL, 0, 0, 0, 0, 0, 0});
  auto alloc = [&](const std::string& name, uint32_t type, uint64_t flags, uint64_t addr,
                   uint64_t size) {
    secs.push_back({name, type, flags, addr, addr - kBase, size, 0, 0});
  };
  alloc(".plt", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, kPlt, plt.size());
  alloc(".rodata", SHT_PROGBITS, SHF_ALLOC, kRodata, rodata_.size());
  alloc(".data", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, kData, kSlot);
  alloc(".eh_frame", SHT_PROGBITS, SHF_ALLOC, kEhFrame, eh.size());
  if (!note.empty()) alloc(".note.gnu.build-id", SHT_NOTE, SHF_ALLOC, kNote, note.size());
  alloc(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, kText, text_.empty() ? 1 : text_.size());
  auto table = [&](const std::string& name, uint32_t type, const std::string& data,
                   uint32_t link, uint64_t entsize) {
    uint64_t off = out.AppendAligned(data, 8);
    secs.push_back({name, type, 0, 0, off, data.size(), link, entsize});
    return static_cast<uint32_t>(secs.size() - 1);
  };
  uint32_t dynstr_idx = table(".dynstr", SHT_STRTAB, dynstr.data, 0, 0);
  uint32_t dynsym_idx = table(".dynsym", SHT_DYNSYM, dynsym, dynstr_idx, sizeof(Elf64_Sym));
  if (!symtab_.empty()) {
    uint32_t strtab_idx = table(".strtab", SHT_STRTAB, strtab.data, 0, 0);
    table(".symtab", SHT_SYMTAB, symtab, strtab_idx, sizeof(Elf64_Sym));
  }
  if (!rela_dyn.empty()) table(".rela.dyn", SHT_RELA, rela_dyn, dynsym_idx, sizeof(Elf64_Rela));
  if (!rela_plt.empty()) table(".rela.plt", SHT_RELA, rela_plt, dynsym_idx, sizeof(Elf64_Rela));
  table(".dynamic", SHT_DYNAMIC, dynamic, dynstr_idx, sizeof(Elf64_Dyn));
  for (auto& s : secs) shstr.Add(s.name);
  shstr.Add(".shstrtab");
  uint32_t shstr_idx = table(".shstrtab", SHT_STRTAB, shstr.data, 0, 0);

  std::string shdrs;
  for (const auto& s : secs) {
    Elf64_Shdr h{};
    h.sh_name = shstr.Add(s.name);
    h.sh_type = s.type;
    h.sh_flags = s.flags;
    h.sh_addr = s.addr;
    h.sh_offset = s.offset;
    h.sh_size = s.size;
    h.sh_link = s.link;
    h.sh_entsize = s.entsize;
    h.sh_addralign = 8;
    shdrs += Raw(h);
  }
  uint64_t shoff = out.AppendAligned(shdrs, 8);

  Elf64_Ehdr eh_hdr{};
  std::memcpy(eh_hdr.e_ident, ELFMAG, SELFMAG);
  eh_hdr.e_ident[EI_CLASS] = ELFCLASS64;
  eh_hdr.e_ident[EI_DATA] = ELFDATA2LSB;
  eh_hdr.e_ident[EI_VERSION] = EV_CURRENT;
  eh_hdr.e_type = dyn_ ? ET_DYN : ET_EXEC;
  eh_hdr.e_machine = EM_X86_64;
  eh_hdr.e_version = EV_CURRENT;
  eh_hdr.e_entry = kText;
  eh_hdr.e_phoff = sizeof(Elf64_Ehdr);
  eh_hdr.e_shoff = shoff;
  eh_hdr.e_ehsize = sizeof(Elf64_Ehdr);
  eh_hdr.e_phentsize = sizeof(Elf64_Phdr);
  eh_hdr.e_phnum = 1;
  eh_hdr.e_shentsize = sizeof(Elf64_Shdr);
  eh_hdr.e_shnum = static_cast<uint16_t>(secs.size());
  eh_hdr.e_shstrndx = static_cast<uint16_t>(shstr_idx);
  Elf64_Phdr load{};
  load.p_type = PT_LOAD;
  load.p_flags = PF_R | PF_W | PF_X;
  load.p_offset = 0;
  load.p_vaddr = kBase;
  load.p_paddr = kBase;
  load.p_filesz = alloc_end;
  load.p_memsz = alloc_end;
  load.p_align = 0x1000;
  out.At(0, Raw(eh_hdr));
  out.At(sizeof(Elf64_Ehdr), Raw(load));
  return out.bytes;
}

// A small CPython-shaped binary: Py_GetVersion formatting PY_VERSION (or Py_Version, 3.11+),
// the _thread method table, a static lock type, and a static function (known only from
// .eh_frame) calling sem_wait through the PLT and through its GOT slot.
struct FakePython {
  std::string bytes;
  uint64_t get_version = 0, start_new_thread = 0, waiter = 0, lock_new = 0, lock_methods = 0;
  uint64_t sem_wait_stub = 0;
};

struct FakePythonOptions {
  std::string version = "3.9.18";
  bool py_version_symbol = false;  // 3.11+: Py_Version holds PY_VERSION_HEX
  bool full_symbols = false;       // a .symtab naming the static functions too
  bool pie = false;                // ET_DYN, pointers in data through RELATIVE relocations
  std::string build_id;
};

inline FakePython MakeFakePython(const FakePythonOptions& o = {}) {
  ElfBuilder b;
  FakePython f;
  b.set_shared_object(o.pie);
  if (!o.build_id.empty()) b.BuildId(o.build_id);
  b.Needed("libc.so.6");
  uint64_t fmt = b.CString("%.80s (%.80s) %.80s");
  uint64_t ver = b.CString(o.version);
  uint64_t snprintf_stub = b.Import("PyOS_snprintf");
  f.sem_wait_stub = b.Import("sem_wait");
  f.get_version = b.text_end();
  std::string code = ElfBuilder::MovEdx(static_cast<uint32_t>(fmt)) +
                     ElfBuilder::MovEcx(static_cast<uint32_t>(ver));
  code += ElfBuilder::Call(f.get_version + code.size(), snprintf_stub) + ElfBuilder::Ret();
  b.Text(code);
  b.Symbol("Py_GetVersion", f.get_version, code.size(), true);
  if (o.py_version_symbol) {
    b.Symbol("Py_Version", b.Rodata(ElfBuilder::U32(0x030b07f0)), 4, false);
  }
  b.Symbol("Py_Initialize", b.Text(ElfBuilder::Ret()), 1, true);
  b.Symbol("PyEval_SaveThread", b.Text(ElfBuilder::Ret()), 1, true);
  f.start_new_thread = b.Text(ElfBuilder::Ret());
  f.lock_new = b.Text(ElfBuilder::Ret());
  // The static waiter: sem_wait@plt twice, then through the GOT slot, each result tested.
  f.waiter = b.text_end();
  std::string w;
  for (int i = 0; i < 2; ++i) {
    w += ElfBuilder::Call(f.waiter + w.size(), f.sem_wait_stub);
    w += std::string("\x85\xc0\x75\x00", 4);  // test %eax,%eax; jne .+0
  }
  uint64_t at = f.waiter + w.size();
  w += "\xff\x15" + ElfBuilder::U32(static_cast<uint32_t>(ElfBuilder::GotSlot(1) - (at + 6)));
  w += std::string("\x85\xc0\x75\x00", 4) + ElfBuilder::Ret();
  b.Text(w);
  b.Fde(f.waiter, w.size());
  if (o.full_symbols) {
    b.Symbol("thread_PyThread_start_new_thread", f.start_new_thread, 1, true, false, false);
    b.Symbol("waiter", f.waiter, w.size(), true, false, false);
  }
  // PyMethodDef tables: {name, function, flags, doc}; PIE stores the pointers as relocations.
  auto ptr = [&](uint64_t where, uint64_t value) {
    if (!o.pie) return ElfBuilder::U64(value);
    b.Relative(where, value);
    return ElfBuilder::U64(0);
  };
  auto def = [&](const std::string& name, uint64_t fn) {
    uint64_t name_ptr = b.CString(name);
    uint64_t at = b.Data("");
    std::string rec = ptr(at, name_ptr) + ptr(at + 8, fn) + ElfBuilder::U64(1) + ElfBuilder::U64(0);
    b.Data(rec);
  };
  def("start_new_thread", f.start_new_thread);
  def("allocate_lock", f.lock_new);
  def("get_ident", f.lock_new);
  b.Data(std::string(32, '\0'));
  // The lock type: tp_name at -208 and tp_new at +80 from tp_methods, whose table follows
  // the type object (296 bytes of it here).
  uint64_t lock_name = b.CString("lock");
  uint64_t type = b.Data("");
  f.lock_methods = type + 296;
  b.Data(ptr(type, lock_name) + std::string(200, '\0'));
  b.Data(ptr(type + 208, f.lock_methods) + std::string(72, '\0'));
  b.Data(ptr(type + 288, f.lock_new));
  def("acquire_lock", f.lock_new);
  def("release_lock", f.lock_new);
  def("locked_lock", f.lock_new);
  b.Data(std::string(32, '\0'));
  f.bytes = b.Build();
  return f;
}

}  // namespace threadscope::testing
