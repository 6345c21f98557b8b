#include "tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <boost/asio/ssl/error.hpp>
#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/tls.hpp"
#include "tls_transport.hpp"

namespace netserver {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;

namespace {

// Text of an OpenSSL object printed to a memory BIO (a name, a time).
template <class Print>
std::string print_to_string(Print print) {
  BIO* bio = BIO_new(BIO_s_mem());
  print(bio);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string text(data, size > 0 ? static_cast<std::size_t>(size) : 0);
  BIO_free(bio);
  return text;
}

std::shared_ptr<TlsContext>& installed_context() {
  static std::shared_ptr<TlsContext> context;
  return context;
}

// The text of the last OpenSSL error, without its codes: "no such file", "key values mismatch".
std::string openssl_error(const error_code& error) {
  std::string text = error.message();
  ERR_clear_error();
  return text;
}

// Opens the file the way OpenSSL will, to report a missing or unreadable one by its errno.
void check_readable(const Config& config, std::string_view key) {
  const std::string& path = config.string(key);
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (!file) throw ConfigError(fmt::format("{}: cannot read the file: {}", config.describe(key), std::strerror(errno)));
  std::fclose(file);
}

int protocol_version(const std::string& name) {
  if (name == "TLSv1.3") return TLS1_3_VERSION;
  if (name == "TLSv1.2") return TLS1_2_VERSION;
  if (name == "TLSv1.1") return TLS1_1_VERSION;
  return TLS1_VERSION;
}

std::string check_alpn(const Value& value) {
  for (const std::string& protocol : std::get<std::vector<std::string>>(value))
    if (protocol.empty() || protocol.size() > 255) return fmt::format("\"{}\": an ALPN protocol has 1 to 255 bytes", protocol);
  return "";
}

// ALPN: the first of the server's protocols (in its order) that the client offers. A client that
// offers only others gets the no_application_protocol alert (RFC 7301); one offering none is fine.
int select_alpn(SSL*, const unsigned char** out, unsigned char* out_length, const unsigned char* offered,
                unsigned offered_length, void* argument) {
  const std::string& ours = *static_cast<const std::string*>(argument);
  unsigned char* chosen = nullptr;
  const int result = SSL_select_next_proto(&chosen, out_length, reinterpret_cast<const unsigned char*>(ours.data()),
                                           static_cast<unsigned>(ours.size()), offered, offered_length);
  if (result != OPENSSL_NPN_NEGOTIATED) return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

void TlsContext::add_options(Options& options) {
  options.add(Option::text("tls.cert_file", "", "PEM certificate chain for tls:// listeners: the server's certificate "
                                                "first, then its intermediates"));
  options.add(Option::text("tls.key_file", "", "PEM private key of the certificate (default: read from cert_file)"));
  options.add(Option::text("tls.ca_file", "", "PEM CA certificates that client certificates must chain to (mTLS)"));
  options.add(Option::text("tls.verify_client", "none", "ask clients for a certificate: none, optional (verified when "
                                                         "given) or required")
                  .with_choices({"none", "optional", "required"}));
  options.add(Option::text("tls.min_protocol", "TLSv1.2", "oldest TLS version accepted")
                  .with_choices({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}));
  options.add(Option::text("tls.ciphers", "", "OpenSSL cipher list for TLS 1.2 and older (default: OpenSSL's)"));
  options.add(Option::text("tls.ciphersuites", "", "OpenSSL TLS 1.3 cipher suites (default: OpenSSL's)"));
  options.add(Option::list("tls.alpn", {}, "ALPN protocols offered, in the server's order of preference (h2, "
                                           "http/1.1, ...)").with_check(check_alpn));
  options.add(Option::duration("tls.handshake_timeout", 10, 0.001, 3600, "seconds a client may take to complete the "
                                                                         "TLS handshake"));
  options.add(Option::flag("tls.session_tickets", true, "let clients resume sessions with tickets (no full handshake)"));
}

TlsContext::TlsContext(double handshake_timeout)
    : context_(ssl::context::tls_server), handshake_timeout_(handshake_timeout) {}

std::shared_ptr<TlsContext> TlsContext::load(const Config& config, const std::vector<std::string>& tls_listeners) {
  if (config.string("tls.cert_file").empty()) {
    throw ConfigError(fmt::format("listen: {} is a TLS listener, but tls.cert_file is not set ({})",
                                  tls_listeners.empty() ? std::string("tls://") : tls_listeners.front(),
                                  config.describe("listen")));
  }
  std::shared_ptr<TlsContext> context(new TlsContext(config.seconds("tls.handshake_timeout")));
  context->load_files(config);
  context->apply_settings(config);
  context->warn_if_expired(config);
  return context;
}

void TlsContext::load_files(const Config& config) {
  const std::string key_key = config.string("tls.key_file").empty() ? "tls.cert_file" : "tls.key_file";
  check_readable(config, "tls.cert_file");
  check_readable(config, key_key);
  error_code error;
  // The key first: loading the certificate after a key that does not belong to it drops the key,
  // which check_private_key below then reports as a mismatch.
  context_.use_private_key_file(config.string(key_key), ssl::context::pem, error);
  if (error) throw ConfigError(fmt::format("{}: not a PEM private key: {}", config.describe(key_key), openssl_error(error)));
  context_.use_certificate_chain_file(config.string("tls.cert_file"), error);
  if (error)
    throw ConfigError(fmt::format("{}: not a PEM certificate chain: {}", config.describe("tls.cert_file"), openssl_error(error)));
  if (SSL_CTX_check_private_key(context_.native_handle()) != 1) {
    ERR_clear_error();
    throw ConfigError(fmt::format("{}: the key does not match the certificate in {}", config.describe(key_key),
                                  config.describe("tls.cert_file")));
  }
  const std::string& verify = config.string("tls.verify_client");
  const std::string& ca_file = config.string("tls.ca_file");
  if (verify != "none" && ca_file.empty())
    throw ConfigError(fmt::format("{} needs tls.ca_file: the CA certificates client certificates must chain to",
                                  config.describe("tls.verify_client")));
  if (ca_file.empty()) return;
  check_readable(config, "tls.ca_file");
  context_.load_verify_file(ca_file, error);
  if (error) throw ConfigError(fmt::format("{}: not PEM CA certificates: {}", config.describe("tls.ca_file"), openssl_error(error)));
  if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca_file.c_str()))
    SSL_CTX_set_client_CA_list(context_.native_handle(), names);  // tells clients which certificate to send
}

void TlsContext::apply_settings(const Config& config) {
  SSL_CTX* native = context_.native_handle();
  context_.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(native, protocol_version(config.string("tls.min_protocol")));
  if (const std::string& ciphers = config.string("tls.ciphers"); !ciphers.empty() && SSL_CTX_set_cipher_list(native, ciphers.c_str()) != 1) {
    ERR_clear_error();
    throw ConfigError(fmt::format("{}: OpenSSL knows none of these ciphers", config.describe("tls.ciphers")));
  }
  if (const std::string& suites = config.string("tls.ciphersuites"); !suites.empty() && SSL_CTX_set_ciphersuites(native, suites.c_str()) != 1) {
    ERR_clear_error();
    throw ConfigError(fmt::format("{}: not a valid TLS 1.3 cipher suite list", config.describe("tls.ciphersuites")));
  }
  const std::string& verify = config.string("tls.verify_client");
  if (verify == "optional") context_.set_verify_mode(ssl::verify_peer);
  else if (verify == "required") context_.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  // Resumption: the server-side cache (TLS 1.2 ids) needs a context id once clients are verified;
  // tickets are OpenSSL's default. The ticket keys are made here, before any fork, so every
  // PreFork child and Multiplex worker accepts the tickets of the others.
  static const unsigned char id_context[] = "netserver";
  SSL_CTX_set_session_id_context(native, id_context, sizeof id_context - 1);
  if (!config.boolean("tls.session_tickets")) SSL_CTX_set_options(native, SSL_OP_NO_TICKET);
  // The transport drives OpenSSL on the socket itself: a write returns after each record, may be
  // retried from a moved buffer (the session's queue grows), and idle sessions keep no record
  // buffers; read-ahead takes what the socket holds in one read. Renegotiation (TLS 1.2) would let
  // a client make our writes wait for its input: refused, as nginx does.
  SSL_CTX_set_mode(native, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(native, 1);
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION);
  set_alpn(config.list("tls.alpn"));
}

void TlsContext::set_alpn(const std::vector<std::string>& protocols) {
  if (protocols.empty()) return;
  for (const std::string& protocol : protocols) alpn_wire_ += static_cast<char>(protocol.size()) + protocol;
  SSL_CTX_set_alpn_select_cb(context_.native_handle(), select_alpn, &alpn_wire_);
}

void TlsContext::warn_if_expired(const Config& config) {
  X509* certificate = SSL_CTX_get0_certificate(context_.native_handle());
  if (!certificate) return;
  const auto date = [](const ASN1_TIME* time) { return print_to_string([&](BIO* bio) { ASN1_TIME_print(bio, time); }); };
  if (X509_cmp_current_time(X509_get0_notAfter(certificate)) < 0)
    log::warning("{}: the certificate expired on {}; clients that check it will refuse to connect",
                 config.describe("tls.cert_file"), date(X509_get0_notAfter(certificate)));
  else if (X509_cmp_current_time(X509_get0_notBefore(certificate)) > 0)
    log::warning("{}: the certificate is not valid before {}", config.describe("tls.cert_file"),
                 date(X509_get0_notBefore(certificate)));
}

TlsContext* TlsContext::installed() { return installed_context().get(); }

void TlsContext::install(std::shared_ptr<TlsContext> context) { installed_context() = std::move(context); }

std::shared_ptr<Transport> TlsContext::make_transport(Transport::Socket socket) {
  return std::make_shared<TlsTransport>(std::move(socket), context_.native_handle(), handshake_timeout_);
}

}  // namespace netserver
