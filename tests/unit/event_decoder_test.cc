#include "daemon/model/event_decoder.h"

#include <gtest/gtest.h>

#include <cstddef>

#include "tests/unit/event_generator.h"

namespace threadscope::model {
namespace {

using testing::EventGenerator;

// The ABI is read by a decoder that may be years newer than the writer (recordings): fields
// must stay where they are.
TEST(EventLayoutTest, HeaderFieldsAreAtFixedOffsets) {
  EXPECT_EQ(offsetof(ts_header, type), 0u);
  EXPECT_EQ(offsetof(ts_header, version), 2u);
  EXPECT_EQ(offsetof(ts_header, size), 4u);
  EXPECT_EQ(offsetof(ts_header, ts_ns), 8u);
  EXPECT_EQ(offsetof(ts_header, pid), 16u);
  EXPECT_EQ(offsetof(ts_header, tid), 20u);
  EXPECT_EQ(offsetof(ts_thread_start_begin, boot), 24u);
  EXPECT_EQ(offsetof(ts_thread_start_end, ident), 32u);
  EXPECT_EQ(offsetof(ts_thread_clone, comm), 32u);
  EXPECT_EQ(offsetof(ts_sem_wait, ret), 32u);
}

TEST(EventDecoderTest, DecodesEveryKnownType) {
  EventGenerator g;
  for (const std::string& r :
       {g.StartBegin(1, 2), g.StartEnd(1, 2, true, 3), g.Clone(1, 4), g.Bootstrap(4, 2),
        g.BodyDone(4), g.Exit(4), g.Rename(1, 4, "x"), g.Sentinel(4, 5, 6),
        g.SemWait(TS_EV_SEM_WAIT_BEGIN, 1, 6), g.JoinBegin(1, 3), g.JoinEnd(1), g.Detach(1, 3),
        g.Preexisting(7, 8), g.Lost(3), g.Mark(TS_MARK_ATTACHED)}) {
    auto e = DecodeEvent(reinterpret_cast<const uint8_t*>(r.data()), r.size());
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_EQ(e->header.size, r.size());
    EXPECT_FALSE(DescribeEvent(*e).empty());
  }
}

TEST(EventDecoderTest, CopiesFieldsExactly) {
  EventGenerator g(42);
  std::string r = g.Clone(100, 101, "worker-7");
  auto e = DecodeEvent(reinterpret_cast<const uint8_t*>(r.data()), r.size());
  ASSERT_TRUE(e.ok());
  const auto& c = std::get<ts_thread_clone>(e->payload);
  EXPECT_EQ(e->header.pid, 42u);
  EXPECT_EQ(e->header.tid, 100u);
  EXPECT_EQ(c.child_tid, 101u);
  EXPECT_EQ(CommToString(c.comm), "worker-7");
}

TEST(EventDecoderTest, RejectsTruncatedAndMalformedRecords) {
  EventGenerator g;
  std::string r = g.StartEnd(1, 2, true, 3);
  auto* data = reinterpret_cast<const uint8_t*>(r.data());
  EXPECT_EQ(DecodeEvent(data, 10).status().code(), StatusCode::kDataLoss);       // < header
  EXPECT_EQ(DecodeEvent(data, r.size() - 1).status().code(), StatusCode::kDataLoss);  // size lies

  std::string small = r;  // a header that claims fewer bytes than its type needs
  ts_header h;
  std::memcpy(&h, small.data(), sizeof(h));
  h.size = sizeof(ts_header) + 4;
  std::memcpy(small.data(), &h, sizeof(h));
  EXPECT_EQ(DecodeEvent(reinterpret_cast<const uint8_t*>(small.data()), small.size())
                .status()
                .code(),
            StatusCode::kDataLoss);

  std::string bad_version = r;
  bad_version[2] = 0;
  EXPECT_EQ(DecodeEvent(reinterpret_cast<const uint8_t*>(bad_version.data()), r.size())
                .status()
                .code(),
            StatusCode::kDataLoss);
}

TEST(EventDecoderTest, UnknownTypesAreUnimplementedNotCorrupt) {
  EventGenerator g;
  std::string r = g.Lost(1);
  r[0] = static_cast<char>(150);  // a type a newer writer might add
  auto e = DecodeEvent(reinterpret_cast<const uint8_t*>(r.data()), r.size());
  EXPECT_EQ(e.status().code(), StatusCode::kUnimplemented);
}

TEST(EventDecoderTest, AcceptsLongerRecordsFromNewerWriters) {
  EventGenerator g;
  std::string r = g.Bootstrap(9, 0xabc);
  r.append(16, '\x7f');  // fields appended by a later ABI version
  ts_header h;
  std::memcpy(&h, r.data(), sizeof(h));
  h.size = static_cast<uint32_t>(r.size());
  h.version = TS_ABI_VERSION + 1;
  std::memcpy(r.data(), &h, sizeof(h));
  auto e = DecodeEvent(reinterpret_cast<const uint8_t*>(r.data()), r.size());
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(std::get<ts_thread_bootstrap>(e->payload).boot, 0xabcu);
}

}  // namespace
}  // namespace threadscope::model
