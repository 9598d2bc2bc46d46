#include "daemon/dump/memory.h"

namespace threadscope::dump {

const uint8_t* CachedMemory::Page(uint64_t page) const {
  auto it = pages_.find(page);
  if (it != pages_.end()) return it->second.get();
  if (pages_.size() >= kMaxPages) pages_.clear();
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kPage]);
  ++fetches_;
  if (!inner_.Read(page, buf.get(), kPage)) buf.reset();
  const uint8_t* raw = buf.get();
  pages_.emplace(page, std::move(buf));
  return raw;
}

bool CachedMemory::Read(uint64_t addr, void* out, size_t n) const {
  if (n == 0) return true;
  if (addr + n < addr) return false;  // wraps: hostile pointer
  auto* dst = static_cast<uint8_t*>(out);
  // Large reads (a line table, a value stack) go straight through once they span many pages.
  if (n > 16 * kPage) return inner_.Read(addr, out, n);
  while (n > 0) {
    uint64_t page = addr & ~(kPage - 1);
    uint64_t off = addr - page;
    size_t take = static_cast<size_t>(std::min<uint64_t>(n, kPage - off));
    const uint8_t* p = Page(page);
    if (!p) {
      // The page as a whole is not readable (a mapping ends inside it): try the bytes alone.
      if (!inner_.Read(addr, dst, take)) return false;
    } else {
      std::memcpy(dst, p + off, take);
    }
    dst += take;
    addr += take;
    n -= take;
  }
  return true;
}

void FakeMemory::Put(uint64_t addr, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) bytes_[addr + i] = p[i];
}

bool FakeMemory::Read(uint64_t addr, void* out, size_t n) const {
  auto* dst = static_cast<uint8_t*>(out);
  for (size_t i = 0; i < n; ++i) {
    auto it = bytes_.find(addr + i);
    if (it == bytes_.end()) return false;
    dst[i] = it->second;
  }
  return true;
}

}  // namespace threadscope::dump
