// Seed inputs for the fuzz targets, generated from the project's own sources (hand-written ELF
// files, records from the event generator, code objects built byte by byte), so no binary or
// recording from outside the repository is committed. Used by the corpus replays in the unit
// tier and written out by make_seeds for libFuzzer runs (tools/test.sh, bench/fuzz.sh).
#pragma once

#include <string>
#include <vector>

namespace threadscope::fuzz {

// The seeds of one target: "elf", "record", "recording" or "py_code".
std::vector<std::string> Seeds(const std::string& target);

// The names above.
std::vector<std::string> Targets();

}  // namespace threadscope::fuzz
