#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include "daemon/engine/snapshot_builder.h"
#include "daemon/metrics/metrics_server.h"
#include "daemon/metrics/snapshot_metrics.h"
#include "daemon/model/trace_model.h"
#include "tests/unit/event_generator.h"

namespace threadscope::metrics {
namespace {

using testing::EventGenerator;

constexpr uint32_t kMain = 1000, kT1 = 1001, kT2 = 1002;
constexpr uint64_t kSemA = 0x55000000a000, kSemB = 0x55000000b000;

class MetricsTest : public ::testing::Test {
 protected:
  void Apply(const std::string& r) {
    model_.ApplyRecord(reinterpret_cast<const uint8_t*>(r.data()), r.size(), nullptr);
  }
  // A contended wait of `ns` by `tid` on `sem`.
  void ContendedWait(uint32_t tid, uint64_t sem, uint64_t ns) {
    Apply(g_.SemWait(TS_EV_SEM_WAIT_BEGIN, tid, sem));
    g_.Advance(ns);
    Apply(g_.SemWait(TS_EV_SEM_WAIT_END, tid, sem, 0));
  }
  std::string Scrape(size_t top_locks = 10, const v1::OverheadBudget* budget = nullptr) {
    v1::Target t;
    if (budget) *t.mutable_budget() = *budget;
    t.set_target_id("pid:1000");
    t.set_pid(1000);
    t.set_executable("/usr/bin/python3.11");
    t.set_python_version("3.11.2");
    t.set_lock_mode("contended");
    t.mutable_gil()->set_enabled(true);
    (*t.mutable_labels())["service"] = "api";
    auto* p = t.add_probes();
    p->set_name("thread_start");
    p->set_attached(true);
    p = t.add_probes();
    p->set_name("gil_forced");
    p->set_attached(false);
    MetricsOptions options;
    options.top_locks = top_locks;
    options.labels["node"] = "n1";
    auto families = BuildMetrics({engine::BuildSnapshot(model_, t, g_.now(), false)}, options,
                                 &series_);
    return prometheus::TextSerializer().Serialize(families);
  }

  EventGenerator g_{kMain};
  model::TraceModel model_;
  LockSeries series_;
};

TEST_F(MetricsTest, ThreadsGilAndProbesCarryTargetAndUserLabels) {
  Apply(g_.Mark(TS_MARK_ATTACHED));
  Apply(g_.StartBegin(kMain, 0xb00));
  Apply(g_.Clone(kMain, kT1));
  Apply(g_.StartEnd(kMain, 0xb00, true, 0x7f01));
  Apply(g_.Bootstrap(kT1, 0xb00));
  Apply(g_.Gil(kT1, TS_GIL_TAKE_BEGIN));
  g_.Advance(3'000'000);
  Apply(g_.Gil(kT1, TS_GIL_TAKE_END));
  Apply(g_.Gil(kT1, TS_GIL_FORCED));
  Apply(g_.Gil(kT1, TS_GIL_DROP));
  std::string text = Scrape();
  const std::string labels = R"(executable="/usr/bin/python3.11",node="n1",pid="1000",service="api")";
  EXPECT_NE(text.find("threadscope_threads{" + labels + R"(,state="running"} 1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("threadscope_thread_starts_total{" + labels + "} 1"), std::string::npos);
  EXPECT_NE(text.find("threadscope_gil_acquisitions_total{" + labels + "} 1"), std::string::npos);
  // Labels are sorted by name.
  EXPECT_NE(text.find(R"(threadscope_gil_drops_total{executable="/usr/bin/python3.11",kind="forced",node="n1",pid="1000",service="api"} 1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE threadscope_gil_wait_seconds histogram"), std::string::npos);
  EXPECT_NE(text.find("threadscope_gil_wait_seconds_count{" + labels + "} 1"), std::string::npos);
  // 3 ms lands below the 4.19 ms bound (2^22 ns) and above 2.10 ms.
  EXPECT_NE(text.find("threadscope_gil_wait_seconds_bucket{" + labels + R"(,le="0.004194304"} 1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("threadscope_gil_wait_seconds_bucket{" + labels + R"(,le="0.002097152"} 0)"),
            std::string::npos);
  EXPECT_NE(text.find("threadscope_probes{" + labels + R"(,state="missing"} 1)"),
            std::string::npos);
  EXPECT_NE(text.find("threadscope_records_dropped_total{" + labels + "} 0"), std::string::npos);
}

// --overhead-budget: the stage (advisory or applied) and the cost estimate, labelled as one.
TEST_F(MetricsTest, BudgetStageAndItsEstimate) {
  Apply(g_.Mark(TS_MARK_ATTACHED));
  const std::string labels = R"(executable="/usr/bin/python3.11",node="n1",pid="1000",service="api")";
  EXPECT_EQ(Scrape().find("threadscope_budget"), std::string::npos);  // no budget, no series
  v1::OverheadBudget b;
  b.set_enabled(true);
  b.set_budget(0.01);
  b.set_stage("gil_waits");
  b.set_stage_index(1);
  b.set_estimated_cost(0.25);
  b.set_estimated(true);
  std::string text = Scrape(10, &b);
  EXPECT_NE(text.find(R"(threadscope_budget_stage{applied="false",executable="/usr/bin/python3.11",node="n1",pid="1000",service="api",stage="gil_waits"} 1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(threadscope_budget_estimated_cost_ratio{estimate="true",executable="/usr/bin/python3.11",node="n1",pid="1000",service="api"} 0.25)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("threadscope_budget_ratio{" + labels + "} 0.01"), std::string::npos) << text;
}

TEST_F(MetricsTest, TopLocksKeepTheirSeriesTheRestFoldIntoOther) {
  Apply(g_.Mark(TS_MARK_ATTACHED));
  Apply(g_.LockNew(kMain, 0x7f0a, kSemA));
  Apply(g_.LockNew(kMain, 0x7f0b, kSemB));
  ContendedWait(kT1, kSemA, 5'000'000);
  ContendedWait(kT2, kSemB, 1'000'000);
  std::string first = Scrape(/*top_locks=*/1);
  EXPECT_NE(first.find(R"(lock="0x7f0a:1")"), std::string::npos) << first;
  EXPECT_EQ(first.find(R"(lock="0x7f0b:1")"), std::string::npos);
  EXPECT_NE(first.find(R"(threadscope_lock_contentions_total{executable="/usr/bin/python3.11",kind="",lock="other")"),
            std::string::npos)
      << first;
  // B becomes the most contended lock; A keeps its series (no counter jumping between series).
  ContendedWait(kT2, kSemB, 50'000'000);
  std::string second = Scrape(1);
  EXPECT_NE(second.find(R"(lock="0x7f0a:1")"), std::string::npos);
  EXPECT_EQ(second.find(R"(lock="0x7f0b:1")"), std::string::npos);
}

TEST(HistogramTest, CumulativeBucketsInSeconds) {
  v1::Histogram h;
  for (int i = 0; i < 40; ++i) h.add_buckets(0);
  h.set_buckets(3, 2);   // [8, 16) ns: below the first bound
  h.set_buckets(20, 1);  // [1.05, 2.10) ms
  h.set_buckets(39, 1);  // beyond the last bound
  h.set_count(4);
  h.set_sum_ns(2'000'000);
  auto p = ToPrometheus(h);
  EXPECT_EQ(p.sample_count, 4u);
  EXPECT_DOUBLE_EQ(p.sample_sum, 0.002);
  ASSERT_EQ(p.bucket.size(), HistogramBounds().size() + 1);
  EXPECT_EQ(p.bucket.front().cumulative_count, 2u);  // le = 1.024 us
  for (size_t i = 1; i < p.bucket.size(); ++i) {
    EXPECT_GE(p.bucket[i].cumulative_count, p.bucket[i - 1].cumulative_count);
  }
  EXPECT_EQ(p.bucket[HistogramBounds().size() - 1].cumulative_count, 3u);
  EXPECT_EQ(p.bucket.back().cumulative_count, 4u);  // +Inf
}

TEST(ListenAddressTest, PortAloneMeansLoopback) {
  EXPECT_EQ(NormalizeListenAddress("9464"), "127.0.0.1:9464");
  EXPECT_EQ(NormalizeListenAddress(":9464"), "127.0.0.1:9464");
  EXPECT_EQ(NormalizeListenAddress("0.0.0.0:9464"), "0.0.0.0:9464");
  EXPECT_FALSE(NormalizeListenAddress("host:http"));
  EXPECT_FALSE(NormalizeListenAddress("99999"));
  EXPECT_FALSE(NormalizeListenAddress(""));
}

}  // namespace
}  // namespace threadscope::metrics
