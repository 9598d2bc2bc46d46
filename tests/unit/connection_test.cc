// The CLI's transport without an engine linked: //client:cli builds and runs without libbpf,
// capstone's BPF users or prometheus-cpp; the in-process engine is an optional dependency.
#include "client/connection.h"

#include <gtest/gtest.h>

namespace threadscope::client {
namespace {

TEST(ConnectionTest, ServerAddressesAreNormalized) {
  EXPECT_EQ(NormalizeServerAddress(""), "unix:/run/threadscope/threadscope.sock");
  EXPECT_EQ(NormalizeServerAddress("unix:///x/s.sock"), "unix:/x/s.sock");
  EXPECT_EQ(NormalizeServerAddress("/x/s.sock"), "unix:/x/s.sock");
  EXPECT_EQ(NormalizeServerAddress("tcp://host:7000"), "host:7000");
}

TEST(ConnectionTest, WithoutAnInProcessEngineNoDaemonIsUnavailable) {
  ConnectOptions options;
  options.no_daemon = true;
  auto conn = Connection::Open(options);
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(conn.status().message().find("no in-process engine"), std::string::npos)
      << conn.status().message();
}

TEST(ConnectionTest, TheEngineFactoryIsWhatServesTheStub) {
  bool started = false;
  ConnectOptions options;
  options.no_daemon = true;
  options.local_engine = [&]() -> StatusOr<std::unique_ptr<LocalEngine>> {
    started = true;
    return InternalError("refused by the test");
  };
  auto conn = Connection::Open(options);
  EXPECT_TRUE(started);
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace threadscope::client
