// The little dump needs to know about bytecode: 3.11+ exception tables (which value-stack slots
// are live at an instruction, and where a `with` block starts), 2.7's unsigned line-number
// table, and (<= 3.10) the SETUP_WITH instruction a block-stack entry came from.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace threadscope::dump {

// One entry of a 3.11+ co_exceptiontable (Objects/exception_handling_notes.txt), in code units.
struct ExceptionEntry {
  uint32_t start = 0;  // first instruction covered
  uint32_t end = 0;    // one past the last
  uint32_t target = 0; // the handler
  uint32_t depth = 0;  // value-stack items kept (live) when the handler runs
  bool lasti = false;
};

// Bounded: at most 65536 entries; a malformed table ends the parse.
std::vector<ExceptionEntry> ParseExceptionTable(std::string_view table);

// The entry covering `offset`, if any.
const ExceptionEntry* CoveringEntry(const std::vector<ExceptionEntry>& table, uint32_t offset);

// Where the `with` whose exit sits in value-stack slot `slot` (so its body's entries have
// depth > slot) began, for a frame at `offset`: the instruction just before the first code unit
// of that with-body's handler region, whose line is the `with` statement's. nullopt if unknown.
std::optional<uint32_t> WithStatementOffset(const std::vector<ExceptionEntry>& table,
                                            uint32_t offset, uint32_t depth);

// 2.7's co_lnotab: like 3.6's but both increments are unsigned.
int Line27(std::string_view lnotab, int firstlineno, int64_t byte_offset);

// <= 3.10: the offset of the SETUP_WITH (opcode 143) whose jump target is `handler`, or nullopt.
// `units` is true for 3.10 (jump arguments and offsets in 2-byte code units).
std::optional<uint32_t> SetupWithFor(std::string_view code, uint32_t handler, bool py2,
                                     bool units);

}  // namespace threadscope::dump
