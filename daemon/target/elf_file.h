// A read-only view of an x86-64 ELF file (executable or shared object).
//
// It answers what target discovery and probe resolution ask: symbols from both .dynsym and
// .symtab (stripped binaries have only the former), file offsets for virtual addresses (what
// uprobes take), bytes and C strings at addresses, and pointers stored in data sections with
// their load-time relocations applied, so tables such as PyMethodDef can be read from
// position-independent code.
//
// The file is chosen by the traced process, so it is hostile input: every header field is
// checked once, when the file is parsed, and every lookup is bounds-checked against the bytes
// actually read. Only what planning needs is read (headers, symbol, string and relocation
// tables, notes, .eh_frame and the loadable segments: never .debug_*), at most
// ElfLimits::max_read_bytes of it, so a sparse or padded file costs what its useful parts cost.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/target/budget.h"
#include "daemon/target/target_file.h"

namespace threadscope::target {

// Caps on what one binary may make the reader hold. Each is far above any CPython or libc
// (measured: pyenv's libpython3.12 with .symtab: 14k symbols, 40k relocations, 7.8 MiB read of
// its 30 MiB; Debian's static python3.15: 14k FDEs, 9 MiB); exceeding one is an error.
struct ElfLimits {
  uint64_t max_read_bytes = uint64_t{256} << 20;
  size_t max_symbols = size_t{1} << 20;
  uint64_t max_name_bytes = uint64_t{64} << 20;  // symbol, PLT and GOT names kept, in total
  size_t max_relocations = size_t{1} << 22;
  size_t max_fdes = size_t{1} << 20;
};

struct ElfOptions {
  ElfLimits limits;
  std::shared_ptr<Budget> budget;  // charged by reading here and by the searches in cpython.h
};

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
  uint64_t size = 0;  // clamped to the end of the file (except SHT_NOBITS)
};

class ElfFile {
 public:
  // Opens a path chosen by the caller (a binary on disk, /proc/PID/exe) with the checks of
  // OpenRegularFile: never a FIFO, device or oversized file.
  static StatusOr<std::unique_ptr<ElfFile>> Open(const std::string& path,
                                                 const ElfOptions& options = {});
  // Parses an already verified file; `name` is how reports and errors call it.
  static StatusOr<std::unique_ptr<ElfFile>> FromFile(FileRef file, std::string name,
                                                     const ElfOptions& options = {});
  // Parses bytes in memory (fuzzers, crafted test files).
  static StatusOr<std::unique_ptr<ElfFile>> FromBytes(std::string_view bytes, std::string name,
                                                      const ElfOptions& options = {});
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
  // The planning budget this file's searches charge (null: none).
  Budget* budget() const { return budget_.get(); }
  // Bytes read from the file: what parsing it cost.
  uint64_t bytes_read() const { return bytes_read_; }

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
  // File-backed bytes at [vaddr, vaddr+len); empty if not all of them are in the file.
  std::string_view BytesAt(uint64_t vaddr, uint64_t len) const;
  // The file-backed bytes from vaddr on, at most max_len: as many as the file has (empty when
  // vaddr itself is not in it). What loops over a range a header claims should iterate.
  std::string_view FileBytesAt(uint64_t vaddr, uint64_t max_len) const;
  // The parts of the vaddr range [start, end) whose bytes are in the file, in order.
  std::vector<std::pair<uint64_t, uint64_t>> FileBackedRanges(uint64_t start, uint64_t end) const;
  // The NUL-terminated string at vaddr, if it ends within max_len bytes of the file.
  std::optional<std::string> CStringAt(uint64_t vaddr, size_t max_len = 256) const;
  // The 8-byte pointer stored at vaddr as the loader would leave it (relative to the load
  // bias for shared objects): a RELATIVE/64 relocation if there is one, else the file bytes.
  std::optional<uint64_t> PointerAt(uint64_t vaddr) const;
  // True when vaddr lies in an executable / read-only-data section.
  bool IsText(uint64_t vaddr) const;
  bool IsReadOnlyData(uint64_t vaddr) const;

  // NUL-terminated strings in .rodata that satisfy `pred`.
  template <typename Pred>
  std::vector<std::pair<uint64_t, std::string_view>> FindRodataStrings(Pred pred) const;

  // [start, end) vaddr ranges of the writable data sections that can hold pointers to code
  // (.data, .data.rel.ro...), merged: each byte once, however many headers claim it.
  const std::vector<std::pair<uint64_t, uint64_t>>& PointerDataRanges() const {
    return pointer_data_ranges_;
  }

 private:
  using Reader = std::function<Status(uint64_t offset, void* out, size_t n)>;
  struct Region {
    uint64_t offset;
    std::vector<uint8_t> bytes;
  };
  struct Segment {
    uint64_t vaddr, offset, filesz, memsz;
    uint32_t flags;
  };

  ElfFile() = default;
  Status Parse(const Reader& read, uint64_t file_size);
  Status ReadRegions(const Reader& read, std::vector<std::pair<uint64_t, uint64_t>> ranges);
  // The loaded bytes at file offset [off, off+len), or null.
  const uint8_t* At(uint64_t off, uint64_t len) const;
  // The loaded bytes from file offset `off` to the end of their region.
  std::string_view From(uint64_t off) const;
  Status ParseEhFrame();

  std::string path_;
  std::shared_ptr<Budget> budget_;
  ElfLimits limits_;
  uint64_t file_size_ = 0;
  uint64_t bytes_read_ = 0;
  std::vector<Region> regions_;  // sorted, disjoint
  bool is_dyn_ = false;
  bool has_symtab_ = false;
  std::vector<ElfSection> sections_;
  std::vector<Segment> loads_;  // file-backed, sorted by vaddr, disjoint
  std::vector<ElfSymbol> symbols_;
  std::unordered_map<std::string, size_t> by_name_;  // index into symbols_
  std::vector<size_t> functions_by_addr_;             // indices, sorted by value
  std::vector<std::pair<uint64_t, uint64_t>> relocated_pointers_;  // sorted by address
  std::unordered_map<uint64_t, std::string> plt_stubs_;
  std::vector<std::pair<uint64_t, uint64_t>> eh_frame_sorted_;  // (begin, end), sorted
  std::unordered_map<std::string, uint64_t> got_slots_;
  std::vector<std::pair<uint64_t, uint64_t>> text_ranges_;         // merged vaddr ranges
  std::vector<std::pair<uint64_t, uint64_t>> rodata_ranges_;
  std::vector<std::pair<uint64_t, uint64_t>> pointer_data_ranges_;
  std::vector<std::string> needed_;
  std::string soname_;
  std::string build_id_;
};

template <typename Pred>
std::vector<std::pair<uint64_t, std::string_view>> ElfFile::FindRodataStrings(Pred pred) const {
  std::vector<std::pair<uint64_t, std::string_view>> out;
  for (const auto& s : sections_) {
    if (s.name != ".rodata") continue;
    std::string_view bytes = FileBytesAt(s.addr, s.size);
    size_t i = 0;
    while (i < bytes.size()) {
      size_t start = i;
      while (i < bytes.size() && bytes[i] != '\0') ++i;
      if (i < bytes.size() && i > start) {  // only terminated strings
        std::string_view str = bytes.substr(start, i - start);
        if (pred(str)) out.emplace_back(s.addr + start, str);
      }
      ++i;
    }
  }
  return out;
}

}  // namespace threadscope::target
