// A dump as threadscope.v1 messages, and a dump's failure as a DumpError kind.
#pragma once

#include "daemon/common/status.h"
#include "daemon/dump/facts.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::dump {

v1::ProcessDump ToProto(const DumpReport& report);

// The cause of a failed dump (daemon/dump/dump.h says which Status code is which).
v1::DumpErrorKind ErrorKindOf(const Status& status);

}  // namespace threadscope::dump
