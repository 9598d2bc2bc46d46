// The fixture the thread, lock and GIL model tests share: a TraceModel fed records the way the
// engine feeds it (framed by RecordReader, applied one at a time), what it said split by kind,
// and the generator that writes the records.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "recording/record_reader.h"
#include "daemon/model/trace_model.h"
#include "tests/unit/event_generator.h"

namespace threadscope::testing {

class ModelTest : public ::testing::Test {
 protected:
  struct Changes {
    std::vector<model::ModelEvent> all;  // in the order the model said them
    std::vector<model::ThreadChangeEvent> threads;
    std::vector<model::LockChangeEvent> locks;
    std::vector<model::GilChangeEvent> gil;
  };

  // Each string holds zero or more whole records: a generator's record, a Batch, or nothing
  // (a step that only moves the generator's clock).
  Changes FeedRecords(const std::vector<std::string>& batches) {
    Changes out;
    for (const auto& batch : batches) {
      recording::RecordReader reader(batch);
      recording::RecordView record;
      while (reader.Next(&record)) model_.ApplyRecord(record, &out.all);
      EXPECT_TRUE(reader.status().ok()) << reader.status().ToString();
    }
    for (const auto& e : out.all) {
      switch (e.kind) {
        case model::ModelEvent::Kind::kThread: out.threads.push_back(e.thread); break;
        case model::ModelEvent::Kind::kLock: out.locks.push_back(e.lock); break;
        case model::ModelEvent::Kind::kGil: out.gil.push_back(e.gil); break;
      }
    }
    return out;
  }
  // Bytes applied as one record whatever they hold (what the decoder refuses, and how it counts).
  void ApplyBytes(const std::string& bytes) {
    model_.ApplyRecord(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), nullptr);
  }
  void Configure(const model::TraceModelConfig& config) { model_ = model::TraceModel(config); }

  static constexpr uint32_t kMain = 1000;  // the target's pid, and its main thread
  EventGenerator g_{kMain};
  model::TraceModel model_;
};

}  // namespace threadscope::testing
