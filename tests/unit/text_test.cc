// Text from the target on its way to a terminal: no control sequence survives.
#include "daemon/common/text.h"

#include <gtest/gtest.h>

namespace threadscope {
namespace {

TEST(PrintableTest, EscapesEveryControlCharacter) {
  EXPECT_EQ(Printable("worker-1"), "worker-1");
  EXPECT_EQ(Printable("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 passes
  EXPECT_EQ(Printable("\x1b[2J\x1b]0;pwned\x07"), "\\x1b[2J\\x1b]0;pwned\\x07");
  EXPECT_EQ(Printable("a\nb\tc\x7f"), "a\\x0ab\\x09c\\x7f");
  EXPECT_EQ(Printable("\xc2\x9b" "31m"), "\\x9b31m");      // C1 CSI
  EXPECT_EQ(Printable("\xff\xfe"), "\\xff\\xfe");          // not UTF-8
  EXPECT_EQ(Printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(Printable("back\\slash"), "back\\\\slash");     // unambiguous
  std::string out = Printable(std::string("\x1b\x9b\x07\x00", 4));
  EXPECT_EQ(out.find('\x1b'), std::string::npos);
  EXPECT_EQ(out.find('\x07'), std::string::npos);
  EXPECT_EQ(out.find('\0'), std::string::npos);
}

}  // namespace
}  // namespace threadscope
