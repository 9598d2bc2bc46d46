// How fast the pure model consumes records (the daemon's per-record CPU cost).
//   bazel run -c opt //bench:model_bench
#include <benchmark/benchmark.h>

#include "daemon/model/trace_model.h"
#include "tests/unit/event_generator.h"

namespace threadscope {
namespace {

// The records one thread start/join produces on a 3.4-3.12 interpreter.
std::string OneThread(testing::EventGenerator& g, uint32_t tid, uint64_t boot) {
  return testing::Batch({g.StartBegin(1000, boot), g.Clone(1000, tid),
                         g.StartEnd(1000, boot, true, 0x7f0000 + tid), g.Bootstrap(tid, boot),
                         g.Sentinel(tid, 0x10 + tid, 0x20 + tid),
                         g.SemWait(TS_EV_SEM_WAIT_BEGIN, 1000, 0x20 + tid), g.BodyDone(tid),
                         g.Exit(tid), g.SemWait(TS_EV_SEM_WAIT_END, 1000, 0x20 + tid, 0)});
}

void BM_ThreadLifecycleRecords(benchmark::State& state) {
  testing::EventGenerator g;
  std::string batch;
  for (uint32_t i = 0; i < 1000; ++i) batch += OneThread(g, 2000 + i, 0xb000 + i);
  size_t records = 0;
  for (auto _ : state) {
    model::TraceModelConfig config;
    config.threads.joins = model::JoinVisibility::kBlockingOnly;
    model::TraceModel m(config);
    recording::RecordReader reader(batch);
    recording::RecordView record;
    while (reader.Next(&record)) {
      m.ApplyRecord(record, nullptr);
      ++records;
    }
    benchmark::DoNotOptimize(m.threads().threads().size());
  }
  state.SetItemsProcessed(static_cast<int64_t>(records));
}
BENCHMARK(BM_ThreadLifecycleRecords);

}  // namespace
}  // namespace threadscope

BENCHMARK_MAIN();
