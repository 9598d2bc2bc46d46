#include "daemon/dump/bytecode.h"

#include <algorithm>

namespace threadscope::dump {

namespace {

// 6-bit groups, most significant first; bit 6 says another group follows (bit 7 of an entry's
// first byte marks the entry's start and is not part of the value).
bool Varint(std::string_view t, size_t* i, uint32_t* out) {
  if (*i >= t.size()) return false;
  uint8_t b = static_cast<uint8_t>(t[(*i)++]);
  uint64_t v = b & 63;
  int groups = 1;
  while (b & 64) {
    if (*i >= t.size() || ++groups > 6) return false;
    b = static_cast<uint8_t>(t[(*i)++]);
    v = (v << 6) | (b & 63);
  }
  if (v > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

}  // namespace

std::vector<ExceptionEntry> ParseExceptionTable(std::string_view t) {
  std::vector<ExceptionEntry> out;
  size_t i = 0;
  while (i < t.size() && out.size() < 65536) {
    if (!(static_cast<uint8_t>(t[i]) & 128)) break;  // not at an entry's start
    ExceptionEntry e;
    uint32_t size, depth_lasti;
    if (!Varint(t, &i, &e.start) || !Varint(t, &i, &size) || !Varint(t, &i, &e.target) ||
        !Varint(t, &i, &depth_lasti)) {
      break;
    }
    e.end = e.start + size;
    e.depth = depth_lasti >> 1;
    e.lasti = depth_lasti & 1;
    out.push_back(e);
  }
  return out;
}

const ExceptionEntry* CoveringEntry(const std::vector<ExceptionEntry>& table, uint32_t offset) {
  for (const auto& e : table) {
    if (e.start <= offset && offset < e.end) return &e;
  }
  return nullptr;
}

std::optional<uint32_t> WithStatementOffset(const std::vector<ExceptionEntry>& table,
                                            uint32_t offset, uint32_t depth) {
  // The with's body is covered by entries of that depth sharing one handler; nested constructs
  // split it into several. The latest one starting at or before `offset` names the handler.
  const ExceptionEntry* latest = nullptr;
  for (const auto& e : table) {
    if (e.depth != depth || e.start > offset) continue;
    if (!latest || e.start > latest->start) latest = &e;
  }
  if (!latest) return std::nullopt;
  uint32_t first = latest->start;
  for (const auto& e : table) {
    if (e.target == latest->target && e.depth == depth) first = std::min(first, e.start);
  }
  if (first == 0) return std::nullopt;
  return first - 1;  // the POP_TOP / STORE after __enter__: the `with` line
}

int Line27(std::string_view t, int line, int64_t addrq) {
  int64_t addr = 0;
  for (size_t i = 0; i + 1 < t.size(); i += 2) {
    addr += static_cast<uint8_t>(t[i]);
    if (addr > addrq) break;
    line += static_cast<uint8_t>(t[i + 1]);
  }
  return line;
}

std::optional<uint32_t> SetupWithFor(std::string_view code, uint32_t handler, bool py2,
                                     bool units) {
  constexpr uint8_t kSetupWith = 143;
  if (py2) {
    // Variable-length: opcodes >= HAVE_ARGUMENT (90) take two argument bytes; EXTENDED_ARG
    // (145) supplies the high 16 bits of the next argument.
    uint32_t ext = 0;
    for (size_t i = 0; i < code.size();) {
      uint8_t op = static_cast<uint8_t>(code[i]);
      if (op < 90) {
        ++i;
        ext = 0;
        continue;
      }
      if (i + 2 >= code.size()) break;
      uint32_t arg = static_cast<uint8_t>(code[i + 1]) |
                     (static_cast<uint32_t>(static_cast<uint8_t>(code[i + 2])) << 8) | ext;
      size_t next = i + 3;
      ext = 0;
      if (op == 145) {
        ext = arg << 16;
      } else if (op == kSetupWith && next + arg == handler) {
        return static_cast<uint32_t>(i);
      }
      i = next;
    }
    return std::nullopt;
  }
  // Wordcode (3.6+): (opcode, arg) pairs, EXTENDED_ARG (144) prefixes.
  uint32_t ext = 0;
  for (size_t i = 0; i + 1 < code.size(); i += 2) {
    uint8_t op = static_cast<uint8_t>(code[i]);
    uint32_t arg = static_cast<uint8_t>(code[i + 1]) | ext;
    ext = 0;
    if (op == 144) {
      ext = arg << 8;
      continue;
    }
    if (op != kSetupWith) continue;
    uint32_t next = static_cast<uint32_t>(units ? (i + 2) / 2 : i + 2);
    if (next + arg == handler) return static_cast<uint32_t>(units ? i / 2 : i);
  }
  return std::nullopt;
}

}  // namespace threadscope::dump
