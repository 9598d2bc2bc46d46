#include "daemon/service/remote_auth.h"

#include <fstream>
#include <sstream>

namespace threadscope::service {

namespace {

StatusOr<std::string> ReadFile(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot read " + what + " " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class TokenProcessor : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenProcessor(std::string token) : expected_("Bearer " + std::move(token)) {}
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed, OutputMetadata* response) override {
    (void)response;
    auto it = auth_metadata.find("authorization");
    if (it == auth_metadata.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "a bearer token is required on this port (--token-file)");
    }
    std::string got(it->second.data(), it->second.size());
    // Constant-time comparison: the token is a secret.
    unsigned diff = got.size() ^ expected_.size();
    for (size_t i = 0; i < got.size() && i < expected_.size(); ++i) {
      diff |= static_cast<unsigned char>(got[i] ^ expected_[i]);
    }
    if (diff != 0) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the bearer token does not match");
    }
    consumed->insert(std::make_pair(std::string(it->first.data(), it->first.size()),
                                    std::string(it->second.data(), it->second.size())));
    context->AddProperty(kTokenProperty, "1");
    return grpc::Status::OK;
  }

 private:
  std::string expected_;
};

}  // namespace

StatusOr<std::string> ReadToken(const std::string& path) {
  TS_ASSIGN_OR_RETURN(std::string token, ReadFile(path, "token file"));
  auto b = token.find_first_not_of(" \t\r\n");
  auto e = token.find_last_not_of(" \t\r\n");
  token = b == std::string::npos ? "" : token.substr(b, e - b + 1);
  if (token.size() < 16) {
    return InvalidArgumentError("the token in " + path + " is shorter than 16 characters");
  }
  return token;
}

StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpServerCredentials(const TcpOptions& o) {
  if (o.cert_file.empty() || o.key_file.empty() || o.token_file.empty()) {
    return InvalidArgumentError(
        "--listen-tcp needs --tls-cert, --tls-key and --token-file: gRPC over TCP is served only "
        "with TLS and a bearer token");
  }
  TS_ASSIGN_OR_RETURN(std::string cert, ReadFile(o.cert_file, "--tls-cert"));
  TS_ASSIGN_OR_RETURN(std::string key, ReadFile(o.key_file, "--tls-key"));
  TS_ASSIGN_OR_RETURN(std::string token, ReadToken(o.token_file));
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({key, cert});
  if (!o.client_ca.empty()) {
    TS_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(o.client_ca, "--tls-client-ca"));
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  auto creds = grpc::SslServerCredentials(ssl);
  creds->SetAuthMetadataProcessor(std::make_shared<TokenProcessor>(token));
  return creds;
}

bool HasVerifiedToken(const grpc::ServerContext& ctx) {
  auto auth = ctx.auth_context();
  return auth && !auth->FindPropertyValues(kTokenProperty).empty();
}

}  // namespace threadscope::service
