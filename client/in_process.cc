#include "client/in_process.h"

#include <string>

#include "daemon/service/server.h"
#include "daemon/target/cpython_image.h"

namespace threadscope::client {

namespace {

class InProcessAdapter : public LocalEngine {
 public:
  explicit InProcessAdapter(std::unique_ptr<service::InProcessEngine> engine)
      : engine_(std::move(engine)) {}
  std::shared_ptr<grpc::Channel> channel() override { return engine_->channel(); }

 private:
  std::unique_ptr<service::InProcessEngine> engine_;
};

}  // namespace

StatusOr<std::unique_ptr<LocalEngine>> StartInProcessEngine() {
  TS_ASSIGN_OR_RETURN(auto engine, service::InProcessEngine::Start());
  return std::unique_ptr<LocalEngine>(new InProcessAdapter(std::move(engine)));
}

EngineAdapter InProcessEngineAdapter() {
  EngineAdapter adapter;
  adapter.local_engine = StartInProcessEngine;
  adapter.executes_cpython = [](pid_t pid) {
    return target::ExecutesCPython("/proc/" + std::to_string(pid) + "/exe");
  };
  return adapter;
}

}  // namespace threadscope::client
