// User labels: one parser and validator for the daemon, the CLI and the API.
#include "daemon/common/labels.h"

#include <gtest/gtest.h>

namespace threadscope {
namespace {

TEST(LabelTest, UserLabelsAreValidatedNames) {
  auto l = ParseLabel("service=api");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->first, "service");
  EXPECT_EQ(l->second, "api");
  EXPECT_TRUE(ParseLabel("team=").ok());
  EXPECT_EQ(ParseLabel("service").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseLabel("9lives=x").ok());
  EXPECT_FALSE(ParseLabel("pid=3").ok());  // threadscope's own
  EXPECT_FALSE(ParseLabel("__name__=x").ok());
  EXPECT_FALSE(ParseLabel("gil=x").ok());
  EXPECT_TRUE(IsUserLabelName("team"));
  EXPECT_FALSE(IsUserLabelName("svc=x"));  // the API's map keys are names alone
  EXPECT_FALSE(IsUserLabelName(""));
}

// A name of any length is rejected by length, in constant stack: std::regex used to recurse
// once per character and a 120,000-character name crashed the daemon.
TEST(LabelTest, HugeNamesAndValuesAreRefusedNotFatal) {
  std::string huge(8 << 20, 'a');
  EXPECT_FALSE(IsUserLabelName(huge) && huge.size() <= LabelLimits{}.max_name_bytes);
  EXPECT_EQ(ValidateLabels({{huge, "x"}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateLabels({{"team", huge}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseLabel(huge + "=x").status().code(), StatusCode::kInvalidArgument);
  std::map<std::string, std::string> many;
  for (int i = 0; i < 17; ++i) many["l" + std::to_string(i)] = "v";
  EXPECT_EQ(ValidateLabels(many).code(), StatusCode::kInvalidArgument);
  many.erase("l0");
  EXPECT_TRUE(ValidateLabels(many).ok());
}

TEST(LabelTest, ValuesArePrintableUtf8) {
  EXPECT_TRUE(ValidateLabels({{"team", "café"}}).ok());
  EXPECT_FALSE(ValidateLabels({{"team", "a\x1b[2Jb"}}).ok());
  EXPECT_FALSE(ValidateLabels({{"team", "\xff"}}).ok());
  EXPECT_FALSE(ValidateLabels({{"team", "a\nb"}}).ok());
  EXPECT_FALSE(ValidateLabels({{"team", "\xc2\x9b"}}).ok());  // C1 CSI
}

}  // namespace
}  // namespace threadscope
