// From a captured frame, (code object, instruction), to "file:line function", by reading the
// target's memory. The line-table decoders are pure transcriptions of CPython's own
// PyCode_Addr2Line for each format; the rest reads objects through a MemoryReader.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "daemon/target/py_layout.h"

namespace threadscope::target {

// Line of the instruction at `offset` (bytes for kLnotab36, 2-byte code units otherwise);
// nullopt where the table says the instruction has no line.
std::optional<int> LineForOffset(LineTableFormat format, std::string_view table, int firstlineno,
                                 int64_t offset);

class MemoryReader {
 public:
  virtual ~MemoryReader() = default;
  // Copies n bytes at addr; false when any of them cannot be read.
  virtual bool Read(uint64_t addr, void* out, size_t n) const = 0;
};

// Another process's memory, through process_vm_readv (root, or the same user under ptrace rules).
// Whatever it reads is the target's to choose: PyCodeResolver bounds every length and count it
// takes from there (tests/fuzz/py_code_fuzzer.cc serves it fuzzed bytes through MemoryReader).
class ProcessMemory : public MemoryReader {
 public:
  explicit ProcessMemory(pid_t pid) : pid_(pid) {}
  bool Read(uint64_t addr, void* out, size_t n) const override;

 private:
  pid_t pid_;
};

struct ResolvedFrame {
  enum class Kind {
    kPython,      // file/function/line are filled (line may still be unknown)
    kNotPython,   // not a code object, or a 3.11+ frame that has not started: skip it
    kUnreadable,  // the code object could not be read
  };
  Kind kind = Kind::kUnreadable;
  std::string file;
  std::string function;
  std::optional<int> line;
};

// Names the frames records carry, (code object, instruction) pairs. PyCodeResolver reads them
// from the target's memory; the engine's tests answer from a table.
class FrameResolver {
 public:
  virtual ~FrameResolver() = default;
  virtual ResolvedFrame Resolve(uint64_t code, uint64_t instr) = 0;
};

class PyCodeResolver final : public FrameResolver {
 public:
  PyCodeResolver(const MemoryReader& memory, PyStackSupport support)
      : memory_(memory), support_(std::move(support)) {}

  ResolvedFrame Resolve(uint64_t code, uint64_t instr) override;
  // Bytes the code cache holds (bounded: py_code.cc kMaxCacheBytes).
  uint64_t cache_bytes() const { return cache_bytes_; }

 private:
  struct CodeInfo {
    std::string file;
    std::string function;
    int firstlineno = 0;
    int firsttraceable = 0;
    int64_t code_units = 0;  // instructions in 2-byte units (the valid range of an offset)
    std::string table;
    uint64_t filename_obj = 0;  // to notice a freed code object's address being reused
    uint64_t name_obj = 0;
  };
  const CodeInfo* Code(uint64_t code);
  static uint64_t CacheCost(const CodeInfo& info);
  std::optional<std::string> ReadString(uint64_t obj) const;
  std::optional<std::string> ReadBytes(uint64_t obj) const;
  bool ReadU64(uint64_t addr, uint64_t* out) const { return memory_.Read(addr, out, 8); }
  // Free-threaded: the start of the per-thread bytecode copy of `code` that holds `instr`.
  std::optional<uint64_t> TlbcCopyHolding(uint64_t code, uint64_t instr, int64_t code_units) const;

  const MemoryReader& memory_;
  PyStackSupport support_;
  std::unordered_map<uint64_t, CodeInfo> codes_;
  uint64_t cache_bytes_ = 0;
};

}  // namespace threadscope::target
