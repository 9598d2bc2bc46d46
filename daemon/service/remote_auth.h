// gRPC over TCP: off by default, and only ever with TLS and a bearer token. A request that
// reaches a handler through the TCP port carried the token (the processor rejects the rest with
// UNAUTHENTICATED) and is marked in its auth context; the service treats such callers as the
// daemon's operators (any target), since TCP has no peer credentials to check.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_metadata_processor.h>

#include <memory>
#include <string>

#include "daemon/common/status.h"

namespace threadscope::service {

inline constexpr char kTokenProperty[] = "threadscope.bearer_token_verified";

struct TcpOptions {
  std::string address;     // HOST:PORT
  std::string cert_file;   // server certificate chain (PEM)
  std::string key_file;    // its private key (PEM)
  std::string client_ca;   // optional: require client certificates signed by this CA (mTLS)
  std::string token_file;  // the bearer token clients must send
};

// TLS server credentials with the token check installed. Errors name the file and the flag.
StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpServerCredentials(const TcpOptions& options);

// Whether this call came in with a verified bearer token (TCP port).
bool HasVerifiedToken(const grpc::ServerContext& ctx);

// The token in a file: surrounding whitespace removed; at least 16 characters.
StatusOr<std::string> ReadToken(const std::string& path);

}  // namespace threadscope::service
