// Reading a target's memory a page at a time: a stopped process (process_vm_readv) or a core
// file answer many small reads from the same few pages, so each page is fetched once. Bounded:
// at most kMaxPages are kept, and a page that cannot be read is remembered as such.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/target/py_code.h"

namespace threadscope::dump {

using target::MemoryReader;

class CachedMemory : public MemoryReader {
 public:
  static constexpr uint64_t kPage = 4096;
  static constexpr size_t kMaxPages = 16384;  // 64 MiB

  explicit CachedMemory(const MemoryReader& inner) : inner_(inner) {}
  bool Read(uint64_t addr, void* out, size_t n) const override;
  // Forgets every page (a --nonblocking pass reads the process anew).
  void Clear() const { pages_.clear(); }
  uint64_t fetches() const { return fetches_; }

 private:
  const uint8_t* Page(uint64_t page) const;
  const MemoryReader& inner_;
  mutable std::unordered_map<uint64_t, std::unique_ptr<uint8_t[]>> pages_;  // null: unreadable
  mutable uint64_t fetches_ = 0;
};

// Fixed-size reads; nullopt when the memory is not readable.
inline std::optional<uint64_t> ReadU64(const MemoryReader& m, uint64_t addr) {
  uint64_t v;
  if (!m.Read(addr, &v, 8)) return std::nullopt;
  return v;
}
inline std::optional<uint32_t> ReadU32(const MemoryReader& m, uint64_t addr) {
  uint32_t v;
  if (!m.Read(addr, &v, 4)) return std::nullopt;
  return v;
}
inline std::optional<int32_t> ReadI32(const MemoryReader& m, uint64_t addr) {
  int32_t v;
  if (!m.Read(addr, &v, 4)) return std::nullopt;
  return v;
}
inline std::optional<uint8_t> ReadU8(const MemoryReader& m, uint64_t addr) {
  uint8_t v;
  if (!m.Read(addr, &v, 1)) return std::nullopt;
  return v;
}

// A synthetic address space for tests: byte ranges at chosen addresses.
class FakeMemory : public MemoryReader {
 public:
  void Put(uint64_t addr, const void* data, size_t n);
  void PutU64(uint64_t addr, uint64_t v) { Put(addr, &v, 8); }
  void PutU32(uint64_t addr, uint32_t v) { Put(addr, &v, 4); }
  void PutU8(uint64_t addr, uint8_t v) { Put(addr, &v, 1); }
  bool Read(uint64_t addr, void* out, size_t n) const override;

 private:
  std::unordered_map<uint64_t, uint8_t> bytes_;
};

}  // namespace threadscope::dump
