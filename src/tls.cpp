#include "tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/tls.hpp"

namespace netserver {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;

namespace {

// The most a TLS transport takes from the session's queue per write: a few full records. The rest
// stays queued in the session, where max_output and backpressure see it.
constexpr std::size_t max_chunk = 64 * 1024;

asio::steady_timer::duration to_duration(double seconds) {
  return std::chrono::duration_cast<asio::steady_timer::duration>(std::chrono::duration<double>(seconds));
}

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

// A session's byte stream over TLS. Reads and writes go through Asio's ssl::stream: the handshake
// is cut at its deadline, a write is one composed async_write of a chunk copied from the
// session's queue (a write_some would encrypt one record only), an EOF without close_notify is an
// ordinary end, and the closing async_shutdown is bounded by the linger deadline.
class TlsTransport final : public Transport {
 public:
  TlsTransport(Socket socket, ssl::context& context, double handshake_timeout)
      : stream_(std::move(socket), context), timer_(stream_.get_executor()), handshake_timeout_(handshake_timeout) {}

  void start(Ready ready) override {
    timer_.expires_after(to_duration(handshake_timeout_));
    timer_.async_wait([self = shared_from_this(), this](const error_code& error) {
      if (error || handshake_done_) return;
      timed_out_ = true;  // a client that never finishes its handshake holds nothing longer
      close_socket();
    });
    stream_.async_handshake(ssl::stream_base::server,
                            [self = shared_from_this(), this, ready = std::move(ready)](error_code error) {
                              timer_.cancel();
                              if (timed_out_) error = asio::error::timed_out;
                              if (!error) {
                                handshake_done_ = true;
                                describe();
                              }
                              ready(error);
                              wake_writer(error);
                            });
  }

  void async_read_some(std::span<char> into, ReadDone done) override {
    stream_.async_read_some(asio::buffer(into.data(), into.size()),
                            [done = std::move(done)](error_code error, std::size_t bytes) {
                              if (error == ssl::error::stream_truncated) error = asio::error::eof;  // no close_notify
                              done(error, bytes);
                            });
  }

  // Only what OpenSSL has already decrypted: that needs no I/O, so it cannot disturb the stream.
  std::size_t read_now(std::span<char> into, bool&) override {
    SSL* ssl = stream_.native_handle();
    const int pending = SSL_pending(ssl);
    if (pending <= 0) return 0;
    const int n = SSL_read(ssl, into.data(), static_cast<int>(std::min<std::size_t>(into.size(), pending)));
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }

  std::size_t write_now(std::string_view bytes, error_code& error) override {
    if (write_error_) {
      error = write_error_;
      return 0;
    }
    if (!handshake_done_ || write_pending_ || !stream_.lowest_layer().is_open()) return 0;
    const std::size_t taken = std::min(bytes.size(), max_chunk);
    writing_.assign(bytes.data(), taken);
    write_pending_ = true;
    asio::async_write(stream_, asio::buffer(writing_), [self = shared_from_this(), this](const error_code& error, std::size_t) {
      write_pending_ = false;
      if (error) write_error_ = error;
      if (writing_.capacity() > 16 * 1024) std::string().swap(writing_);  // idle sessions keep little
      wake_writer(error);
      if (shutdown_after_write_) start_shutdown();
    });
    return taken;
  }

  void async_wait_writable(Ready ready) override {
    if (!stream_.lowest_layer().is_open()) {
      asio::post(stream_.get_executor(), [ready = std::move(ready)] { ready(asio::error::operation_aborted); });
      return;
    }
    writer_ = std::move(ready);
  }

  bool shutdown(double linger, bool, std::function<void()> done) override {
    if (!stream_.lowest_layer().is_open()) return false;
    done_ = std::move(done);
    timer_.expires_after(to_duration(linger));
    timer_.async_wait([self = shared_from_this(), this](const error_code& error) {
      if (!error) close_socket();  // the client did not answer in time: whatever is pending ends now
    });
    if (!handshake_done_) drain();  // no TLS yet: a plain half-close, as for a plaintext client
    else if (write_pending_) shutdown_after_write_ = true;
    else start_shutdown();
    return true;
  }

  void close() override {
    close_socket();
    timer_.cancel();
    wake_writer(asio::error::operation_aborted);
  }

  bool is_open() const override { return stream_.lowest_layer().is_open(); }

  const TlsInfo* tls() const override { return handshake_done_ ? &info_ : nullptr; }

 private:
  void close_socket() {
    error_code ignored;
    stream_.lowest_layer().close(ignored);
  }

  void wake_writer(const error_code& error) {
    if (!writer_) return;
    Ready writer = std::move(writer_);
    writer_ = nullptr;
    writer(error);
  }

  // Our close_notify, then the client's; the session's read still pending is cancelled first,
  // since the shutdown reads from the stream itself.
  void start_shutdown() {
    shutdown_after_write_ = false;
    error_code ignored;
    stream_.lowest_layer().cancel(ignored);
    asio::post(stream_.get_executor(), [self = shared_from_this(), this] {
      stream_.async_shutdown([self, this](const error_code&) { end_linger(); });
    });
  }

  void drain() {
    error_code ignored;
    stream_.lowest_layer().shutdown(asio::socket_base::shutdown_send, ignored);
    stream_.lowest_layer().cancel(ignored);
    drain_more();
  }

  void drain_more() {
    stream_.next_layer().async_read_some(asio::buffer(sink_), [self = shared_from_this(), this](const error_code& error,
                                                                                                std::size_t) {
      if (!error) return drain_more();
      end_linger();
    });
  }

  void end_linger() {
    timer_.cancel();
    close_socket();
    if (auto done = std::exchange(done_, nullptr)) done();
  }

  void describe() {
    SSL* ssl = stream_.native_handle();
    info_.version = SSL_get_version(ssl);
    info_.cipher = SSL_get_cipher_name(ssl);
    if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) info_.server_name = name;
    const unsigned char* alpn = nullptr;
    unsigned length = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &length);
    if (alpn) info_.alpn.assign(reinterpret_cast<const char*>(alpn), length);
    if (X509* peer = SSL_get0_peer_certificate(ssl)) {
      info_.peer_subject = print_to_string(
          [&](BIO* bio) { X509_NAME_print_ex(bio, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253); });
      info_.peer_verified = SSL_get_verify_result(ssl) == X509_V_OK;
    }
    info_.resumed = SSL_session_reused(ssl) == 1;
  }

  ssl::stream<Socket> stream_;
  asio::steady_timer timer_;  // the handshake deadline, later the linger deadline
  double handshake_timeout_;
  bool handshake_done_ = false;
  bool timed_out_ = false;
  bool write_pending_ = false;         // the one async_write in flight
  bool shutdown_after_write_ = false;  // shutdown() came while a write was in flight
  error_code write_error_;
  std::string writing_;                // the chunk being written (stable until it completes)
  Ready writer_;                       // the session waiting to write more
  std::function<void()> done_;         // the end of a graceful shutdown
  TlsInfo info_;
  char sink_[512];
};

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
  return std::make_shared<TlsTransport>(std::move(socket), context_, handshake_timeout_);
}

}  // namespace netserver
