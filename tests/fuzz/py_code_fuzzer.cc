// libFuzzer target: reading code objects, strings and line tables out of a target's memory
// (security review M2). The memory is fuzzed bytes behind a MemoryReader, laid out as
// py_code_input.h says.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "daemon/target/py_code.h"
#include "daemon/target/py_layout.h"
#include "tests/fuzz/py_code_input.h"

using namespace threadscope;
using namespace threadscope::target;

namespace {

class FuzzedMemory : public MemoryReader {
 public:
  explicit FuzzedMemory(std::string_view image) : image_(image) {}
  bool Read(uint64_t addr, void* out, size_t n) const override {
    if (addr < fuzz::kImageBase) return false;
    uint64_t off = addr - fuzz::kImageBase;
    if (off > image_.size() || n > image_.size() - off) return false;
    std::memcpy(out, image_.data() + off, n);
    return true;
  }

 private:
  std::string_view image_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  int minor = data[0] % 16;
  size_t pairs = std::min<size_t>(data[1], fuzz::kMaxPairs);
  if (size < 2 + 16 * pairs) return 0;
  auto layout = BuiltinPyLayout(PythonVersion{3, minor});
  std::string_view rest(reinterpret_cast<const char*>(data) + 2 + 16 * pairs,
                        size - 2 - 16 * pairs);
  if (layout) {
    PyStackSupport support;
    support.layout = *layout;
    support.code_type = fuzz::kCodeType;
    support.unicode_type = fuzz::kUnicodeType;
    support.bytes_type = fuzz::kBytesType;
    support.none = fuzz::kNone;
    FuzzedMemory memory(rest);
    PyCodeResolver resolver(memory, support);
    for (size_t i = 0; i < pairs; ++i) {
      uint64_t code, instr;
      std::memcpy(&code, data + 2 + 16 * i, 8);
      std::memcpy(&instr, data + 2 + 16 * i + 8, 8);
      (void)resolver.Resolve(code, instr);
      (void)resolver.Resolve(code, instr);  // cached
    }
  }
  // The line-table decoders alone, on the same bytes, at offsets from the pairs' area.
  for (auto format : {LineTableFormat::kLnotab36, LineTableFormat::kLinetable310,
                      LineTableFormat::kLocations311}) {
    int64_t offset = pairs > 0 ? static_cast<int64_t>(data[2]) - 2 : 3;
    (void)LineForOffset(format, rest, minor * 1000 - 1, offset);
  }
  return 0;
}
