// The JSON report: the documented contract (README, "JSON report") of `--report`, `-o json`,
// `report -o json` and the `-o jsonl` events. Live and replayed traces render identically
// because everything here derives from the snapshot alone. tests/unit/report_json_test.cc pins
// it: a snapshot built from generated records, rendered, compared with a committed golden file.
#pragma once

#include <nlohmann/json.hpp>

#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::client {

nlohmann::json ThreadJson(const v1::Thread& t);
nlohmann::json ReportJson(const v1::Snapshot& snapshot);
nlohmann::json EventJson(const v1::WatchEventsResponse& event);

}  // namespace threadscope::client
