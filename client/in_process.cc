#include "client/in_process.h"

#include "daemon/service/server.h"

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

}  // namespace threadscope::client
