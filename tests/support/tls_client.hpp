#pragma once
// A blocking TLS client (OpenSSL) for the tests that go through a balancer: it connects from a
// chosen loopback source address, trusts the tests' CA, and may ask for a server name and show
// the tests' client certificate (CN=alice).

#include <sys/socket.h>
#include <sys/time.h>

#include <string>

#include <catch2/catch.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "harness.hpp"

namespace harness {

class TlsClient {
 public:
  TlsClient(int port, const std::string& certs, const std::string& source, const std::string& server_name = "",
            bool with_certificate = false)
      : tcp_(port, "127.0.0.1", source) {
    context_ = SSL_CTX_new(TLS_client_method());
    REQUIRE(context_);
    REQUIRE(SSL_CTX_load_verify_locations(context_, (certs + "/ca.pem").c_str(), nullptr) == 1);
    SSL_CTX_set_verify(context_, SSL_VERIFY_PEER, nullptr);
    if (with_certificate) {
      REQUIRE(SSL_CTX_use_certificate_file(context_, (certs + "/client.pem").c_str(), SSL_FILETYPE_PEM) == 1);
      REQUIRE(SSL_CTX_use_PrivateKey_file(context_, (certs + "/client.key").c_str(), SSL_FILETYPE_PEM) == 1);
    }
    ssl_ = SSL_new(context_);
    if (!server_name.empty()) SSL_set_tlsext_host_name(ssl_, server_name.c_str());
    SSL_set_fd(ssl_, tcp_.fd());
    timeval limit{10, 0};  // a server that never answers fails the test instead of hanging it
    ::setsockopt(tcp_.fd(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    const int connected = SSL_connect(ssl_);
    INFO("OpenSSL: " << ERR_error_string(ERR_peek_error(), nullptr));
    REQUIRE(connected == 1);
  }
  ~TlsClient() {
    SSL_free(ssl_);
    SSL_CTX_free(context_);
  }
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  bool send(const std::string& text) { return SSL_write(ssl_, text.data(), static_cast<int>(text.size())) > 0; }
  std::string read_line() {
    while (pending_.find("\r\n") == std::string::npos) {
      char buffer[1024];
      const int n = SSL_read(ssl_, buffer, sizeof buffer);
      if (n <= 0) return "(nothing)";
      pending_.append(buffer, static_cast<std::size_t>(n));
    }
    const std::size_t end = pending_.find("\r\n");
    std::string line = pending_.substr(0, end);
    pending_.erase(0, end + 2);
    return line;
  }
  int local_port() const { return tcp_.local_port(); }

 private:
  Client tcp_;
  SSL_CTX* context_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string pending_;
};

}  // namespace harness
