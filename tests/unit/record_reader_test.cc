// The one framing of back-to-back records, and its one policy for sizes that cannot be right.
#include "recording/record_reader.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "recording/recording.h"
#include "tests/unit/event_generator.h"

namespace threadscope::model {
namespace {

using recording::RecordReader;
using recording::RecordView;
using testing::Batch;
using testing::EventGenerator;

std::vector<uint16_t> Types(RecordReader& reader) {
  std::vector<uint16_t> out;
  RecordView r;
  while (reader.Next(&r)) {
    EXPECT_EQ(r.size, r.header.size);
    out.push_back(r.header.type);
  }
  return out;
}

void SetSize(std::string& bytes, size_t offset, uint32_t size) {
  ts_header h;
  std::memcpy(&h, bytes.data() + offset, sizeof(h));
  h.size = size;
  std::memcpy(bytes.data() + offset, &h, sizeof(h));
}

TEST(RecordReaderTest, FramesWholeRecordsOfAnySize) {
  EventGenerator g;
  std::string location = g.Location(0x10, 0x20, 3, "app.py", "main");  // variable size
  std::string bytes = Batch({g.Clone(1, 2), location, g.Lost(4), g.Exit(2)});
  RecordReader reader(bytes);
  EXPECT_EQ(Types(reader), (std::vector<uint16_t>{TS_EV_THREAD_CLONE, TS_EV_PY_LOCATION,
                                                  TS_EV_LOST, TS_EV_THREAD_EXIT}));
  EXPECT_TRUE(reader.status().ok());
  EXPECT_EQ(reader.records(), 4u);
  EXPECT_EQ(reader.offset(), bytes.size());
  RecordReader empty(std::string_view{});
  RecordView r;
  EXPECT_FALSE(empty.Next(&r));
  EXPECT_TRUE(empty.status().ok());
}

// A bad size ends the reading where it is, says so, and never reads past the end.
TEST(RecordReaderTest, ABadSizeStopsTheReadingThere) {
  EventGenerator g;
  const std::string one = g.Clone(1, 2);
  for (uint32_t bad : {0u, 8u, 23u, 1u << 30}) {
    std::string bytes = Batch({one, g.Exit(2), one});
    SetSize(bytes, one.size(), bad);
    RecordReader reader(bytes);
    EXPECT_EQ(Types(reader), std::vector<uint16_t>{TS_EV_THREAD_CLONE}) << bad;
    EXPECT_EQ(reader.status().code(), StatusCode::kDataLoss) << bad;
    EXPECT_EQ(reader.offset(), one.size());
    RecordView r;
    EXPECT_FALSE(reader.Next(&r));  // and stays stopped
  }
  // Bytes too few for a header at the end.
  std::string bytes = one + std::string(10, '\0');
  RecordReader reader(bytes);
  EXPECT_EQ(Types(reader).size(), 1u);
  EXPECT_EQ(reader.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(reader.status().message().find("inside a record header"), std::string::npos);
}

// The same policy everywhere: a recording with a bad frame is refused, naming the chunk.
TEST(RecordReaderTest, ARecordingWithABadFrameIsRefused) {
  EventGenerator g;
  std::vector<v1::RecordingChunk> chunks(2);
  chunks[0].mutable_header()->set_format_version(recording::kRecordingFormatVersion);
  std::string bytes = Batch({g.Clone(1, 2), g.Exit(2)});
  SetSize(bytes, 0, 4096);
  chunks[1].set_records(bytes);
  Status s = recording::ValidateRecording(chunks);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("chunk 1"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace threadscope::model
