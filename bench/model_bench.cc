// How fast the pure model decodes and consumes records (the daemon's per-record CPU cost):
// thread lifecycles, GIL streams (--gil full, --gil waits) and lock streams (--locks all,
// --locks contended), generated. items_per_second is records per second on one core.
//   bazel run -c opt //bench:model_bench
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

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

// Decode + model over one batch, from a fresh model each iteration.
void RunBatch(benchmark::State& state, const std::string& batch,
              model::JoinVisibility joins = model::JoinVisibility::kExact) {
  size_t records = 0;
  for (auto _ : state) {
    model::TraceModelConfig config;
    config.threads.joins = joins;
    model::TraceModel m(config);
    recording::RecordReader reader(batch);
    model::RecordView record;
    while (reader.Next(&record)) {
      m.ApplyRecord(record, nullptr);
      ++records;
    }
    benchmark::DoNotOptimize(m.gil().records());
  }
  state.SetItemsProcessed(static_cast<int64_t>(records));
  state.counters["records_per_batch"] = static_cast<double>(records / state.iterations());
}

constexpr uint32_t kThreads = 4;
constexpr int kOps = 100000;

// --gil full on a hand-off-heavy program (bench/workloads.py handoff): 4 threads, each
// blocking call a take_gil entry, its return and a drop; every 8th take waits.
void BM_GilFullRecords(benchmark::State& state) {
  testing::EventGenerator g;
  std::vector<std::string> r;
  for (int i = 0; i < kOps; ++i) {
    uint32_t tid = 2000 + static_cast<uint32_t>(i) % kThreads;
    r.push_back(g.Gil(tid, TS_GIL_TAKE_BEGIN));
    r.push_back(g.Gil(tid, TS_GIL_TAKE_END));
    if (i % 8 == 0) r.push_back(g.Gil(tid, TS_GIL_FORCED));
    r.push_back(g.Gil(tid, i % 8 == 0 ? TS_GIL_DROP_FORCED : TS_GIL_DROP));
  }
  RunBatch(state, testing::Batch(r));
}
BENCHMARK(BM_GilFullRecords);

// --gil waits: only the takes that wait, a begin and an end each.
void BM_GilWaitsRecords(benchmark::State& state) {
  testing::EventGenerator g;
  std::vector<std::string> r;
  for (int i = 0; i < kOps; ++i) {
    uint32_t tid = 2000 + static_cast<uint32_t>(i) % kThreads;
    r.push_back(g.Gil(tid, TS_GIL_TAKE_BEGIN));
    r.push_back(g.Gil(tid, TS_GIL_WAITED));
  }
  RunBatch(state, testing::Batch(r));
}
BENCHMARK(BM_GilWaitsRecords);

// --locks all: 4 threads taking and releasing 16 locks (3.4-3.12 semaphore locks); every 4th
// acquire blocked (a semaphore wait around it, as --locks contended also records).
void BM_LockRecords(benchmark::State& state) {
  testing::EventGenerator g;
  std::vector<std::string> r;
  constexpr uint64_t kLocks = 16;
  for (uint64_t l = 0; l < kLocks; ++l) r.push_back(g.LockNew(1000, 0x1000 + l * 0x40, 0x9000 + l * 0x40));
  for (int i = 0; i < kOps; ++i) {
    uint32_t tid = 2000 + static_cast<uint32_t>(i) % kThreads;
    uint64_t l = static_cast<uint64_t>(i) % kLocks;
    uint64_t obj = 0x1000 + l * 0x40, sem = 0x9000 + l * 0x40;
    bool waited = i % 4 == 0;
    if (waited) {
      r.push_back(g.SemWait(TS_EV_SEM_WAIT_BEGIN, tid, sem));
      r.push_back(g.SemWait(TS_EV_SEM_WAIT_END, tid, sem, 0));
    }
    r.push_back(g.LockAcquire(tid, obj, sem, 1, waited));
    r.push_back(g.LockRelease(tid, obj, sem));
  }
  RunBatch(state, testing::Batch(r));
}
BENCHMARK(BM_LockRecords);

// --locks contended: only the waits (semaphore wait begin and end on known locks).
void BM_LockWaitRecords(benchmark::State& state) {
  testing::EventGenerator g;
  std::vector<std::string> r;
  constexpr uint64_t kLocks = 16;
  for (uint64_t l = 0; l < kLocks; ++l) r.push_back(g.LockNew(1000, 0x1000 + l * 0x40, 0x9000 + l * 0x40));
  for (int i = 0; i < kOps; ++i) {
    uint32_t tid = 2000 + static_cast<uint32_t>(i) % kThreads;
    uint64_t sem = 0x9000 + (static_cast<uint64_t>(i) % kLocks) * 0x40;
    r.push_back(g.SemWait(TS_EV_SEM_WAIT_BEGIN, tid, sem));
    r.push_back(g.SemWait(TS_EV_SEM_WAIT_END, tid, sem, 0));
  }
  RunBatch(state, testing::Batch(r));
}
BENCHMARK(BM_LockWaitRecords);

}  // namespace
}  // namespace threadscope

BENCHMARK_MAIN();
