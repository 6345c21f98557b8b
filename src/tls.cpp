#include "tls.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>

#include <boost/asio/ssl/error.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "netserver/errors.hpp"
#include "netserver/listener.hpp"
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

// The text of the last OpenSSL error, without its codes: "no start line", "bad decrypt".
std::string openssl_error() {
  const unsigned long code = ERR_peek_last_error();
  const char* reason = ERR_reason_error_string(code);
  std::string text = reason ? reason : fmt::format("OpenSSL error {:#x}", code);
  ERR_clear_error();
  return text;
}

// Opens the file the way OpenSSL will, to report a missing or unreadable one by its errno;
// `described` says where it was configured.
void check_readable(const std::string& path, const std::string& described) {
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (!file) throw ConfigError(fmt::format("{}: cannot read the file: {}", described, std::strerror(errno)));
  std::fclose(file);
}

void check_readable(const Config& config, std::string_view key) { check_readable(config.string(key), config.describe(key)); }

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Where one certificate is configured: tls.cert_file/key_file, or an entry of tls.certificates.
struct CertificateSource {
  std::string cert_file;
  std::string key_file;        // cert_file itself when the key is in it
  std::string cert_described;  // "tls.cert_file = a.pem (conf.yaml:4:14)"
  std::string key_described;
  std::vector<std::string> listeners;  // `listen` as written
  std::string where;                   // the entry's place, for errors about `listen`
};

// The certificates the configuration names, in order: the one-certificate form or the list
// (never both).
std::vector<CertificateSource> certificate_sources(const Config& config, const std::vector<std::string>& tls_listeners) {
  const std::vector<Record>& entries = config.records("tls.certificates");
  const bool single = !config.string("tls.cert_file").empty() || !config.string("tls.key_file").empty();
  if (single && !entries.empty()) {
    const std::string one = config.string("tls.cert_file").empty() ? "tls.key_file" : "tls.cert_file";
    throw ConfigError(fmt::format("{}: tls.certificates and {} are two forms of one setting: give each certificate as an "
                                  "entry of tls.certificates ({{cert_file: ..., key_file: ...}}) and drop {}",
                                  config.origin("tls.certificates").describe(), config.describe(one), one));
  }
  if (!single && entries.empty())
    throw ConfigError(fmt::format("listen: {} is a TLS listener, but tls.cert_file is not set, nor tls.certificates ({})",
                                  tls_listeners.empty() ? std::string("tls://") : tls_listeners.front(),
                                  config.describe("listen")));
  std::vector<CertificateSource> sources;
  if (single) {
    if (config.string("tls.cert_file").empty())
      throw ConfigError(fmt::format("{}: tls.key_file is set, but tls.cert_file is not", config.describe("tls.key_file")));
    const std::string key_key = config.string("tls.key_file").empty() ? "tls.cert_file" : "tls.key_file";
    sources.push_back({config.string("tls.cert_file"), config.string(key_key), config.describe("tls.cert_file"),
                       config.describe(key_key), {}, config.origin("tls.cert_file").describe()});
    return sources;
  }
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Record& entry = entries[i];
    const std::string where = entry.where.empty() ? config.origin("tls.certificates").describe() : entry.where;
    const auto describe = [&](const std::string& field, const std::string& path) {
      return fmt::format("tls.certificates[{}] {} = {} ({})", i, field, path, where);
    };
    CertificateSource source{entry.text("cert_file"), entry.text("key_file"), describe("cert_file", entry.text("cert_file")),
                             "", {}, where};
    if (source.key_file.empty()) source.key_file = source.cert_file;
    source.key_described = entry.text("key_file").empty() ? source.cert_described : describe("key_file", source.key_file);
    if (const auto found = entry.fields.find("listen"); found != entry.fields.end()) source.listeners = found->second;
    sources.push_back(std::move(source));
  }
  return sources;
}

std::string_view asn1_text(const ASN1_STRING* text) {
  return {reinterpret_cast<const char*>(ASN1_STRING_get0_data(text)), static_cast<std::size_t>(ASN1_STRING_length(text))};
}

// The DNS names a certificate is valid for: its subjectAltName DNS entries, or its subject's CN
// when it has none (RFC 6125, 6.4.4), lower-case and sorted.
std::vector<std::string> certificate_names(X509* leaf) {
  std::vector<std::string> names;
  auto* alternatives = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; alternatives && i < sk_GENERAL_NAME_num(alternatives); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(alternatives, i);
    if (name->type != GEN_DNS) continue;
    names.push_back(lower(asn1_text(name->d.dNSName)));
  }
  GENERAL_NAMES_free(alternatives);
  if (names.empty()) {
    const X509_NAME* subject = X509_get_subject_name(leaf);
    const int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (at >= 0) {
      names.push_back(lower(asn1_text(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)))));
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

// Reads the certificate chain and key of `source`; throws ConfigError naming the file that does not load.
TlsContext::Certificate load_certificate(const CertificateSource& source) {
  check_readable(source.cert_file, source.cert_described);
  check_readable(source.key_file, source.key_described);
  TlsContext::Certificate loaded;
  loaded.described = source.cert_described;
  std::unique_ptr<BIO, decltype(&BIO_free)> key_file(BIO_new_file(source.key_file.c_str(), "r"), BIO_free);
  // No passphrase: an encrypted key fails here instead of OpenSSL prompting on a terminal.
  const auto no_passphrase = [](char*, int, int, void*) { return 0; };
  EVP_PKEY* key = key_file ? PEM_read_bio_PrivateKey(key_file.get(), nullptr, no_passphrase, nullptr) : nullptr;
  if (!key) throw ConfigError(fmt::format("{}: not a PEM private key: {}", source.key_described, openssl_error()));
  loaded.key.reset(key, EVP_PKEY_free);
  std::unique_ptr<BIO, decltype(&BIO_free)> chain_file(BIO_new_file(source.cert_file.c_str(), "r"), BIO_free);
  X509* leaf = chain_file ? PEM_read_bio_X509_AUX(chain_file.get(), nullptr, nullptr, nullptr) : nullptr;
  if (!leaf) throw ConfigError(fmt::format("{}: not a PEM certificate chain: {}", source.cert_described, openssl_error()));
  loaded.leaf.reset(leaf, X509_free);
  loaded.chain.reset(sk_X509_new_null(), [](STACK_OF(X509)* chain) { sk_X509_pop_free(chain, X509_free); });
  while (X509* next = PEM_read_bio_X509(chain_file.get(), nullptr, nullptr, nullptr)) sk_X509_push(loaded.chain.get(), next);
  const unsigned long end = ERR_peek_last_error();
  if (ERR_GET_LIB(end) == ERR_LIB_PEM && ERR_GET_REASON(end) == PEM_R_NO_START_LINE) ERR_clear_error();  // the end of the file
  else if (end != 0) throw ConfigError(fmt::format("{}: not a PEM certificate chain: {}", source.cert_described, openssl_error()));
  if (X509_check_private_key(leaf, key) != 1) {
    ERR_clear_error();
    throw ConfigError(fmt::format("{}: the key does not match the certificate in {}", source.key_described, source.cert_described));
  }
  loaded.names = certificate_names(leaf);
  return loaded;
}

// The session id context of the site serving `names`: a ticket or cached session made under one
// site's certificate never resumes a handshake that asked for another (OpenSSL treats a session
// of another context as unknown: a full handshake with the right certificate). Derived from the
// names, not the certificate, so that a renewed certificate (a HUP) keeps its clients' sessions.
std::array<unsigned char, 32> site_id_context(const std::vector<std::string>& names) {
  std::string text = "netserver site";
  for (const std::string& name : names) text += " " + name;
  std::array<unsigned char, 32> id{};
  unsigned length = 0;
  EVP_Digest(text.data(), text.size(), id.data(), &length, EVP_sha256(), nullptr);
  return id;
}

std::string key_type(const EVP_PKEY* key) { return OBJ_nid2sn(EVP_PKEY_get_base_id(key)); }

// The host name a ClientHello asks for, lower-case ("" for none, or one that is not a host name:
// check_server_name logs that one).
std::string requested_name(SSL* ssl) {
  const unsigned char* data = nullptr;
  std::size_t length = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &data, &length) != 1 || length < 2) return "";
  if ((static_cast<std::size_t>(data[0]) << 8 | data[1]) + 2 != length) return "";
  for (std::size_t at = 2; at + 3 <= length;) {
    const unsigned type = data[at];
    const std::size_t size = static_cast<std::size_t>(data[at + 1]) << 8 | data[at + 2];
    at += 3;
    if (at + size > length) return "";
    if (type == TLSEXT_NAMETYPE_host_name) {
      const std::string name(reinterpret_cast<const char*>(data + at), size);
      return is_host_name(name) ? lower(name) : std::string();
    }
    at += size;
  }
  return "";
}

// Before OpenSSL looks for a session to resume (so that the site's id context applies to it), the
// certificates of the site the client asks for; the first site's are the context's own.
int choose_site(SSL* ssl, int* alert, void* argument) {
  const auto& served = *static_cast<const TlsContext::Served*>(argument);
  const TlsContext::Site& site = served.site_for(requested_name(ssl));
  if (&site != &served.sites.front()) {
    SSL_certs_clear(ssl);
    for (const TlsContext::Certificate* certificate : site.certificates)
      if (SSL_use_cert_and_key(ssl, certificate->leaf.get(), certificate->key.get(), certificate->chain.get(), 1) != 1) {
        ERR_clear_error();
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
      }
  }
  SSL_set_session_id_context(ssl, site.id_context.data(), static_cast<unsigned>(site.id_context.size()));
  return SSL_CLIENT_HELLO_SUCCESS;
}

// The listen address `text` in one spelling (ListenAddress::text), or "" when it is not one.
std::string normalised(std::string_view text) {
  ListenAddress address;
  std::string problem;
  return ListenAddress::parse(text, address, problem) ? address.text() : std::string();
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
  options.add(Option::records("tls.certificates", {"cert_file", "key_file", "listen"},
                              "certificates chosen by the name a client asks for (SNI), instead of cert_file/key_file: "
                              "[{cert_file: a.pem, key_file: a.key}, ...]; the first whose names (subjectAltName, the CN "
                              "without one) match exactly, else by a *. wildcard, else the first; same names with an "
                              "ECDSA and an RSA key: both served; listen: the TLS listeners an entry serves (default: all)"));
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

TlsContext::TlsContext(double handshake_timeout) : handshake_timeout_(handshake_timeout) {}

std::shared_ptr<TlsContext> TlsContext::load(const Config& config, const std::vector<std::string>& tls_listeners) {
  std::shared_ptr<TlsContext> context(new TlsContext(config.seconds("tls.handshake_timeout")));
  context->load_certificates(config, tls_listeners);
  context->load_ticket_keys(config);
  context->serve(config, tls_listeners);
  context->load_ocsp_response(config);
  context->warn_if_expired();
  return context;
}

void TlsContext::load_certificates(const Config& config, const std::vector<std::string>& tls_listeners) {
  for (const CertificateSource& source : certificate_sources(config, tls_listeners)) {
    Certificate certificate = load_certificate(source);
    for (const std::string& text : source.listeners) {
      const std::string listener = normalised(text);
      if (std::find(tls_listeners.begin(), tls_listeners.end(), listener) == tls_listeners.end())
        throw ConfigError(fmt::format("{}: tls.certificates: listen: \"{}\" is not one of the TLS listeners ({}); write it "
                                      "as in `listen`",
                                      source.where, text, fmt::join(tls_listeners, ", ")));
      certificate.listeners.push_back(listener);
    }
    certificates_.push_back(std::move(certificate));
  }
}

// A context per distinct list of certificates the TLS listeners serve (usually one), its sites
// grouping the certificates that carry the same names.
void TlsContext::serve(const Config& config, const std::vector<std::string>& tls_listeners) {
  for (const std::string& listener : tls_listeners) {
    std::vector<const Certificate*> list;
    for (const Certificate& certificate : certificates_)
      if (certificate.listeners.empty() ||
          std::find(certificate.listeners.begin(), certificate.listeners.end(), listener) != certificate.listeners.end())
        list.push_back(&certificate);
    if (list.empty())
      throw ConfigError(fmt::format("listen: {} is a TLS listener, but every entry of tls.certificates names other listeners "
                                    "(listen) ({})",
                                    listener, config.describe("tls.certificates")));
    const auto same = std::find_if(served_.begin(), served_.end(), [&](const auto& served) { return served->list == list; });
    if (same != served_.end()) {
      served_by_listener_.emplace_back(listener, static_cast<std::size_t>(same - served_.begin()));
      continue;
    }
    auto served = std::make_unique<Served>();
    served->list = list;
    for (const Certificate* certificate : list) {
      auto site = std::find_if(served->sites.begin(), served->sites.end(),
                               [&](const Site& known) { return known.names == certificate->names; });
      if (site == served->sites.end()) {
        site = served->sites.insert(served->sites.end(), Site{certificate->names, {}, site_id_context(certificate->names)});
      }
      for (const Certificate* other : site->certificates)
        if (EVP_PKEY_get_base_id(other->key.get()) == EVP_PKEY_get_base_id(certificate->key.get()))
          throw ConfigError(fmt::format("{}: this certificate has the names and the key type ({}) of {}: only one of them "
                                        "could ever be sent (a pair for the same names has one ECDSA and one RSA key)",
                                        certificate->described, key_type(certificate->key.get()), other->described));
      site->certificates.push_back(certificate);
    }
    configure(config, *served);
    served_by_listener_.emplace_back(listener, served_.size());
    served_.push_back(std::move(served));
  }
}

// One context: the first site's certificates, the client CA list and every setting of the block.
void TlsContext::configure(const Config& config, Served& served) {
  SSL_CTX* native = served.context.native_handle();
  for (const Certificate* certificate : served.sites.front().certificates)
    if (SSL_CTX_use_cert_and_key(native, certificate->leaf.get(), certificate->key.get(), certificate->chain.get(), 1) != 1)
      throw ConfigError(fmt::format("{}: OpenSSL refuses the certificate: {}", certificate->described, openssl_error()));
  load_client_ca(config, native);
  apply_settings(config, native);
  const Site& first = served.sites.front();
  SSL_CTX_set_session_id_context(native, first.id_context.data(), static_cast<unsigned>(first.id_context.size()));
  if (served.sites.size() > 1) SSL_CTX_set_client_hello_cb(native, choose_site, &served);
  SSL_CTX_set_timeout(native, static_cast<long>(ticket_lifetime_));
  SSL_CTX_set_ex_data(native, context_index(), this);
  if (SSL_CTX_set_tlsext_ticket_key_evp_cb(native, ticket_key_callback) != 1) {
    ERR_clear_error();
    throw Error("cannot set the TLS ticket key callback");
  }
}

void TlsContext::load_client_ca(const Config& config, SSL_CTX* native) {
  const std::string& verify = config.string("tls.verify_client");
  const std::string& ca_file = config.string("tls.ca_file");
  if (verify != "none" && ca_file.empty())
    throw ConfigError(fmt::format("{} needs tls.ca_file: the CA certificates client certificates must chain to",
                                  config.describe("tls.verify_client")));
  if (ca_file.empty()) return;
  check_readable(config, "tls.ca_file");
  if (SSL_CTX_load_verify_locations(native, ca_file.c_str(), nullptr) != 1)
    throw ConfigError(fmt::format("{}: not PEM CA certificates: {}", config.describe("tls.ca_file"), openssl_error()));
  if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca_file.c_str()))
    SSL_CTX_set_client_CA_list(native, names);  // tells clients which certificate to send
}

const TlsContext::Site& TlsContext::Served::site_for(std::string_view name) const {
  if (name.empty()) return sites.front();
  for (const bool wildcard : {false, true})
    for (const Site& site : sites)
      if (site.serves(name, wildcard)) return site;
  return sites.front();
}

bool TlsContext::Site::serves(std::string_view name, bool wildcard) const {
  std::string wanted(name);
  if (wildcard) {
    const std::size_t dot = name.find('.');
    if (dot == std::string_view::npos) return false;
    wanted = "*" + std::string(name.substr(dot));
  }
  return std::binary_search(names.begin(), names.end(), wanted);
}

void TlsContext::apply_settings(const Config& config, SSL_CTX* native) {
  SSL_CTX_set_options(native, SSL_OP_ALL | SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3 | SSL_OP_SINGLE_DH_USE);
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
  if (verify == "optional") SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
  else if (verify == "required") SSL_CTX_set_verify(native, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  // Resumption: the server-side cache (TLS 1.2 ids) needs a context id once clients are verified
  // (configure sets the site's); tickets use the keys of load_ticket_keys, made before any fork,
  // so every PreFork child and Multiplex worker accepts the tickets of the others.
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
  set_alpn(native, config.list("tls.alpn"));
}

// Session tickets are sealed with our keys, not OpenSSL's per-context random ones: keys every
// process of the server shares (made before any fork), that survive a HUP (the secret crosses it)
// or come from files several servers share. Without files a key serves ticket_lifetime seconds
// (the period it derives from), then decrypts for one more lifetime, the longest a ticket it
// made stays valid.
void TlsContext::load_ticket_keys(const Config& config) {
  ticket_lifetime_ = config.seconds("tls.ticket_lifetime");
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
  for (const auto& served : served_) {
    SSL_CTX_set_tlsext_status_cb(served->context.native_handle(), ocsp_callback);
    SSL_CTX_set_tlsext_status_arg(served->context.native_handle(), this);
  }
}

// Why the response cannot be stapled for our (first) certificate ("" when it can); sets ocsp_next_update_.
std::string TlsContext::ocsp_problem(const std::string& der) {
  X509* certificate = certificates_.front().leaf.get();
  STACK_OF(X509)* chain = certificates_.front().chain.get();
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
  if (ocsp_response_.empty() || SSL_get_certificate(ssl) != certificates_.front().leaf.get()) return SSL_TLSEXT_ERR_NOACK;
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

void TlsContext::set_alpn(SSL_CTX* native, const std::vector<std::string>& protocols) {
  if (protocols.empty()) return;
  alpn_wire_.clear();
  for (const std::string& protocol : protocols) alpn_wire_ += static_cast<char>(protocol.size()) + protocol;
  SSL_CTX_set_alpn_select_cb(native, select_alpn, &alpn_wire_);
}

void TlsContext::warn_if_expired() {
  const auto date = [](const ASN1_TIME* time) { return print_to_string([&](BIO* bio) { ASN1_TIME_print(bio, time); }); };
  for (const Certificate& certificate : certificates_) {
    X509* leaf = certificate.leaf.get();
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
      log::warning("{}: the certificate expired on {}; clients that check it will refuse to connect", certificate.described,
                   date(X509_get0_notAfter(leaf)));
    else if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0)
      log::warning("{}: the certificate is not valid before {}", certificate.described, date(X509_get0_notBefore(leaf)));
  }
}

std::shared_ptr<Transport> TlsContext::make_transport(Transport::Socket socket, std::size_t listener) {
  return std::make_shared<TlsTransport>(std::move(socket), served_.at(listener)->context.native_handle(), handshake_timeout_);
}

std::size_t TlsContext::served_for(const std::string& listen_text) const {
  const std::string wanted = normalised(listen_text);
  for (const auto& [listener, index] : served_by_listener_)
    if (listener == wanted) return index;
  return 0;  // a listener the configuration does not name (systemd's): the first list
}

}  // namespace netserver
