// A read-only view of an x86-64 ELF file (executable or shared object), read into memory.
//
// It answers what target discovery and probe resolution ask: symbols from both .dynsym and
// .symtab (stripped binaries have only the former), file offsets for virtual addresses (what
// uprobes take), bytes and C strings at addresses, and pointers stored in data sections with
// their load-time relocations applied, so tables such as PyMethodDef can be read from
// position-independent code.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemon/common/status.h"

namespace threadscope::target {

struct ElfSymbol {
  std::string name;  // without version suffix
  uint64_t value = 0;
  uint64_t size = 0;
  bool is_function = false;
  bool is_global = false;
  bool from_dynsym = false;
};

struct ElfSection {
  std::string name;
  uint32_t type = 0;
  uint64_t flags = 0;
  uint64_t addr = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
};

class ElfFile {
 public:
  static StatusOr<std::unique_ptr<ElfFile>> Open(const std::string& path);
  ~ElfFile();
  ElfFile(const ElfFile&) = delete;
  ElfFile& operator=(const ElfFile&) = delete;

  const std::string& path() const { return path_; }
  bool is_shared_object() const { return is_dyn_; }
  bool has_symtab() const { return has_symtab_; }
  const std::vector<ElfSection>& sections() const { return sections_; }
  const ElfSection* FindSection(std::string_view name) const;
  const std::vector<std::string>& needed() const { return needed_; }
  const std::string& soname() const { return soname_; }
  const std::string& build_id() const { return build_id_; }  // hex, empty if absent

  // Exact-name lookup; prefers a defined function symbol. Symbols are keyed without their
  // "@VERSION" suffix; when several versions exist the default ("@@") one wins.
  std::optional<ElfSymbol> FindSymbol(std::string_view name) const;
  // Compiler clones of a function: "name.constprop.0", "name.part.0", "name.isra.0"...
  std::vector<ElfSymbol> FindClones(std::string_view name) const;
  // Name of the imported function whose PLT stub is at vaddr ("PyOS_snprintf"), if any.
  std::optional<std::string> PltStubName(uint64_t vaddr) const;
  // Address of the PLT stub for an imported function, if the binary has one.
  std::optional<uint64_t> PltStubFor(std::string_view name) const;
  // GOT slot holding the address of an imported function (for "call *slot(%rip)", -fno-plt).
  std::optional<uint64_t> GotSlotFor(std::string_view name) const;
  // Whatever vaddr is the start of: a function symbol or a PLT stub.
  std::optional<std::string> NameAt(uint64_t vaddr) const;
  // The function symbol whose [value, value+size) contains vaddr.
  std::optional<ElfSymbol> FunctionContaining(uint64_t vaddr) const;
  // [start, end) of the function containing vaddr: symbols first, then .eh_frame.
  std::optional<std::pair<uint64_t, uint64_t>> FunctionAround(uint64_t vaddr) const;
  // [start, end) of the function starting at vaddr: from the symbol table, else from the
  // unwind tables (.eh_frame), which stripped binaries keep.
  std::optional<std::pair<uint64_t, uint64_t>> FunctionExtent(uint64_t vaddr) const;
  // Every defined symbol, both tables.
  const std::vector<ElfSymbol>& symbols() const { return symbols_; }

  // uprobes are placed by file offset.
  std::optional<uint64_t> VaddrToOffset(uint64_t vaddr) const;
  // File-backed bytes at [vaddr, vaddr+len); empty if not fully in the file.
  std::string_view BytesAt(uint64_t vaddr, uint64_t len) const;
  std::optional<std::string> CStringAt(uint64_t vaddr, size_t max_len = 256) const;
  // The 8-byte pointer stored at vaddr as the loader would leave it (relative to the load
  // bias for shared objects): a RELATIVE/64 relocation if there is one, else the file bytes.
  std::optional<uint64_t> PointerAt(uint64_t vaddr) const;
  // True when vaddr lies in an executable / read-only-data section.
  bool IsText(uint64_t vaddr) const;
  bool IsReadOnlyData(uint64_t vaddr) const;

  // NUL-terminated strings in read-only data that satisfy `pred` (scan of .rodata).
  template <typename Pred>
  std::vector<std::pair<uint64_t, std::string_view>> FindRodataStrings(Pred pred) const;

  // Address ranges of data sections that can hold pointers to code (.data, .data.rel.ro...).
  std::vector<const ElfSection*> PointerDataSections() const;

 private:
  ElfFile() = default;
  Status Parse();
  void ParseEhFrame();

  std::string path_;
  std::vector<uint8_t> storage_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool is_dyn_ = false;
  bool has_symtab_ = false;
  std::vector<ElfSection> sections_;
  struct Segment {
    uint64_t vaddr, offset, filesz, memsz;
    uint32_t flags;
  };
  std::vector<Segment> loads_;
  std::vector<ElfSymbol> symbols_;
  std::unordered_map<std::string, size_t> by_name_;  // index into symbols_
  std::vector<size_t> functions_by_addr_;             // indices, sorted by value
  std::unordered_map<uint64_t, uint64_t> relocated_pointers_;
  std::unordered_map<uint64_t, std::string> plt_stubs_;
  std::unordered_map<uint64_t, uint64_t> eh_frame_ranges_;  // pc_begin -> pc_range
  std::vector<std::pair<uint64_t, uint64_t>> eh_frame_sorted_;  // (begin, end), sorted
  std::unordered_map<std::string, uint64_t> got_slots_;
  std::vector<std::string> needed_;
  std::string soname_;
  std::string build_id_;
};

template <typename Pred>
std::vector<std::pair<uint64_t, std::string_view>> ElfFile::FindRodataStrings(Pred pred) const {
  std::vector<std::pair<uint64_t, std::string_view>> out;
  for (const auto& s : sections_) {
    if (s.name != ".rodata") continue;
    if (s.offset + s.size > size_) continue;
    const char* base = reinterpret_cast<const char*>(data_ + s.offset);
    size_t i = 0;
    while (i < s.size) {
      size_t start = i;
      while (i < s.size && base[i] != '\0') ++i;
      if (i > start) {
        std::string_view str(base + start, i - start);
        if (pred(str)) out.emplace_back(s.addr + start, str);
      }
      ++i;
    }
  }
  return out;
}

}  // namespace threadscope::target
