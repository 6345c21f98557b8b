#include "tls.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/ocsp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>

#include <boost/asio/ssl/error.hpp>
#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/tls.hpp"
#include "restart.hpp"
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

// The TLS 1.2 cipher lists of Mozilla's server-side TLS profiles (ssl-config.mozilla.org, version
// 5.7), as OpenSSL names them. intermediate: forward secrecy (ECDHE) and AEAD suites only, so no
// CBC suite and no LUCKY13-style padding oracle; its DHE suites are left out, since no DH parameters
// are configured. old: for clients from before 2014 (Windows XP, Java 6), CBC included; it needs
// security level 0 for TLS 1.0 and 1.1 under OpenSSL 3. modern allows TLS 1.3 only.
constexpr const char* intermediate_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* old_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA256:"
    "ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:"
    "ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA256:"
    "DHE-RSA-AES256-SHA256:AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:AES128-SHA:"
    "AES256-SHA:DES-CBC3-SHA:@SECLEVEL=0";

struct Profile {
  const char* ciphers;       // TLS 1.2 and older
  const char* min_protocol;  // unless tls.min_protocol is set
};

Profile profile(const std::string& name) {
  if (name == "modern") return {intermediate_ciphers, "TLSv1.3"};
  if (name == "old") return {old_ciphers, "TLSv1"};
  return {intermediate_ciphers, "TLSv1.2"};
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

// A client's bytes as printable ASCII for the log: anything else (and \ and ") as \xNN.
std::string escaped(std::string_view bytes) {
  std::string out;
  for (const unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') out += static_cast<char>(c);
    else out += fmt::format("\\x{:02x}", c);
  }
  return out;
}

// SNI: a host name is accepted, which also stores it in the session, so that a TLS 1.2 session
// resumed later still names it (OpenSSL keeps only accepted names there). Anything else is not
// acknowledged and not shown to the handler; the handshake goes on, as without SNI.
int check_server_name(SSL* ssl, int*, void*) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_NOACK;
  if (is_host_name(name)) return SSL_TLSEXT_ERR_OK;
  log::warning("a TLS client sent the server name \"{}\", which is not a host name: the handler sees none", escaped(name));
  return SSL_TLSEXT_ERR_NOACK;
}

// The name the ticket secret crosses a restart under (keep_across_restart).
constexpr const char* ticket_secret_name = "tls_ticket_secret";

// Where the ticket key callback finds its TlsContext.
int context_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int ocsp_callback(SSL* ssl, void* argument) { return static_cast<TlsContext*>(argument)->staple_ocsp(ssl); }

// The seconds since the epoch of an ASN.1 time (0 for none).
long long epoch_seconds(const ASN1_TIME* time) {
  std::tm parts{};
  if (!time || ASN1_TIME_to_tm(time, &parts) != 1) return 0;
  return static_cast<long long>(timegm(&parts));
}

int ticket_key_callback(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
                        int encrypt) {
  auto* context = static_cast<TlsContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), context_index()));
  const int result = context ? context->ticket_key(name, iv, cipher, mac, encrypt) : -1;
  // TLS 1.3 clients use a ticket once (RFC 8446, C.4): a resumption that sends no new ticket
  // leaves the client none, and its next connection is a full handshake. So always renew there.
  if (result == 1 && !encrypt && SSL_version(ssl) == TLS1_3_VERSION) return 2;
  return result;
}

}  // namespace

bool is_host_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;  // bytes of the label so far
  for (std::size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      if (label == 0 || label > 63 || name[i - 1] == '-' || name[i - label] == '-') return false;
      label = 0;
      continue;
    }
    const char c = name[i];
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!allowed) return false;
    ++label;
  }
  return true;
}

void TlsContext::add_options(Options& options) {
  options.add(Option::text("tls.cert_file", "", "PEM certificate chain for tls:// listeners: the server's certificate "
                                                "first, then its intermediates"));
  options.add(Option::text("tls.key_file", "", "PEM private key of the certificate (default: read from cert_file)"));
  options.add(Option::text("tls.ca_file", "", "PEM CA certificates that client certificates must chain to (mTLS)"));
  options.add(Option::text("tls.verify_client", "none", "ask clients for a certificate: none, optional (verified when "
                                                         "given) or required")
                  .with_choices({"none", "optional", "required"}));
  options.add(Option::text("tls.profile", "intermediate", "Mozilla server-side TLS profile: modern (TLS 1.3 only), "
                                                            "intermediate (TLS 1.2 with ECDHE and AEAD suites only, "
                                                            "and 1.3) or old (back to TLS 1.0, CBC suites)")
                  .with_choices({"modern", "intermediate", "old"}));
  options.add(Option::text("tls.min_protocol", "TLSv1.2", "oldest TLS version accepted (default: the profile's: "
                                                           "TLSv1.3, TLSv1.2 or TLSv1)")
                  .with_choices({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}));
  options.add(Option::text("tls.ciphers", "", "OpenSSL cipher list for TLS 1.2 and older, in the server's order of "
                                              "preference (default: the profile's)"));
  options.add(Option::text("tls.ciphersuites", "", "OpenSSL TLS 1.3 cipher suites (default: OpenSSL's)"));
  options.add(Option::list("tls.alpn", {}, "ALPN protocols offered, in the server's order of preference (h2, "
                                           "http/1.1, ...)").with_check(check_alpn));
  options.add(Option::duration("tls.handshake_timeout", 10, 0.001, 3600, "seconds a client may take to complete the "
                                                                         "TLS handshake"));
  options.add(Option::flag("tls.session_tickets", true, "let clients resume sessions with tickets (no full handshake)"));
  options.add(Option::text("tls.ocsp_file", "", "DER OCSP response for the certificate (openssl ocsp -respout), "
                                                "stapled for clients that ask while it is valid; read at start and "
                                                "on HUP (needs the issuer in cert_file)"));
  options.add(Option::list("tls.ticket_key_files", {}, "files of 80 random bytes each (nginx's ssl_session_ticket_key "
                                                       "format): the first encrypts new tickets, all decrypt; servers "
                                                       "with the same files resume each other's sessions (default: "
                                                       "keys made at start, kept across HUP, rotated every "
                                                       "ticket_lifetime)"));
  options.add(Option::duration("tls.ticket_lifetime", 43200, 60, 7 * 86400, "seconds a session (and its ticket) may "
                                                                             "be resumed; without ticket_key_files, "
                                                                             "also how often the ticket key changes"));
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
  context->load_ticket_keys(config);
  context->load_ocsp_response(config);
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
  const Profile chosen = profile(config.string("tls.profile"));
  const bool min_set = config.origin("tls.min_protocol").kind != Origin::Kind::built_in;
  SSL_CTX_set_min_proto_version(native, protocol_version(min_set ? config.string("tls.min_protocol") : chosen.min_protocol));
  const std::string& ciphers = config.string("tls.ciphers");
  if (SSL_CTX_set_cipher_list(native, ciphers.empty() ? chosen.ciphers : ciphers.c_str()) != 1) {
    ERR_clear_error();
    throw ConfigError(fmt::format("{}: OpenSSL knows none of these ciphers", config.describe("tls.ciphers")));
  }
  // TLS 1.2: the server's order decides (strongest first), not a client that lists a weaker suite first.
  SSL_CTX_set_options(native, SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (const std::string& suites = config.string("tls.ciphersuites"); !suites.empty() && SSL_CTX_set_ciphersuites(native, suites.c_str()) != 1) {
    ERR_clear_error();
    throw ConfigError(fmt::format("{}: not a valid TLS 1.3 cipher suite list", config.describe("tls.ciphersuites")));
  }
  const std::string& verify = config.string("tls.verify_client");
  if (verify == "optional") context_.set_verify_mode(ssl::verify_peer);
  else if (verify == "required") context_.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  // Resumption: the server-side cache (TLS 1.2 ids) needs a context id once clients are verified;
  // tickets use the keys of load_ticket_keys, made here, before any fork, so every PreFork child
  // and Multiplex worker accepts the tickets of the others.
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
  // A client that ends its stream with a bare TCP FIN, without close_notify, has finished, as a
  // plaintext one has: its last input, on_eof and every reply go through, then our close_notify.
  // Without this OpenSSL 3 makes it a fatal error (a decode_error alert), after which nothing more
  // can be written. The handler sees the end of the input either way; a protocol that must tell a
  // truncation from an end frames its messages (HTTP's Content-Length) as it would on plaintext.
  SSL_CTX_set_options(native, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_tlsext_servername_callback(native, check_server_name);
  set_alpn(config.list("tls.alpn"));
}

// Session tickets are sealed with our keys, not OpenSSL's per-context random ones: keys every
// process of the server shares (made before any fork), that survive a HUP (the secret crosses it)
// or come from files several servers share. Without files a key serves ticket_lifetime seconds
// (the period it derives from), then decrypts for one more lifetime, the longest a ticket it
// made stays valid.
void TlsContext::load_ticket_keys(const Config& config) {
  SSL_CTX* native = context_.native_handle();
  ticket_lifetime_ = config.seconds("tls.ticket_lifetime");
  SSL_CTX_set_timeout(native, static_cast<long>(ticket_lifetime_));
  for (const std::string& path : config.list("tls.ticket_key_files")) {
    std::ifstream file(path, std::ios::binary);
    if (!file)
      throw ConfigError(fmt::format("{}: cannot read the ticket key file {}: {}", config.describe("tls.ticket_key_files"), path,
                                    std::strerror(errno)));
    const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (bytes.size() != sizeof(TicketKey))
      throw ConfigError(fmt::format("{}: the ticket key file {} holds {} bytes, not {} (make one with `openssl rand 80 > "
                                    "FILE`)",
                                    config.describe("tls.ticket_key_files"), path, bytes.size(), sizeof(TicketKey)));
    TicketKey key;
    std::memcpy(&key, bytes.data(), sizeof key);
    ticket_files_.push_back(key);
  }
  if (RAND_bytes(ticket_secret_, sizeof ticket_secret_) != 1) {
    ERR_clear_error();
    throw Error("cannot make the TLS ticket secret: OpenSSL's random generator failed");
  }
  SSL_CTX_set_ex_data(native, context_index(), this);
  if (SSL_CTX_set_tlsext_ticket_key_evp_cb(native, ticket_key_callback) != 1) {
    ERR_clear_error();
    throw Error("cannot set the TLS ticket key callback");
  }
}

void TlsContext::keep_ticket_secret_across_restart() {
  if (!ticket_files_.empty()) return keep_across_restart(ticket_secret_name, -1);
  int fd = take_inherited_descriptor(ticket_secret_name);
  if (fd >= 0) {
    unsigned char inherited[sizeof ticket_secret_];
    if (::pread(fd, inherited, sizeof inherited, 0) == static_cast<ssize_t>(sizeof inherited)) {
      std::memcpy(ticket_secret_, inherited, sizeof inherited);
    } else {
      log::warning("the TLS ticket secret handed over by the previous image is unreadable: clients' tickets are "
                   "not resumed once");
      ::close(fd);
      fd = -1;
    }
  }
  if (fd < 0) {
    fd = ::memfd_create("netserver-tls-ticket-secret", MFD_CLOEXEC);
    if (fd < 0 || ::pwrite(fd, ticket_secret_, sizeof ticket_secret_, 0) != static_cast<ssize_t>(sizeof ticket_secret_)) {
      log::warning("cannot keep the TLS ticket secret for a restart: {}; a HUP will cost clients a full handshake",
                   std::strerror(errno));
      if (fd >= 0) ::close(fd);
      return;
    }
  }
  keep_across_restart(ticket_secret_name, fd);
}

TlsContext::TicketKey TlsContext::derived_key(long long period) const {
  TicketKey key;
  const auto derive = [&](const char* what, unsigned char* out, std::size_t size) {
    const std::string label = fmt::format("netserver ticket key {} {}", period, what);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned length = 0;
    HMAC(EVP_sha256(), ticket_secret_, sizeof ticket_secret_, reinterpret_cast<const unsigned char*>(label.data()),
         label.size(), digest, &length);
    std::memcpy(out, digest, size);
  };
  derive("name", key.name, sizeof key.name);
  derive("hmac", key.hmac, sizeof key.hmac);
  derive("aes", key.aes, sizeof key.aes);
  return key;
}

int TlsContext::ticket_key(unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int encrypt) {
  std::span<const TicketKey> keys = ticket_files_;  // the first encrypts
  if (keys.empty()) {
    const auto period = static_cast<long long>(std::floor(static_cast<double>(std::time(nullptr)) / ticket_lifetime_));
    if (period != derived_period_) {
      derived_ = {derived_key(period), derived_key(period - 1)};
      derived_period_ = period;
    }
    keys = derived_;
  }
  const TicketKey* key = &keys.front();
  if (!encrypt) {
    key = nullptr;
    for (const TicketKey& known : keys)
      if (std::memcmp(known.name, name, sizeof known.name) == 0) key = &known;
    if (!key) return 0;  // a key no longer known: a full handshake, and a new ticket
  }
  char digest_name[] = "SHA256";
  const OSSL_PARAM parameters[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key->hmac), sizeof key->hmac),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0), OSSL_PARAM_construct_end()};
  if (encrypt) {
    std::memcpy(name, key->name, sizeof key->name);
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1 ||
        EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key->aes, iv) != 1 || EVP_MAC_CTX_set_params(mac, parameters) != 1)
      return -1;
    return 1;
  }
  if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key->aes, iv) != 1 || EVP_MAC_CTX_set_params(mac, parameters) != 1)
    return -1;
  return key == &keys.front() ? 1 : 2;  // under an older key: accepted, and a new ticket under the current one
}

// OCSP stapling from a file the operator renews (no network access at run time). A file that is
// missing or not an OCSP response is a configuration error; a response that is stale, about
// another certificate, not "good" or not signed for the certificate's issuer is logged and not
// stapled (the server still serves: clients that check revocation ask the CA themselves).
void TlsContext::load_ocsp_response(const Config& config) {
  const std::string& path = config.string("tls.ocsp_file");
  if (path.empty()) return;
  check_readable(config, "tls.ocsp_file");
  ocsp_file_ = config.describe("tls.ocsp_file");
  std::ifstream file(path, std::ios::binary);
  const std::string der((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const auto* bytes = reinterpret_cast<const unsigned char*>(der.data());
  OCSP_RESPONSE* response = d2i_OCSP_RESPONSE(nullptr, &bytes, static_cast<long>(der.size()));
  if (!response) {
    ERR_clear_error();
    throw ConfigError(fmt::format("{}: not a DER OCSP response (openssl ocsp -respout writes one)", ocsp_file_));
  }
  OCSP_RESPONSE_free(response);
  if (const std::string problem = ocsp_problem(der); !problem.empty()) {
    ERR_clear_error();
    log::warning("{}: {}; it is not stapled", ocsp_file_, problem);
    return;
  }
  ocsp_response_ = der;
  SSL_CTX_set_tlsext_status_cb(context_.native_handle(), ocsp_callback);
  SSL_CTX_set_tlsext_status_arg(context_.native_handle(), this);
}

// Why the response cannot be stapled for our certificate ("" when it can); sets ocsp_next_update_.
std::string TlsContext::ocsp_problem(const std::string& der) {
  SSL_CTX* native = context_.native_handle();
  X509* certificate = SSL_CTX_get0_certificate(native);
  STACK_OF(X509)* chain = nullptr;
  SSL_CTX_get0_chain_certs(native, &chain);
  X509* issuer = nullptr;
  for (int i = 0; chain && i < sk_X509_num(chain); ++i)
    if (X509_check_issued(sk_X509_value(chain, i), certificate) == X509_V_OK) issuer = sk_X509_value(chain, i);
  if (!certificate || !issuer) return "the certificate's issuer is not in tls.cert_file, so the response cannot be checked";
  const auto* bytes = reinterpret_cast<const unsigned char*>(der.data());
  std::unique_ptr<OCSP_RESPONSE, decltype(&OCSP_RESPONSE_free)> response(
      d2i_OCSP_RESPONSE(nullptr, &bytes, static_cast<long>(der.size())), OCSP_RESPONSE_free);
  if (const int status = OCSP_response_status(response.get()); status != OCSP_RESPONSE_STATUS_SUCCESSFUL)
    return fmt::format("the responder answered \"{}\"", OCSP_response_status_str(status));
  std::unique_ptr<OCSP_BASICRESP, decltype(&OCSP_BASICRESP_free)> basic(OCSP_response_get1_basic(response.get()),
                                                                       OCSP_BASICRESP_free);
  if (!basic) return "it holds no basic response";
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), X509_STORE_free);
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)>
      signers(sk_X509_new_null(), [](STACK_OF(X509)* stack) { sk_X509_free(stack); });
  X509_STORE_add_cert(store.get(), issuer);
  sk_X509_push(signers.get(), issuer);
  if (OCSP_basic_verify(basic.get(), signers.get(), store.get(), 0) != 1)
    return "its signature does not verify against the certificate's issuer";
  std::unique_ptr<OCSP_CERTID, decltype(&OCSP_CERTID_free)> id(OCSP_cert_to_id(nullptr, certificate, issuer), OCSP_CERTID_free);
  int status = 0;
  int reason = 0;
  ASN1_GENERALIZEDTIME* revoked = nullptr;
  ASN1_GENERALIZEDTIME* this_update = nullptr;
  ASN1_GENERALIZEDTIME* next_update = nullptr;
  if (!id || OCSP_resp_find_status(basic.get(), id.get(), &status, &reason, &revoked, &this_update, &next_update) != 1)
    return "it is not about the certificate in tls.cert_file";
  if (status != V_OCSP_CERTSTATUS_GOOD) return fmt::format("it says the certificate is {}", OCSP_cert_status_str(status));
  if (OCSP_check_validity(this_update, next_update, 300, -1) != 1) {
    const auto date = [](const ASN1_TIME* time) { return print_to_string([&](BIO* bio) { ASN1_TIME_print(bio, time); }); };
    return fmt::format("it is stale or not yet valid (this update {}, next update {})", date(this_update),
                       next_update ? date(next_update) : std::string("none"));
  }
  ocsp_next_update_ = epoch_seconds(next_update);
  return "";
}

int TlsContext::staple_ocsp(SSL* ssl) {
  if (ocsp_response_.empty()) return SSL_TLSEXT_ERR_NOACK;
  if (ocsp_next_update_ != 0 && static_cast<long long>(std::time(nullptr)) > ocsp_next_update_) {
    log::warning("{}: the OCSP response went stale (its next update has passed); it is no longer stapled: renew the "
                 "file, then HUP", ocsp_file_);
    ocsp_response_.clear();
    return SSL_TLSEXT_ERR_NOACK;
  }
  auto* copy = static_cast<unsigned char*>(OPENSSL_malloc(ocsp_response_.size()));  // OpenSSL frees it
  if (!copy) return SSL_TLSEXT_ERR_NOACK;
  std::memcpy(copy, ocsp_response_.data(), ocsp_response_.size());
  if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, static_cast<long>(ocsp_response_.size())) != 1) {
    OPENSSL_free(copy);
    return SSL_TLSEXT_ERR_NOACK;
  }
  return SSL_TLSEXT_ERR_OK;
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
