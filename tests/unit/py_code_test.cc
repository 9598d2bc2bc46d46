// Python source locations: line tables decoded exactly as each interpreter decodes them, and code
// objects read from memory (a fake memory here; the BPF tier reads real processes).
#include "daemon/target/py_code.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/target/disasm.h"
#include "daemon/target/py_layout.h"
#include "daemon/target/python_process.h"
#include "tests/unit/interpreters.h"

namespace threadscope::target {
namespace {

using ::threadscope::interpreters::Interpreter;

// The CPython 3 interpreters of the matrix (tests/interpreters.json), each with its minor
// version; 2.7 has no line tables of these formats. Absent optional ones are skipped with a
// SKIP line, absent required ones fail.
struct Usable {
  Interpreter in;
  int minor;
};

std::vector<Usable> Interpreters() {
  auto m = ::threadscope::interpreters::Load();
  if (!m.ok()) {
    ADD_FAILURE() << m.status().ToString();
    return {};
  }
  std::vector<Usable> out;
  for (const auto& in : *m) {
    if (!in.present()) {
      if (in.required) {
        ADD_FAILURE() << in.label << " is required: " << in.missing;
      } else {
        std::fprintf(stderr, "%s\n", in.SkipLine().c_str());
      }
      continue;
    }
    auto [major, minor] = ::threadscope::interpreters::MajorMinor(
        in.version.empty() ? ::threadscope::interpreters::SelfReportedVersion(in) : in.version);
    if (major == 3) out.push_back({in, minor});
  }
  return out;
}

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

LineTableFormat FormatFor(int minor) {
  return minor <= 9 ? LineTableFormat::kLnotab36
         : minor == 10 ? LineTableFormat::kLinetable310
                       : LineTableFormat::kLocations311;
}

TEST(LineTableTest, EveryInstructionOfRealCodeMatchesTheInterpreter) {
  const std::string script = "tests/unit/testdata/dump_line_tables.py";
  int checked_interpreters = 0;
  for (const auto& [in, minor] : Interpreters()) {
    // Through tools/in-root when it lives in the Debian unstable root: the script is reachable
    // there at the same (runfiles) path.
    std::string cmd = ::threadscope::interpreters::CommandLine(in, {script});
    std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
    ASSERT_TRUE(p) << cmd;
    std::string table;
    int first = 0;
    size_t codes = 0, offsets = 0, mismatches = 0;
    char buf[1 << 16];
    while (fgets(buf, sizeof(buf), p.get())) {
      std::istringstream line(buf);
      char kind;
      line >> kind;
      if (kind == 'C') {
        std::string hex;
        line >> first >> hex;
        table = FromHex(hex);
        ++codes;
      } else if (kind == 'O') {
        int64_t offset;
        int want;
        line >> offset >> want;
        auto got = LineForOffset(FormatFor(minor), table, first, offset);
        ++offsets;
        if (got.value_or(-1) != want && ++mismatches <= 5) {
          ADD_FAILURE() << in.label << ": offset " << offset << " of a code object at line "
                        << first << ": interpreter says " << want << ", decoder "
                        << got.value_or(-1);
        }
      }
    }
    EXPECT_GT(codes, 100u) << in.label;
    EXPECT_GT(offsets, 10000u) << in.label;
    EXPECT_EQ(mismatches, 0u) << in.label;
    EXPECT_EQ(pclose(p.release()), 0) << in.label << ": " << cmd;
    ++checked_interpreters;
  }
  EXPECT_GT(checked_interpreters, 0);
}

TEST(LineTableTest, FunctionsThatHaveNotStartedAreOnTheirFirstLine) {
  EXPECT_EQ(LineForOffset(LineTableFormat::kLinetable310, "\x02\x01", 7, -1), 7);
  EXPECT_EQ(LineForOffset(LineTableFormat::kLocations311, "\x80", 7, -1), 7);
  EXPECT_EQ(LineForOffset(LineTableFormat::kLnotab36, "", 7, 0), 7);
}

TEST(LineTableTest, TruncatedTablesDoNotReadPastTheirEnd) {
  // A long-form entry whose varint runs off the end.
  std::string t = "\xf0\x7f";
  EXPECT_NO_FATAL_FAILURE(LineForOffset(LineTableFormat::kLocations311, t, 1, 0));
  EXPECT_EQ(LineForOffset(LineTableFormat::kLocations311, t, 1, 100), std::nullopt);
}

// A process image made of byte blocks, for code objects built by hand.
class FakeMemory : public MemoryReader {
 public:
  bool Read(uint64_t addr, void* out, size_t n) const override {
    for (const auto& [base, bytes] : blocks_) {
      if (addr >= base && addr + n <= base + bytes.size()) {
        std::memcpy(out, bytes.data() + (addr - base), n);
        return true;
      }
    }
    return false;
  }
  void Put(uint64_t addr, const void* data, size_t n) {
    for (auto& [base, bytes] : blocks_) {
      if (addr >= base && addr + n <= base + bytes.size()) {
        std::memcpy(bytes.data() + (addr - base), data, n);
        return;
      }
    }
    std::string b(n, '\0');
    std::memcpy(b.data(), data, n);
    blocks_[addr] = b;
  }
  void Alloc(uint64_t addr, size_t n) { blocks_[addr] = std::string(n, '\0'); }
  template <typename T>
  void Set(uint64_t addr, T v) {
    Put(addr, &v, sizeof(v));
  }

 private:
  std::map<uint64_t, std::string> blocks_;
};

constexpr uint64_t kCodeType = 0x1000, kUnicodeType = 0x2000, kBytesType = 0x3000,
                   kNone = 0x4000;

class ResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto layout = BuiltinPyLayout(PythonVersion{3, 12});
    ASSERT_TRUE(layout);
    support_.layout = *layout;
    support_.code_type = kCodeType;
    support_.unicode_type = kUnicodeType;
    support_.bytes_type = kBytesType;
    support_.none = kNone;
  }
  // A compact str: ASCII, or `kind` bytes per character.
  void Str(uint64_t addr, const std::u32string& text) {
    uint32_t max = 0;
    for (char32_t c : text) max = std::max<uint32_t>(max, c);
    uint32_t kind = max < 0x100 ? 1 : max < 0x10000 ? 2 : 4;
    bool ascii = max < 0x80;
    mem_.Alloc(addr, 256);
    mem_.Set<uint64_t>(addr + 8, kUnicodeType);
    mem_.Set<int64_t>(addr + 16, static_cast<int64_t>(text.size()));
    mem_.Set<uint32_t>(addr + 32, (kind << 2) | (1u << 5) | (ascii ? 1u << 6 : 0u));
    uint64_t data = addr + (ascii ? support_.layout.ascii_data : support_.layout.compact_data);
    for (size_t i = 0; i < text.size(); ++i) {
      uint32_t c = text[i];
      mem_.Put(data + i * kind, &c, kind);
    }
  }
  void Bytes(uint64_t addr, const std::string& b) {
    mem_.Alloc(addr, 32 + b.size() + 1);
    mem_.Set<uint64_t>(addr + 8, kBytesType);
    mem_.Set<int64_t>(addr + 16, static_cast<int64_t>(b.size()));
    mem_.Put(addr + 32, b.data(), b.size());
  }
  // A 3.12 code object at `addr` with 8 code units, first line 10, firsttraceable 1; the table
  // says units 0-3 are line 10 and 4-7 line 12.
  void Code(uint64_t addr, uint64_t file, uint64_t name) {
    const PyLayout& l = support_.layout;
    mem_.Alloc(addr, 256);
    mem_.Set<uint64_t>(addr + 8, kCodeType);
    mem_.Set<int64_t>(addr + 16, 8);
    mem_.Set<uint64_t>(addr + l.code_filename, file);
    mem_.Set<uint64_t>(addr + static_cast<uint32_t>(l.code_qualname), name);
    mem_.Set<int32_t>(addr + l.code_firstlineno, 10);
    mem_.Set<int32_t>(addr + static_cast<uint32_t>(l.code_firsttraceable), 1);
    // Entries: one-line form C=10 (delta 0) length 4; C=12 (delta +2) length 4.
    Bytes(addr + 0x1000, std::string("\xd3\x00\x00\xe3\x00\x00", 6));
    mem_.Set<uint64_t>(addr + l.code_linetable, addr + 0x1000);
  }
  uint64_t Instr(uint64_t code, int units) {
    return code + static_cast<uint64_t>(support_.layout.code_adaptive) + 2 * units;
  }

  FakeMemory mem_;
  PyStackSupport support_;
};

TEST_F(ResolverTest, ResolvesFileFunctionAndLine) {
  Str(0x10000, U"/srv/app/cache.py");
  Str(0x11000, U"Cache.get");
  Code(0x20000, 0x10000, 0x11000);
  PyCodeResolver r(mem_, support_);
  ResolvedFrame f = r.Resolve(0x20000, Instr(0x20000, 2));
  ASSERT_EQ(f.kind, ResolvedFrame::Kind::kPython);
  EXPECT_EQ(f.file, "/srv/app/cache.py");
  EXPECT_EQ(f.function, "Cache.get");
  EXPECT_EQ(f.line, 10);
  EXPECT_EQ(r.Resolve(0x20000, Instr(0x20000, 5)).line, 12);
}

TEST_F(ResolverTest, NonAsciiNamesBecomeUtf8) {
  Str(0x10000, U"/srv/caf\u00e9.py");         // one byte per character
  Str(0x11000, U"\u043f\u043e\u0442\u043e\u043a");  // two bytes per character
  Str(0x12000, U"f\U0001F600");                 // four bytes per character
  Code(0x20000, 0x10000, 0x11000);
  Code(0x30000, 0x10000, 0x12000);
  PyCodeResolver r(mem_, support_);
  ResolvedFrame a = r.Resolve(0x20000, Instr(0x20000, 1));
  EXPECT_EQ(a.file, "/srv/caf\xc3\xa9.py");
  EXPECT_EQ(a.function, "\xd0\xbf\xd0\xbe\xd1\x82\xd0\xbe\xd0\xba");
  EXPECT_EQ(r.Resolve(0x30000, Instr(0x30000, 1)).function, "f\xf0\x9f\x98\x80");
}

TEST_F(ResolverTest, TornAndSurrogateStringsNeverYieldInvalidUtf8) {
  Str(0x10000, U"a.py");
  Str(0x11000, U"f");
  // An "ASCII" string whose bytes are not (an object reused while we read it): unreadable.
  uint8_t high = 0xe9;
  mem_.Put(0x11000 + support_.layout.ascii_data, &high, 1);
  Code(0x20000, 0x10000, 0x11000);
  Str(0x12000, U"g\xd800");  // a lone surrogate: legal in Python, not in UTF-8
  Code(0x30000, 0x10000, 0x12000);
  PyCodeResolver r(mem_, support_);
  EXPECT_NE(r.Resolve(0x20000, Instr(0x20000, 1)).kind, ResolvedFrame::Kind::kPython);
  EXPECT_EQ(r.Resolve(0x30000, Instr(0x30000, 1)).function, "g\xef\xbf\xbd");
}

TEST_F(ResolverTest, FramesThatAreNotPythonAreSkippedNotGuessed) {
  Str(0x10000, U"a.py");
  Str(0x11000, U"f");
  Code(0x20000, 0x10000, 0x11000);
  PyCodeResolver r(mem_, support_);
  // 3.13's C entry frames hold None instead of a code object.
  EXPECT_EQ(r.Resolve(kNone, 0).kind, ResolvedFrame::Kind::kNotPython);
  // Pushed but not started (before its first traceable instruction).
  EXPECT_EQ(r.Resolve(0x20000, Instr(0x20000, 0)).kind, ResolvedFrame::Kind::kNotPython);
}

TEST_F(ResolverTest, FreedOrReusedCodeIsUnknownNotWrong) {
  Str(0x10000, U"a.py");
  Str(0x11000, U"f");
  Code(0x20000, 0x10000, 0x11000);
  PyCodeResolver r(mem_, support_);
  EXPECT_EQ(r.Resolve(0x20000, Instr(0x20000, 2)).kind, ResolvedFrame::Kind::kPython);
  // An instruction beyond the code: a smaller code object lives here now.
  EXPECT_EQ(r.Resolve(0x20000, Instr(0x20000, 40)).kind, ResolvedFrame::Kind::kUnreadable);
  // Not a code object any more.
  mem_.Set<uint64_t>(0x20000 + 8, kBytesType);
  EXPECT_EQ(r.Resolve(0x20000, Instr(0x20000, 2)).kind, ResolvedFrame::Kind::kUnreadable);
  // Unmapped.
  EXPECT_EQ(r.Resolve(0x900000, 0).kind, ResolvedFrame::Kind::kUnreadable);
}

TEST_F(ResolverTest, ACodeObjectReplacedAtTheSameAddressIsReread) {
  Str(0x10000, U"a.py");
  Str(0x11000, U"first");
  Str(0x12000, U"second");
  Code(0x20000, 0x10000, 0x11000);
  PyCodeResolver r(mem_, support_);
  EXPECT_EQ(r.Resolve(0x20000, Instr(0x20000, 1)).function, "first");
  Code(0x20000, 0x10000, 0x12000);
  EXPECT_EQ(r.Resolve(0x20000, Instr(0x20000, 1)).function, "second");
}

TEST(PyLayoutTest, EveryInterpreterOnTheMachineHasItsFramesFound) {
  auto dis = Disassembler::Create();
  ASSERT_TRUE(dis.ok());
  for (const auto& [in, minor] : Interpreters()) {
    // Every interpreter is checked and reported, whatever the ones before it gave.
    auto t = InspectPythonBinary(**dis, in.binary);
    if (!t.ok()) {
      ADD_FAILURE() << in.label << ": " << t.status().ToString();
      continue;
    }
    auto s = ResolvePyStackSupport(*t);
    if (!s.ok()) {
      ADD_FAILURE() << in.label << ": " << s.status().ToString();
      continue;
    }
    EXPECT_NE(s->bpf.interp_head_addr, 0u) << in.label;
    EXPECT_NE(s->code_type, 0u) << in.label;
    EXPECT_LE(s->bpf.frame_read_size, 256u) << in.label;
    if (minor >= 13) {
      // 3.13 and later describe themselves; the published offsets are used.
      EXPECT_NE(s->layout.source.find("debug_offsets"), std::string::npos) << s->layout.source;
    }
  }
  EXPECT_FALSE(BuiltinPyLayout(PythonVersion{2, 7}));
  EXPECT_FALSE(BuiltinPyLayout(PythonVersion{3, 16}));
}

}  // namespace
}  // namespace threadscope::target
