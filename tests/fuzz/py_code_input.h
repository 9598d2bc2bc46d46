// The input format of py_code_fuzzer, shared with its seeds:
//   byte 0: CPython minor version (3.<n>) whose layout is used, modulo 16
//   byte 1: number of (code, instr) pairs that follow (at most 8)
//   then the pairs (two little-endian u64 each), then the memory image, mapped at kImageBase.
// The type objects the resolver compares against are the constants below.
#pragma once

#include <cstdint>

namespace threadscope::fuzz {

inline constexpr uint64_t kImageBase = 0x10000;
inline constexpr uint64_t kCodeType = 0x1111000, kUnicodeType = 0x2222000,
                          kBytesType = 0x3333000, kNone = 0x4444000;
inline constexpr size_t kMaxPairs = 8;

}  // namespace threadscope::fuzz
