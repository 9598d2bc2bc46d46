// The JSON report contract (README, "JSON report"; client/report_json.h), pinned: records from
// the generator, replayed into a snapshot by the engine, rendered, compared with a committed
// golden file. A change to the contract shows up here as a diff to review, not as a silent change
// in what users' scripts read.
//
// After an intended change: THREADSCOPE_UPDATE_GOLDEN=1 bazel run //tests/unit:report_json_test
// rewrites tests/unit/testdata/report_golden.json in the workspace; review and commit the diff.
#include "client/report_json.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "daemon/engine/session.h"
#include "tests/unit/sample_recording.h"

namespace threadscope::client {
namespace {

using testing::Batch;
using testing::EventGenerator;

constexpr char kGolden[] = "tests/unit/testdata/report_golden.json";

// The sample recording (a thread started, joined and finished; a failed start) plus a contended
// lock and GIL hand-offs, so that every part of the report has something in it.
std::vector<v1::RecordingChunk> GoldenRecording() {
  EventGenerator g;
  std::vector<std::string> batches = testing::SampleBatches(g);
  std::string end = batches.back();
  batches.pop_back();
  constexpr uint32_t kMain = 1000, kT = 1002;
  constexpr uint64_t kObj = 0x7000, kSem = 0x7100;
  batches.push_back(Batch({g.Clone(kMain, kT), g.LockNew(kMain, kObj, kSem),
                           g.LockAcquire(kMain, kObj, kSem),
                           g.SemWait(TS_EV_SEM_WAIT_BEGIN, kT, kSem)}));
  g.Advance(20'000'000);
  batches.push_back(Batch({g.LockRelease(kMain, kObj, kSem),
                           g.SemWait(TS_EV_SEM_WAIT_END, kT, kSem, 0), g.Gil(kMain, TS_GIL_TAKE_BEGIN),
                           g.Gil(kMain, TS_GIL_TAKE_END), g.Gil(kT, TS_GIL_TAKE_BEGIN)}));
  g.Advance(5'000'000);
  batches.push_back(Batch({g.Gil(kMain, TS_GIL_DROP_FORCED), g.Gil(kT, TS_GIL_TAKE_END),
                           g.Exit(kT)}));
  batches.push_back(end);
  auto chunks = testing::Recording(batches);
  v1::Target* t = chunks[0].mutable_header()->mutable_target();
  t->set_lock_mode("contended");
  t->mutable_gil()->set_enabled(true);
  return chunks;
}

nlohmann::json Rendered() {
  auto session = engine::ReplaySession::Create("rec:golden", GoldenRecording());
  EXPECT_TRUE(session.ok()) << session.status().ToString();
  if (!session.ok()) return nullptr;
  nlohmann::json out;
  out["report"] = ReportJson((*session)->snapshot());
  v1::WatchEventsRequest req;
  req.set_from_start(true);
  auto sub = (*session)->Watch(req);
  nlohmann::json events = nlohmann::json::array();
  v1::WatchEventsResponse r;
  while (sub->Next(&r, std::chrono::milliseconds(200)) ==
         engine::BoundedQueue<v1::WatchEventsResponse>::PopResult::kItem) {
    events.push_back(EventJson(r));
    if (r.has_target_finished()) break;
  }
  out["events"] = events;
  return out;
}

TEST(ReportJsonTest, MatchesTheGoldenFile) {
  std::string rendered = Rendered().dump(2) + "\n";
  const char* update = std::getenv("THREADSCOPE_UPDATE_GOLDEN");
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  if (update && *update == '1' && workspace) {
    std::ofstream(std::string(workspace) + "/" + kGolden) << rendered;
    GTEST_SKIP() << "rewrote " << kGolden;
  }
  std::ifstream in(kGolden);
  ASSERT_TRUE(in) << "cannot read " << kGolden;
  std::stringstream golden;
  golden << in.rdbuf();
  EXPECT_EQ(rendered, golden.str())
      << "the JSON report changed; if intended, regenerate it (see the top of this file)";
}

// What the golden file must keep showing, whatever else changes: the contract's parts exist.
TEST(ReportJsonTest, TheContractsPartsArePresent) {
  nlohmann::json j = Rendered();
  const nlohmann::json& report = j["report"];
  for (const char* key : {"target", "threads", "locks", "gil"}) {
    EXPECT_TRUE(report.contains(key)) << key;
  }
  EXPECT_FALSE(report["threads"].empty());
  EXPECT_FALSE(j["events"].empty());
  EXPECT_EQ(j["events"].back()["type"], "finished");
}

}  // namespace
}  // namespace threadscope::client
