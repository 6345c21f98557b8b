// TLS listeners against real clients: Python's ssl module (tests/tls/tls_client.py), openssl
// s_client, and plain sockets where a client misbehaves. Certificates are made once per run by
// tests/tls/make-certs.

#include <catch2/catch.hpp>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <boost/process.hpp>

#include "harness.hpp"
#include "metrics_checks.hpp"

using namespace harness;
using Catch::Matchers::Contains;
namespace bp = boost::process;
namespace fs = std::filesystem;

namespace {

const std::string source_dir = NETSERVER_SOURCE_DIR;

// The certificates of this test run (made once: ECDSA keys take milliseconds).
const fs::path& certs() {
  static TempDir dir;
  static const bool made = [] {
    const Outcome outcome = run("/bin/bash", {source_dir + "/tests/tls/make-certs", dir.path().string()}, 30s);
    if (outcome.status != 0) throw std::runtime_error("make-certs failed:\n" + outcome.output);
    return true;
  }();
  (void)made;
  return dir.path();
}

std::string cert(const std::string& name) { return (certs() / name).string(); }

// The tls block for the test server certificate, plus `extra` lines inside the block.
std::string tls_block(const std::string& extra = "") {
  return "tls:\n  cert_file: " + cert("server.pem") + "\n  key_file: " + cert("server.key") + "\n" + extra;
}

std::string config(const std::string& personality, const std::string& extra_tls = "") {
  return "personality: " + personality + "\nlog_level: 3\nlisten:\n  - tls://127.0.0.1:0\n  - 127.0.0.1:0\n" +
         "prefork:\n  min_servers: 2\n  max_servers: 4\n  min_spare_servers: 1\n  max_spare_servers: 3\n" + tls_block(extra_tls);
}

// Runs the Python client; its JSON answer (or what went wrong) is the output.
std::string python_client(int port, std::vector<std::string> args, Seconds bound = 20s) {
  std::vector<std::string> all{source_dir + "/tests/tls/tls_client.py", "--ca", cert("ca.pem"), "--port",
                               std::to_string(port)};
  all.insert(all.end(), args.begin(), args.end());
  return run("/usr/bin/python3", all, bound).output;
}

bool has(const std::string& json, const std::string& key, const std::string& value) {
  return json.find("\"" + key + "\": \"" + value + "\"") != std::string::npos;
}

int tls_port(const ServerProcess& server) { return server.port_of("tls://127.0.0.1"); }

// openssl s_client kept open: lines in through its stdin, lines out of its stdout.
class SClient {
 public:
  SClient(int port, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"s_client", "-connect", "127.0.0.1:" + std::to_string(port), "-quiet",
                                  "-verify_return_error", "-CAfile", cert("ca.pem")};
    args.insert(args.end(), extra.begin(), extra.end());
    child_ = bp::child(bp::search_path("openssl"), bp::args = args, bp::std_in < in_, bp::std_out > out_,
                       bp::std_err > bp::null);
  }
  ~SClient() {
    in_.pipe().close();
    if (child_.running() && !child_.wait_for(std::chrono::seconds(2))) child_.terminate();
  }
  void send_line(const std::string& line) { in_ << line << "\r\n" << std::flush; }
  std::optional<std::string> read_line(Seconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    for (;;) {
      if (const std::size_t end = buffer_.find("\r\n"); end != std::string::npos) {
        std::string line = buffer_.substr(0, end);
        buffer_.erase(0, end + 2);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd ready{out_.pipe().native_source(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&ready, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      char chunk[4096];
      const ssize_t n = ::read(ready.fd, chunk, sizeof chunk);
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  bp::opstream in_;
  bp::ipstream out_;
  bp::child child_;
  std::string buffer_;
};

// One openssl s_client handshake with `args` added ("-tls1_2 -cipher X", "-sess_out FILE"): it says
// "quit" and reads until the echo server ends the session, so that it has read the TLS 1.3 tickets
// (sent before the banner) however slow the machine is. Its whole output.
std::string s_client_once(int port, const std::string& args) {
  return run("/bin/sh", {"-c", "printf 'quit\\r\\n' | openssl s_client -ign_eof -connect 127.0.0.1:" + std::to_string(port) +
                                   " -CAfile " + cert("ca.pem") + " " + args + " 2>&1"}, 20s).output;
}

// A file of 80 random bytes: a ticket key in nginx's format.
std::string ticket_key_file(const TempDir& dir, const std::string& name) {
  const std::string path = (dir.path() / name).string();
  const Outcome made = run("/usr/bin/openssl", {"rand", "-out", path, "80"});
  if (made.status != 0) throw std::runtime_error("openssl rand failed: " + made.output);
  return path;
}

// A response of the test CA's OCSP responder about `certificate` (serial `serial` listed as valid
// in its index), made by `openssl ocsp`: DER, good for a day. Its path.
std::string ocsp_response(const TempDir& dir, const std::string& name, const std::string& certificate, const std::string& serial) {
  const std::string at = (dir.path() / name).string();
  const std::string script = "set -e; printf 'V\\t351231235959Z\\t\\t" + serial + "\\tunknown\\t/O=netserver tests/CN=localhost\\n' > " +
                             at + ".index; openssl ocsp -issuer " + cert("ca.pem") + " -cert " + certificate +
                             " -no_nonce -reqout " + at + ".req; openssl ocsp -index " + at + ".index -CA " + cert("ca.pem") +
                             " -rsigner " + cert("ca.pem") + " -rkey " + cert("ca.key") + " -reqin " + at + ".req -respout " +
                             at + ".der -ndays 1";
  const Outcome made = run("/bin/bash", {"-c", script + " 2>&1"}, 20s);
  if (made.status != 0) throw std::runtime_error("openssl ocsp failed:\n" + made.output);
  return at + ".der";
}

// A good response about the server certificate whose next update was yesterday, signed by the
// test CA (Python's cryptography: openssl ocsp cannot date a response in the past). Its path.
std::string stale_ocsp_response(const TempDir& dir) {
  const std::string code = R"(import sys, datetime
from cryptography import x509
from cryptography.x509 import ocsp
from cryptography.hazmat.primitives import hashes, serialization
cert = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
issuer = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read())
key = serialization.load_pem_private_key(open(sys.argv[3], "rb").read(), None)
now = datetime.datetime.now(datetime.timezone.utc)
builder = ocsp.OCSPResponseBuilder().add_response(
    cert=cert, issuer=issuer, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
    this_update=now - datetime.timedelta(days=2), next_update=now - datetime.timedelta(days=1),
    revocation_time=None, revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
open(sys.argv[4], "wb").write(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
)";
  const std::string at = (dir.path() / "stale.der").string();
  const Outcome made = run("/usr/bin/python3", {"-c", code, cert("server.pem"), cert("ca.pem"), cert("ca.key"), at}, 20s);
  if (made.status != 0) throw std::runtime_error("making the stale OCSP response failed:\n" + made.output);
  return at;
}

std::string file_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("handshake and echo over TLS 1.3 and 1.2 under each personality", "[tls]") {
  for (const std::string personality : {"single", "multiplex", "prefork", "fork", "multiplex workers"}) {
    const bool workers = personality == "multiplex workers";  // N event loops in N processes
    ServerProcess server(binary("echo_server"), workers ? config("multiplex") + "multiplex:\n  workers: 2\n" : config(personality));
    for (const std::string version : {"1.3", "1.2"}) {
      INFO(personality << " TLS " << version);
      const std::string json = python_client(tls_port(server), {"--tls", version, "hello over tls", "second line"});
      CHECK(has(json, "version", "TLSv" + version));
      CHECK_THAT(json, Contains("personality " + personality.substr(0, personality.find(' '))) &&
                           Contains(", tls TLSv" + version + ")"));
      CHECK_THAT(json, Contains("\"hello over tls\", \"second line\"]"));
    }
    Client plain(server.port());  // the plaintext listener next to it
    CHECK_THAT(plain.read_line().value_or(""), !Contains("tls"));
    plain.send("plain\r\n");
    CHECK(plain.read_line() == "plain");
    CHECK(eventually([&] { return server.count_in_log("bytes out; TLSv1.3") == 1 && server.count_in_log("bytes out; TLSv1.2") == 1; }));
  }
}

TEST_CASE("a TLS listener on a unix socket", "[tls]") {
  TempDir dir;
  const std::string path = (dir.path() / "tls.sock").string();
  ServerProcess server(binary("echo_server"), "log_level: 3\nlisten:\n  - tls://unix:" + path + "\n" + tls_block());
  CHECK(server.wait_for_log("listening on tls://unix:" + path));
  const std::string json = run("/usr/bin/python3", {source_dir + "/tests/tls/tls_client.py", "--ca", cert("ca.pem"),
                                                    "--unix", path, "over a unix socket"}, 20s).output;
  CHECK(has(json, "version", "TLSv1.3"));
  CHECK_THAT(json, Contains("\"over a unix socket\"]"));
}

TEST_CASE("min_protocol refuses older clients", "[tls]") {
  ServerProcess server(binary("echo_server"), config("multiplex"));
  CHECK_THAT(python_client(tls_port(server), {"--tls", "1.1"}), Contains("\"error\""));
  CHECK(has(python_client(tls_port(server), {"--tls", "1.2"}), "version", "TLSv1.2"));
  ServerProcess strict(binary("echo_server"), config("multiplex", "  min_protocol: TLSv1.3\n"));
  CHECK_THAT(python_client(tls_port(strict), {"--tls", "1.2"}), Contains("\"error\""));
  CHECK(has(python_client(tls_port(strict), {"--tls", "1.3"}), "version", "TLSv1.3"));
}

TEST_CASE("a stalled handshake is cut at handshake_timeout and costs nobody else", "[tls]") {
  ServerProcess server(binary("echo_server"), config("multiplex", "  handshake_timeout: 3\n"));
  std::vector<Client> stalled;
  for (int i = 0; i < 200; ++i) {
    stalled.emplace_back(tls_port(server));
    if (i % 2) stalled.back().send(std::string("\x16\x03\x01\x02\x00\x01", 6));  // a ClientHello that never ends
  }
  CHECK_THAT(python_client(tls_port(server), {"--tls", "1.3", "still served"}), Contains("\"still served\"]"));
  // Served while the 200 still hang (none cut yet), rather than a timed check that load could break.
  CHECK(server.count_in_log("TLS handshake failed: Connection timed out") == 0);
  for (Client& client : stalled) CHECK(client.closed_by_peer(5s));
  CHECK(eventually([&] { return server.count_in_log("TLS handshake failed: Connection timed out") == 200; }));
}

TEST_CASE("a plaintext client on the TLS port is closed cleanly", "[tls]") {
  ServerProcess server(binary("echo_server"), config("multiplex"));
  Client confused(tls_port(server));
  confused.send("hello\r\n");
  CHECK(confused.closed_by_peer(5s));
  CHECK(server.wait_for_log("TLS handshake failed"));
  CHECK_THAT(python_client(tls_port(server), {"after"}), Contains("\"after\"]"));
}

TEST_CASE("mTLS refuses a missing or foreign certificate and shows the right one's subject", "[tls]") {
  ServerProcess server(binary("probe_server"), config("multiplex", "  ca_file: " + cert("ca.pem") +
                                                                       "\n  verify_client: required\n"));
  CHECK_THAT(python_client(tls_port(server), {"tls"}), Contains("\"error\""));
  CHECK_THAT(python_client(tls_port(server), {"--cert", cert("stranger.pem"), "--key", cert("stranger.key"), "tls"}),
             Contains("\"error\""));
  const std::string json = python_client(tls_port(server), {"--cert", cert("client.pem"), "--key", cert("client.key"), "tls"});
  CHECK_THAT(json, Contains("subject=CN=alice,O=netserver tests verified=yes"));

  ServerProcess optional(binary("probe_server"), config("multiplex", "  ca_file: " + cert("ca.pem") +
                                                                         "\n  verify_client: optional\n"));
  CHECK_THAT(python_client(tls_port(optional), {"tls"}), Contains("subject= verified=no"));
}

TEST_CASE("ALPN selects the server's first protocol the client offers", "[tls]") {
  ServerProcess server(binary("probe_server"), config("multiplex", "  alpn: [h2, http/1.1]\n"));
  const std::string both = python_client(tls_port(server), {"--alpn", "http/1.1,h2", "tls"});
  CHECK(has(both, "alpn", "h2"));
  CHECK_THAT(both, Contains("alpn=h2 "));
  CHECK(has(python_client(tls_port(server), {"--alpn", "http/1.1", "tls"}), "alpn", "http/1.1"));
  CHECK_THAT(python_client(tls_port(server), {"--alpn", "spdy/1", "tls"}), Contains("\"error\""));
  CHECK_THAT(python_client(tls_port(server), {"tls"}), Contains("\"alpn\": null"));
}

TEST_CASE("sessions resume with tickets under multiplex and prefork", "[tls]") {
  for (const std::string personality : {"multiplex", "prefork"}) {
    INFO(personality);
    ServerProcess server(binary("echo_server"), config(personality));
    TempDir dir;
    const std::string session = (dir.path() / "session.pem").string();
    CHECK_THAT(s_client_once(tls_port(server), "-sess_out " + session), Contains("New, TLSv1.3"));
    CHECK_THAT(s_client_once(tls_port(server), "-sess_in " + session), Contains("Reused, TLSv1.3"));
    CHECK_THAT(python_client(tls_port(server), {"--resume", "--tls", "1.2"}), Contains("\"reused\": true"));
  }
}

// A TLS 1.3 client uses each ticket once (RFC 8446, C.4), taking the next one from the resumed
// connection: a resumption must bring a new ticket, or every second connection is a full handshake.
TEST_CASE("a resumed TLS 1.3 session brings a new ticket so a chain of resumptions never falls back", "[tls]") {
  for (const std::string personality : {"multiplex", "prefork"}) {
    INFO(personality);
    ServerProcess server(binary("echo_server"), config(personality));
    TempDir dir;
    const auto session = [&](int i) { return (dir.path() / ("session" + std::to_string(i) + ".pem")).string(); };
    CHECK_THAT(s_client_once(tls_port(server), "-sess_out " + session(0)), Contains("New, TLSv1.3"));
    for (int i = 1; i <= 4; ++i) {
      INFO("connection " << i << ", resuming with the ticket of connection " << i - 1);
      CHECK_THAT(s_client_once(tls_port(server), "-sess_in " + session(i - 1) + " -sess_out " + session(i)),
                 Contains("Reused, TLSv1.3"));
      REQUIRE(std::filesystem::exists(session(i)));  // the resumed connection brought a ticket
    }
  }
}

// The handler sees the SNI name on a resumed session too (TLS 1.2 keeps it in the session, 1.3
// sends it again), and never a name that is not a host name: that one is logged, escaped.
TEST_CASE("SNI: the name survives resumption and only host names reach the handler", "[tls][hardening]") {
  ServerProcess server(binary("probe_server"), config("multiplex"));
  for (const std::string version : {"1.2", "1.3"}) {
    INFO("TLS " << version);
    const std::string json = python_client(tls_port(server), {"--resume", "--tls", version, "tls"});
    CHECK_THAT(json, Contains("\"reused\": true"));
    CHECK_THAT(json, Contains(" sni=localhost ") && Contains("resumed=yes"));
  }
  SClient forged(tls_port(server), {"-servername", "evil\x1b[31m\r\nname"});
  REQUIRE(forged.read_line());
  forged.send_line("tls");
  CHECK_THAT(forged.read_line().value_or(""), Contains(" sni= alpn="));
  CHECK(server.wait_for_log("the server name \"evil\\x1b[31m\\x0d\\x0aname\", which is not a host name"));
  SClient trailing_dot(tls_port(server), {"-servername", "localhost."});
  REQUIRE(trailing_dot.read_line());
  trailing_dot.send_line("tls");
  CHECK_THAT(trailing_dot.read_line().value_or(""), Contains(" sni= alpn="));
  SClient good(tls_port(server), {"-servername", "a-b_c.example.com"});
  REQUIRE(good.read_line());
  good.send_line("tls");
  CHECK_THAT(good.read_line().value_or(""), Contains(" sni=a-b_c.example.com "));
}

namespace {

// The tls.certificates list: `- {cert_file: F, key_file: K}` entries for the test certificates
// `names` (NAME.pem, NAME.key), then `extra` lines.
std::string certificates_block(const std::vector<std::string>& names, const std::string& extra = "") {
  std::string block = "tls:\n  certificates:\n";
  for (const std::string& name : names)
    block += "    - cert_file: " + cert(name + ".pem") + "\n      key_file: " + cert(name + ".key") + "\n";
  return block + extra;
}

// The CN of the certificate openssl s_client was shown ("" when none).
std::string served_cn(const std::string& output) {
  static const std::regex subject(R"(subject=.*CN = ([^,\n]+))");
  std::smatch found;
  return std::regex_search(output, found, subject) ? found[1].str() : std::string();
}

std::string s_client_named(int port, const std::string& name, const std::string& args = "") {
  return s_client_once(port, "-servername " + name + " " + args);
}

}  // namespace

// Issue 22: the certificate whose names match the name the client asks for (SNI): an exact name
// first, then a *. wildcard for one label, else the first of the list (also without SNI); a
// certificate without a subjectAltName is known by its CN. An ECDSA and an RSA certificate for the
// same names are both served, OpenSSL choosing by the client's signature algorithms.
TEST_CASE("tls.certificates serves the certificate the client names", "[tls][sni]") {
  ServerProcess server(binary("echo_server"), "log_level: 3\nlisten: [tls://127.0.0.1:0]\n" +
                                                  certificates_block({"a", "b", "wild", "cn-only", "a-rsa"}));
  const int port = tls_port(server);
  const std::vector<std::pair<std::string, std::string>> cases{
      {"a.test", "a.test"},         {"b.test", "b.test"},         {"x.wild.test", "*.wild.test"}, {"B.TEST", "b.test"},
      {"unknown.test", "a.test"},   {"x.y.wild.test", "a.test"},  {"wild.test", "a.test"},        {"cn.test", "cn.test"},
  };
  for (const auto& [asked, served] : cases) {
    INFO("asked for " << asked);
    const std::string output = s_client_named(port, asked);
    CHECK(served_cn(output) == served);
    CHECK_THAT(output, Contains("Verify return code: 0 (ok)"));
  }
  CHECK(served_cn(s_client_once(port, "-noservername")) == "a.test");
  // The pair for a.test: a client that takes only RSA signatures gets the RSA twin, others ECDSA.
  CHECK_THAT(s_client_named(port, "a.test", "-sigalgs rsa_pss_rsae_sha256"), Contains("Server public key is 2048 bit"));
  CHECK_THAT(s_client_named(port, "a.test", "-sigalgs ecdsa_secp256r1_sha256"), Contains("Server public key is 256 bit"));
  CHECK_THAT(s_client_named(port, "a.test", "-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256"),
             Contains("Cipher is ECDHE-RSA-AES128-GCM-SHA256") && Contains("Server public key is 2048 bit"));
  // Python's ssl verifies the name against the certificate it gets.
  CHECK(has(python_client(port, {"--sni", "b.test"}), "serial", "B001"));
  CHECK(has(python_client(port, {"--sni", "x.wild.test"}), "serial", "C001"));
}

// A session (ticket or cached id) made under one certificate resumes under that certificate only:
// each set of names has its own session id context, set before OpenSSL looks for the session.
TEST_CASE("a session made under one certificate never resumes a handshake for another name", "[tls][sni]") {
  TempDir dir;
  ServerProcess server(binary("echo_server"), "log_level: 3\nlisten: [tls://127.0.0.1:0]\n" + certificates_block({"a", "b"}));
  const int port = tls_port(server);
  for (const std::string version : {"-tls1_3", "-tls1_2"}) {
    INFO(version);
    const std::string session = (dir.path() / ("a" + version + ".session")).string();
    CHECK(served_cn(s_client_named(port, "a.test", version + " -sess_out " + session)) == "a.test");
    CHECK_THAT(s_client_named(port, "a.test", version + " -sess_in " + session), Contains("Reused, TLSv1."));
    const std::string other = s_client_named(port, "b.test", version + " -sess_in " + session);
    CHECK_THAT(other, Contains("New, TLSv1.") && !Contains("Reused"));
    CHECK(served_cn(other) == "b.test");
    const std::string unnamed = s_client_once(port, version + " -noservername -sess_in " + session);
    CHECK_THAT(unnamed, Contains("Reused, TLSv1."));  // no name: the first certificate's, a.test's, as issued
  }
}

// Each listener may have its own list: an entry with `listen` serves only the listeners it names.
TEST_CASE("tls.certificates entries serve the listeners they name", "[tls][sni]") {
  TempDir dir;
  const std::string path = (dir.path() / "tls.sock").string();
  ServerProcess server(binary("echo_server"),
                       "log_level: 3\nlisten:\n  - tls://127.0.0.1:0\n  - tls://unix:" + path + "\ntls:\n  certificates:\n" +
                           "    - {cert_file: " + cert("a.pem") + ", key_file: " + cert("a.key") + ", listen: tls://127.0.0.1:0}\n" +
                           "    - {cert_file: " + cert("b.pem") + ", key_file: " + cert("b.key") + "}\n");
  CHECK(server.wait_for_log("listening on tls://unix:" + path));
  const int port = tls_port(server);
  CHECK(served_cn(s_client_named(port, "b.test")) == "b.test");
  CHECK(served_cn(s_client_named(port, "other.test")) == "a.test");
  const auto on_unix = [&](const std::string& name) {
    return run("/bin/sh", {"-c", "printf 'quit\\r\\n' | openssl s_client -ign_eof -unix " + path + " -CAfile " + cert("ca.pem") +
                                     " -servername " + name + " 2>&1"}, 20s).output;
  };
  CHECK(served_cn(on_unix("a.test")) == "b.test");  // the unix listener's list holds b.test's only
  CHECK(served_cn(on_unix("b.test")) == "b.test");
}

// A HUP reloads every certificate of the list; one that does not load keeps the running server.
TEST_CASE("HUP reloads tls.certificates and keeps serving when one does not load", "[tls][sni]") {
  TempDir dir;
  fs::copy_file(cert("b.pem"), dir.path() / "b.pem");
  fs::copy_file(cert("b.key"), dir.path() / "b.key");
  const std::string yaml = "personality: multiplex\nlog_level: 3\nlisten: [tls://127.0.0.1:0]\ntls:\n  certificates:\n"
                           "    - {cert_file: " + cert("a.pem") + ", key_file: " + cert("a.key") + "}\n"
                           "    - {cert_file: " + (dir.path() / "b.pem").string() + ", key_file: " + (dir.path() / "b.key").string() + "}\n";
  ServerProcess server(binary("echo_server"), yaml);
  const int port = tls_port(server);
  CHECK(has(python_client(port, {"--sni", "b.test"}), "serial", "B001"));

  fs::copy_file(cert("wrong.key"), dir.path() / "b.key", fs::copy_options::overwrite_existing);
  server.signal(SIGHUP);
  CHECK(server.wait_for_log("the running server carries on"));
  CHECK_THAT(server.log(), Contains("tls.certificates[1] key_file = " + (dir.path() / "b.key").string()) &&
                               Contains("does not match"));
  CHECK(has(python_client(port, {"--sni", "b.test"}), "serial", "B001"));
  CHECK(has(python_client(port, {"--sni", "a.test"}), "serial", "A001"));

  fs::copy_file(cert("b2.pem"), dir.path() / "b.pem", fs::copy_options::overwrite_existing);
  fs::copy_file(cert("b2.key"), dir.path() / "b.key", fs::copy_options::overwrite_existing);
  server.signal(SIGHUP);
  CHECK(server.wait_for_log("(restarted)"));
  CHECK(eventually([&] { return has(python_client(port, {"--sni", "b.test"}), "serial", "B002"); }));
  CHECK(served_cn(s_client_named(port, "b.test")) == "b.test");
  CHECK(has(python_client(port, {"--sni", "a.test"}), "serial", "A001"));
  server.expect_errors();  // the refused reload is logged as an error
}

// Each mistake stops the start, and --check-config, before anything is bound, naming where.
TEST_CASE("tls.certificates configuration errors name the file and line", "[tls][sni]") {
  TempDir dir;
  const auto check = [&](const std::string& yaml) {
    const std::string file = dir.write("bad.yaml", "listen: [tls://127.0.0.1:0, 127.0.0.1:0]\n" + yaml).string();
    const Outcome checked = run(binary("echo_server"), {"--config", file, "--check-config"});
    const Outcome started = run(binary("echo_server"), {"--config", file});
    CHECK(checked.status == 2);
    CHECK(started.status == 2);
    CHECK_THAT(started.output, !Contains("listening on"));
    return checked.output;
  };
  const std::string both = check(certificates_block({"a"}) + "  cert_file: " + cert("b.pem") + "\n");
  CHECK_THAT(both, Contains("bad.yaml:4:5") && Contains("tls.certificates and tls.cert_file") &&
                       Contains("bad.yaml:6:14"));
  CHECK_THAT(check("tls:\n  certificates:\n    - cret_file: x.pem\n"),
             Contains("bad.yaml:4:7: tls.certificates: unknown field 'cret_file'"));
  CHECK_THAT(check("tls:\n  certificates:\n    - key_file: " + cert("a.key") + "\n"),
             Contains("bad.yaml:4:7: tls.certificates: an entry without cert_file"));
  CHECK_THAT(check("tls:\n  certificates: " + cert("a.pem") + "\n"), Contains("bad.yaml:3:17: tls.certificates: expected"));
  CHECK_THAT(check(certificates_block({"a", "b", "b2"})),
             Contains("tls.certificates[2] cert_file = " + cert("b2.pem") + " (" + (dir.path() / "bad.yaml:8:7)").string()) && Contains("key type (id-ecPublicKey)") &&
                 Contains("tls.certificates[1]"));
  CHECK_THAT(check("tls:\n  certificates:\n    - {cert_file: " + cert("a.pem") + ", key_file: " + cert("a.key") +
                   "}\n    - {cert_file: " + cert("b.pem") + ", key_file: " + cert("wrong.key") + "}\n"),
             Contains("tls.certificates[1] key_file = " + cert("wrong.key") + " (" + (dir.path() / "bad.yaml:5:7)").string()) && Contains("does not match"));
  CHECK_THAT(check("tls:\n  certificates:\n    - {cert_file: " + cert("a.pem") + ", key_file: " + cert("a.key") +
                   "}\n    - {cert_file: " + (dir.path() / "nope.pem").string() + "}\n"),
             Contains("tls.certificates[1] cert_file") && Contains("No such file"));
  CHECK_THAT(check("tls:\n  certificates:\n    - {cert_file: " + cert("a.pem") + ", key_file: " + cert("a.key") +
                   ", listen: 127.0.0.1:0}\n"),
             Contains("bad.yaml:4:7") && Contains("\"127.0.0.1:0\" is not one of the TLS listeners (tls://127.0.0.1:0)"));
  const Outcome good = run(binary("echo_server"), {"--config", dir.write("good.yaml", "listen: [tls://127.0.0.1:0]\n" +
                                                                                   certificates_block({"a", "a-rsa", "b"})).string(),
                                                   "--check-config"});
  CHECK(good.status == 0);
  CHECK_THAT(good.output, Contains("configuration OK") && Contains("certificates: [{cert_file: "));
  const Outcome cli = run(binary("echo_server"), {"--listen=tls://127.0.0.1:0", "--check-config",
                                                  "--tls.certificates=[{cert_file: " + cert("a.pem") + ", key_file: " + cert("b.key") + "}]"});
  CHECK(cli.status == 2);
  CHECK_THAT(cli.output, Contains("tls.certificates[0] key_file") && Contains("command line --tls.certificates") &&
                             Contains("does not match"));
}

TEST_CASE("a client that drops without close_notify is an ordinary end", "[tls]") {
  ServerProcess server(binary("echo_server"), config("multiplex"));
  CHECK_THAT(python_client(tls_port(server), {"--drop", "bye soon"}), Contains("\"bye soon\"]"));
  CHECK(server.wait_for_log("client closed"));
  CHECK_THAT(python_client(tls_port(server), {"next"}), Contains("\"next\"]"));
  CHECK(server.error_lines().empty());
}

// The client sends a line and a partial one, then a bare FIN (shutdown(SHUT_WR), no close_notify):
// as on plaintext, both lines are answered, on_eof runs and its reply arrives, then close_notify.
TEST_CASE("a bare FIN after a partial line is an ordinary EOF: every reply and on_eof then close_notify", "[tls]") {
  for (const std::string personality : {"multiplex", "prefork"}) {
    INFO(personality);
    ServerProcess probe(binary("probe_server"), config(personality));
    const std::string json = python_client(tls_port(probe), {"--until-close", "--fin", "echo abc", "echo last-no-newline"});
    CHECK_THAT(json, Contains("\"abc\", \"last-no-newline\", \"eof seen\"]"));
    CHECK_THAT(json, Contains("\"closed\": \"close_notify\""));
    CHECK(probe.wait_for_log("client closed"));
    CHECK(probe.count_in_log("End of file") == 0);
    CHECK(probe.error_lines().empty());
  }
  ServerProcess echo(binary("echo_server"), config("multiplex"));
  const std::string json = python_client(tls_port(echo), {"--until-close", "--fin", "abc", "last-no-newline"});
  CHECK_THAT(json, Contains("\"abc\", \"last-no-newline\"]") && Contains("\"closed\": \"close_notify\""));
  CHECK(echo.wait_for_log("client closed"));
}

// The server ends the session ("quit") while the client is still sending: the reply before it
// arrives, then our close_notify (not a bare EOF or a reset), and the input after it is read and
// dropped while the server lingers.
TEST_CASE("a session the server ends sends close_notify after its last reply", "[tls]") {
  ServerProcess server(binary("echo_server"), config("multiplex"));
  const std::string json = python_client(tls_port(server), {"--until-close", "one", "quit", "after the end"});
  CHECK_THAT(json, Contains("\"closed\": \"close_notify\""));
  CHECK_THAT(json, Contains(", \"one\"]"));
  CHECK(server.wait_for_log("(session 1): server closed"));
  CHECK(server.error_lines().empty());
}

TEST_CASE("large output crosses TLS whole and max_output still applies", "[tls]") {
  ServerProcess server(binary("probe_server"), config("multiplex") + "max_output: 64K\n");
  // 3 MB through 64 KiB chunks: more than max_output, but a reading client takes it as it comes.
  const std::string json = python_client(tls_port(server), {"--read", "1", "flood 30000", "echo done"});
  CHECK_THAT(json, Contains("ffff"));
  SClient reader(tls_port(server));
  CHECK(reader.read_line());
  reader.send_line("flood 5000000");  // a client that does not read loses its own session
  CHECK(server.wait_for_log("its output queue would pass max_output (65536 bytes)"));
}

// 4,000 lines of up to 4,000 bytes, each its own record, sent without waiting while the client
// reads nothing for half a second: the server stops reading (backpressure), its records are cut
// short by a full socket and retried from a queue that moved meanwhile, and many records arrive in
// one read. Every line must come back whole and in order, over a unix socket and over TCP.
TEST_CASE("a stream of small records crosses TLS intact through backpressure", "[tls]") {
  TempDir dir;
  const std::string path = (dir.path() / "tls.sock").string();
  ServerProcess server(binary("echo_server"), "personality: multiplex\nlog_level: 3\nmax_output: 256K\nlisten:\n"
                                              "  - tls://127.0.0.1:0\n  - tls://unix:" + path + "\n" + tls_block());
  CHECK(server.wait_for_log("listening on tls://unix:" + path));
  // 16 MB each way through TLS: seconds alone, many more under a sanitizer beside other suites,
  // so the bounds are generous (this checks integrity, not speed: bench/ measures that).
  const std::vector<std::string> stream{"--stream", "4000", "--size", "4000", "--timeout", "20"};
  std::vector<std::string> over_unix{source_dir + "/tests/tls/tls_client.py", "--ca", cert("ca.pem"), "--unix", path};
  over_unix.insert(over_unix.end(), stream.begin(), stream.end());
  CHECK_THAT(run("/usr/bin/python3", over_unix, 120s).output, Contains("\"intact\": 4000, \"in_order\": true"));
  std::vector<std::string> over_tcp{"--rcvbuf", "262144"};  // a smaller window than loopback's: output backs up sooner
  over_tcp.insert(over_tcp.end(), stream.begin(), stream.end());
  CHECK_THAT(python_client(tls_port(server), over_tcp, 120s), Contains("\"intact\": 4000, \"in_order\": true"));
  CHECK(server.error_lines().empty());
}

TEST_CASE("HUP loads the new certificate and old sessions keep going", "[tls]") {
  TempDir dir;
  fs::copy_file(cert("server.pem"), dir.path() / "cert.pem");
  fs::copy_file(cert("server.key"), dir.path() / "key.pem");
  const std::string yaml = "personality: multiplex\nlog_level: 3\nlisten: [tls://127.0.0.1:0]\ntls:\n  cert_file: " +
                           (dir.path() / "cert.pem").string() + "\n  key_file: " + (dir.path() / "key.pem").string() + "\n";
  ServerProcess server(binary("echo_server"), yaml);
  const int port = tls_port(server);
  CHECK(has(python_client(port, {}), "serial", "1001"));
  SClient old(port);
  REQUIRE(old.read_line());

  // A broken new certificate: the running server carries on with the old one.
  fs::copy_file(cert("wrong.key"), dir.path() / "key.pem", fs::copy_options::overwrite_existing);
  server.signal(SIGHUP);
  CHECK(server.wait_for_log("the running server carries on"));
  CHECK(has(python_client(port, {}), "serial", "1001"));

  fs::copy_file(cert("server2.pem"), dir.path() / "cert.pem", fs::copy_options::overwrite_existing);
  fs::copy_file(cert("server2.key"), dir.path() / "key.pem", fs::copy_options::overwrite_existing);
  server.signal(SIGHUP);
  CHECK(server.wait_for_log("(restarted)"));
  CHECK(eventually([&] { return has(python_client(port, {}), "serial", "2002"); }));
  old.send_line("the old session still works");
  CHECK(old.read_line() == "the old session still works");
  server.expect_errors();  // the refused reload is logged as an error
}

// Issue 19.2: a renewal job rewriting the certificate in place (truncate, then write) while HUPs
// arrive used to leave no server at all when the new image read a half-written file. Now each new
// image that does not come up is one the running server outlives.
TEST_CASE("a certificate rewritten every 3 ms during HUPs never loses the service", "[tls][restart]") {
  TempDir dir;
  const fs::path live_cert = dir.path() / "cert.pem", live_key = dir.path() / "key.pem";
  fs::copy_file(cert("server.pem"), live_cert);
  fs::copy_file(cert("server.key"), live_key);
  const std::string yaml = "personality: multiplex\nlog_level: 3\nlisten:\n  - tls://127.0.0.1:0\n  - 127.0.0.1:0\n"
                           "restart_timeout: 10\ntls:\n  cert_file: " + live_cert.string() + "\n  key_file: " +
                           live_key.string() + "\n";
  ServerProcess server(binary("echo_server"), yaml);
  server.expect_errors();  // the new images that read half a certificate say so
  const int plain = server.port_of("127.0.0.1"), port = tls_port(server);
  const std::string pem = [&] {
    std::ifstream in(cert("server.pem"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  std::atomic<bool> renewing{true};
  std::thread renewer([&] {
    for (int i = 0; renewing && i < 20000; ++i) {
      {
        std::ofstream out(live_cert, std::ios::trunc);
        out.write(pem.data(), static_cast<std::streamsize>(pem.size() / 2));
        out.flush();
        out.write(pem.data() + pem.size() / 2, static_cast<std::streamsize>(pem.size() - pem.size() / 2));
      }
      std::this_thread::sleep_for(3ms);
    }
  });
  int answered = 0;
  for (int i = 0; i < 8; ++i) {
    server.signal(SIGHUP);
    std::this_thread::sleep_for(400ms);
    Client client(plain);
    if (client.read_line(10s)) ++answered;
  }
  renewing = false;
  renewer.join();
  INFO(server.log());
  CHECK(answered == 8);
  CHECK_FALSE(server.wait_exit(0.2s).has_value());
  CHECK(eventually([&] { return has(python_client(port, {}), "serial", "1001"); }));
}

TEST_CASE("configuration errors stop the start before binding", "[tls]") {
  TempDir dir;
  const auto start = [&](const std::string& yaml) {
    return run(binary("echo_server"), {"--config", dir.write("bad.yaml", "listen: [tls://127.0.0.1:0]\n" + yaml).string()});
  };
  const Outcome wrong_key = start("tls:\n  cert_file: " + cert("server.pem") + "\n  key_file: " + cert("wrong.key") + "\n");
  CHECK(wrong_key.status == 2);
  CHECK_THAT(wrong_key.output, Contains("tls.key_file") && Contains("bad.yaml:4") && Contains("does not match"));
  CHECK_THAT(wrong_key.output, !Contains("listening on"));

  const Outcome missing = start("tls:\n  cert_file: " + (dir.path() / "nope.pem").string() + "\n");
  CHECK(missing.status == 2);
  CHECK_THAT(missing.output, Contains("tls.cert_file") && Contains("bad.yaml:3") && Contains("No such file"));

  const Outcome no_cert = start("");
  CHECK(no_cert.status == 2);
  CHECK_THAT(no_cert.output, Contains("tls://127.0.0.1:0") && Contains("tls.cert_file is not set"));

  const Outcome cli = run(binary("echo_server"), {"--listen=tls://127.0.0.1:0", "--tls.cert_file=" + cert("server.pem"),
                                                  "--tls.key_file=" + cert("client.key")});
  CHECK(cli.status == 2);
  CHECK_THAT(cli.output, Contains("command line --tls.key_file") && Contains("does not match"));
}

// --check-config loads the TLS contexts as the start does: each configuration the start refuses is
// refused with exit status 2 and the same message, and "configuration OK" is never printed.
TEST_CASE("check-config refuses every TLS configuration the start refuses with the same message", "[tls][hardening]") {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases{
      {"", "tls.cert_file is not set"},
      {"tls:\n  cert_file: " + (dir.path() / "nope.pem").string() + "\n", "No such file"},
      {"tls:\n  cert_file: " + cert("server.pem") + "\n  key_file: " + cert("wrong.key") + "\n", "does not match"},
      {tls_block("  verify_client: required\n"), "needs tls.ca_file"},
      {tls_block("  ciphers: NOPE\n"), "tls.ciphers"},
      {tls_block("  profile: strict\n"), "tls.profile"},
      {tls_block("  ticket_key_files: [" + dir.write("short.key", std::string(48, 'k')).string() + "]\n"), "holds 48 bytes, not 80"},
      {tls_block("  ticket_key_files: [" + (dir.path() / "absent.key").string() + "]\n"), "cannot read the ticket key file"},
  };
  // The line that names the error (the rest of the output may differ: the dump, timestamps).
  const auto error_line = [](const std::string& output) {
    std::istringstream lines(output);
    for (std::string line; std::getline(lines, line);)
      if (line.find("bad.yaml") != std::string::npos || line.find("tls.cert_file is not set") != std::string::npos) return line;
    return std::string("(no error line in: " + output + ")");
  };
  for (const auto& [yaml, expected] : cases) {
    INFO(yaml);
    const std::string file = dir.write("bad.yaml", "listen: [tls://127.0.0.1:0]\n" + yaml).string();
    const Outcome started = run(binary("echo_server"), {"--config", file});
    const Outcome checked = run(binary("echo_server"), {"--config", file, "--check-config"});
    CHECK(started.status == 2);
    CHECK(checked.status == 2);
    CHECK_THAT(checked.output, Contains(expected) && !Contains("configuration OK"));
    CHECK(error_line(checked.output) == error_line(started.output));
  }
  const Outcome good = run(binary("echo_server"), {"--config", dir.write("good.yaml", "listen: [tls://127.0.0.1:0]\n" + tls_block()).string(),
                                                   "--check-config"});
  CHECK(good.status == 0);
  CHECK_THAT(good.output, Contains("configuration OK"));
}

TEST_CASE("an expired certificate starts with a warning naming the date", "[tls]") {
  ServerProcess server(binary("echo_server"), "listen: [tls://127.0.0.1:0]\ntls:\n  cert_file: " + cert("expired.pem") +
                                                  "\n  key_file: " + cert("expired.key") + "\n");
  CHECK_THAT(server.log(), Contains("expired on Jan  1 00:00:00 2021 GMT"));
}

TEST_CASE("chat over s_client reaches plaintext clients in the same room", "[tls]") {
  ServerProcess server(binary("chat_server"), config("multiplex"));
  Client plain(server.port());
  REQUIRE(plain.read_line());
  REQUIRE(plain.read_line());
  SClient secure(tls_port(server));
  CHECK(secure.read_line() == "Welcome, to the server!");
  CHECK_THAT(secure.read_line().value_or(""), Contains("tls TLSv1.3"));
  CHECK_THAT(plain.read_line().value_or(""), Contains("who just joined us"));
  secure.send_line("hello from tls");
  CHECK_THAT(plain.read_line().value_or(""), Contains("said: hello from tls"));
  plain.send("hello from plaintext\r\n");
  CHECK_THAT(secure.read_line().value_or(""), Contains("said: hello from plaintext"));
}

// Mozilla's intermediate profile by default: on TLS 1.2 only ECDHE with AES-GCM or ChaCha20-Poly1305,
// chosen in the server's order; TLS 1.3 as OpenSSL has it. The CBC suites a default OpenSSL offers
// are refused. tls.profile: old brings them (and TLS 1.1) back, tls.ciphers overrides the
// profile's list, modern allows TLS 1.3 only.
TEST_CASE("the default TLS 1.2 suites are ECDHE with AEAD only and chosen in the server's order", "[tls]") {
  ServerProcess server(binary("echo_server"), config("multiplex"));
  const int port = tls_port(server);
  for (const std::string cbc : {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256",
                                "ECDHE-ECDSA-AES256-SHA384"}) {
    INFO(cbc);
    CHECK_THAT(s_client_once(port, "-tls1_2 -cipher " + cbc), Contains("Cipher is (NONE)"));
  }
  // The client lists ChaCha20 first; the server's order has AES-128-GCM first.
  CHECK_THAT(s_client_once(port, "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"),
             Contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"));
  CHECK_THAT(s_client_once(port, "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305"), Contains("Cipher is ECDHE-ECDSA-CHACHA20-POLY1305"));
  CHECK_THAT(s_client_once(port, "-tls1_3"), Contains("New, TLSv1.3"));

  ServerProcess old(binary("echo_server"), config("multiplex", "  profile: old\n"));
  CHECK_THAT(s_client_once(tls_port(old), "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA"), Contains("Cipher is ECDHE-ECDSA-AES128-SHA"));
  CHECK(has(python_client(tls_port(old), {"--tls", "1.1"}), "version", "TLSv1.1"));
  ServerProcess chosen(binary("echo_server"), config("multiplex", "  ciphers: ECDHE-ECDSA-AES256-SHA384\n"));
  CHECK_THAT(s_client_once(tls_port(chosen), "-tls1_2"), Contains("Cipher is ECDHE-ECDSA-AES256-SHA384"));
  ServerProcess modern(binary("echo_server"), config("multiplex", "  profile: modern\n"));
  CHECK_THAT(s_client_once(tls_port(modern), "-tls1_2"), Contains("Cipher is (NONE)"));
  CHECK_THAT(s_client_once(tls_port(modern), ""), Contains("New, TLSv1.3"));
}

// Debian's testssl.sh, the audit operators run, against a default listener serving an ECDSA and
// an RSA certificate for the same names (tls.certificates): no obsolete CBC suite offered, not
// LUCKY13-prone, forward secrecy everywhere (every suite of the server's cipher order, TLS 1.2 and
// 1.3, is in the forward-secrecy section's list), both certificates seen (the server-defaults
// section lists each with its key), nothing rated VULNERABLE. The findings about our self-made
// certificate's trust (a test CA no client knows, no CRL or OCSP URI, ten years of validity) are
// expected and filtered by name; any other "NOT ok" fails. Bounded to the sections concerned (the
// standard cipher categories, LUCKY13, forward secrecy, server defaults and preferences), not the
// whole scan, which takes many minutes on a loaded machine (it has its own ctest timeout,
// tests/CMakeLists.txt).
TEST_CASE("testssl.sh finds no CBC suite and no LUCKY13 on a default listener", "[tls][testssl]") {
  fs::path testssl = bp::search_path("testssl");
  if (testssl.empty()) testssl = bp::search_path("testssl.sh");
  if (testssl.empty()) {
    WARN("testssl.sh is not installed (Debian package testssl.sh): this audit is skipped");
    return;
  }
  ServerProcess server(binary("echo_server"), "personality: multiplex\nlog_level: 3\nlisten: [tls://127.0.0.1:0]\n" +
                                                  certificates_block({"server", "server-rsa"}));
  const Outcome audit = run(testssl.string(), {"--quiet", "--color", "0", "--warnings", "off", "--std", "--lucky13", "--fs",
                                               "--server-defaults", "--server-preference",
                                               "127.0.0.1:" + std::to_string(tls_port(server))}, 420s);
  INFO(audit.output);
  std::vector<std::string> lines;
  {
    std::istringstream text(audit.output);
    for (std::string line; std::getline(text, line);) lines.push_back(line);
  }
  // The verdict on a check's line: "Obsolete CBC ciphers (AES, ARIA etc.)   not offered".
  const auto line_of = [&](const std::string& check) {
    for (const std::string& line : lines)
      if (line.find(check) != std::string::npos) return line;
    return std::string("(no line for " + check + ")");
  };
  CHECK_THAT(line_of("Obsolete CBC ciphers"), Contains("not offered"));
  CHECK_THAT(line_of("Triple DES Ciphers"), Contains("not offered"));
  CHECK_THAT(line_of("LUCKY13 (CVE-2013-0169)"), Contains("not vulnerable"));

  // The suites of a section: those on the line holding `title` and on the lines under it, up to
  // the line holding `stop` (a blank line when "").
  static const std::regex suite(R"((TLS_[A-Z0-9_]+|[A-Z0-9]+(-[A-Z0-9]+)+))");
  const auto suites_after = [&](const std::string& title, const std::string& stop) {
    std::set<std::string> found;
    bool inside = false;
    for (const std::string& line : lines) {
      if (!inside && line.find(title) != std::string::npos) inside = true;
      else if (inside && (stop.empty() ? line.find_first_not_of(' ') == std::string::npos : line.find(stop) != std::string::npos))
        break;
      if (!inside) continue;
      for (auto word = std::sregex_iterator(line.begin(), line.end(), suite); word != std::sregex_iterator(); ++word)
        if (word->str() != "TLSv1" && !word->str().starts_with("CVE")) found.insert(word->str());
    }
    return found;
  };
  CHECK_THAT(audit.output, Contains("FS is offered (OK)"));
  const std::set<std::string> forward_secret = suites_after("FS is offered (OK)", "Elliptic curves offered");
  const std::set<std::string> offered = suites_after(" Cipher order", "");
  CHECK(offered.size() >= 6);  // intermediate's six on TLS 1.2, OpenSSL's three on 1.3
  for (const std::string& name : offered) {
    INFO(name << " is offered");
    CHECK((name.starts_with("ECDHE-") || name.starts_with("TLS_")));
    CHECK(forward_secret.count(name) == 1);
  }

  // Both certificates are seen, each with its key.
  CHECK_THAT(audit.output, Contains("Server Certificate #2"));
  CHECK_THAT(audit.output, Contains("Server key size              RSA 2048 bits"));
  CHECK_THAT(audit.output, Contains("Server key size              EC 256 bits"));

  // Nothing VULNERABLE; "NOT ok" only about our test certificate's trust.
  const std::vector<std::string> expected_findings{"Chain of trust", "neither CRL nor OCSP URI provided"};
  for (const std::string& line : lines) {
    INFO(line);
    CHECK_THAT(line, !Contains("VULNERABLE") && !Contains("potentially"));
    const bool expected = std::any_of(expected_findings.begin(), expected_findings.end(),
                                      [&](const std::string& finding) { return line.find(finding) != std::string::npos; });
    if (!expected) CHECK_THAT(line, !Contains("NOT ok"));
  }
}

// The ticket keys cross a HUP (the secret they derive from is handed to the new image), so a
// ticket from before the reload resumes after it, on TLS 1.3 and 1.2, whichever process serves.
TEST_CASE("session tickets resume after a HUP under multiplex and workers and prefork", "[tls]") {
  for (const std::string personality : {"multiplex", "multiplex workers", "prefork"}) {
    const bool workers = personality == "multiplex workers";
    ServerProcess server(binary("echo_server"), workers ? config("multiplex") + "multiplex:\n  workers: 2\n" : config(personality));
    TempDir dir;
    const int port = tls_port(server);
    for (const std::string version : {"1_3", "1_2"}) {
      const std::string session = (dir.path() / ("session" + version)).string();
      INFO(personality << " TLS " << version);
      CHECK_THAT(s_client_once(port, "-tls" + version + " -sess_out " + session), Contains("New, TLSv1."));
      CHECK_THAT(s_client_once(port, "-tls" + version + " -sess_in " + session), Contains("Reused, TLSv1."));
    }
    server.signal(SIGHUP);
    REQUIRE(server.wait_for_log("(restarted)"));
    for (const std::string version : {"1_3", "1_2"}) {
      const std::string session = (dir.path() / ("session" + version)).string();
      INFO(personality << " TLS " << version << " after the HUP");
      for (int i = 0; i < 3; ++i) CHECK_THAT(s_client_once(port, "-tls" + version + " -sess_in " + session), Contains("Reused, TLSv1."));
    }
  }
}

// tls.ticket_key_files: the first key encrypts, all decrypt; two servers with the same files
// resume each other's sessions; a ticket under a key no longer listed means a full handshake;
// the files are read again on HUP.
TEST_CASE("servers sharing ticket_key_files resume each other's sessions", "[tls]") {
  TempDir dir;
  const std::string first = ticket_key_file(dir, "first.key");
  const std::string second = ticket_key_file(dir, "second.key");
  const auto keys = [](const std::vector<std::string>& files) {
    std::string yaml = "  ticket_key_files:\n";
    for (const std::string& file : files) yaml += "    - " + file + "\n";
    return yaml;
  };
  ServerProcess a(binary("echo_server"), config("multiplex", keys({first})));
  ServerProcess b(binary("echo_server"), config("prefork", keys({first})));
  ServerProcess rotated(binary("echo_server"), config("multiplex", keys({second, first})));
  ServerProcess removed(binary("echo_server"), config("multiplex", keys({second})));
  ServerProcess own(binary("echo_server"), config("multiplex"));
  for (const std::string version : {"1_3", "1_2"}) {
    INFO("TLS " << version);
    const std::string session = (dir.path() / ("session" + version)).string();
    const std::string tls = "-tls" + version + " ";
    CHECK_THAT(s_client_once(tls_port(a), tls + "-sess_out " + session), Contains("New, TLSv1."));
    CHECK_THAT(s_client_once(tls_port(b), tls + "-sess_in " + session), Contains("Reused, TLSv1."));
    CHECK_THAT(s_client_once(tls_port(rotated), tls + "-sess_in " + session), Contains("Reused, TLSv1."));
    CHECK_THAT(s_client_once(tls_port(removed), tls + "-sess_in " + session), Contains("New, TLSv1."));
    CHECK_THAT(s_client_once(tls_port(own), tls + "-sess_in " + session), Contains("New, TLSv1."));
  }

  // Reloaded on HUP: the file now holds another key, so the old tickets no longer resume.
  const std::string changing = (dir.path() / "changing.key").string();
  fs::copy_file(first, changing);
  ServerProcess reloading(binary("echo_server"), config("multiplex", keys({changing})));
  const std::string session = (dir.path() / "session").string();
  CHECK_THAT(s_client_once(tls_port(reloading), "-sess_out " + session), Contains("New, TLSv1.3"));
  CHECK_THAT(s_client_once(tls_port(reloading), "-sess_in " + session), Contains("Reused, TLSv1.3"));
  fs::copy_file(second, changing, fs::copy_options::overwrite_existing);
  reloading.signal(SIGHUP);
  REQUIRE(reloading.wait_for_log("(restarted)"));
  CHECK(eventually([&] { return s_client_once(tls_port(reloading), "-sess_in " + session).find("New, TLSv1.3") != std::string::npos; }));
}

// OCSP stapling from tls.ocsp_file: a good response from the test CA's responder reaches clients
// that ask (openssl s_client -status), on TLS 1.3 and 1.2; a stale one, one about another
// certificate, or one that cannot be checked without the issuer is logged and not stapled; a file
// that is no OCSP response is a configuration error, in --check-config too.
TEST_CASE("OCSP stapling from tls.ocsp_file staples a valid response only", "[tls]") {
  TempDir dir;
  const std::string chain = dir.write("chain.pem", file_text(cert("server.pem")) + file_text(cert("ca.pem"))).string();
  const auto yaml = [&](const std::string& cert_file, const std::string& ocsp_file) {
    return "personality: multiplex\nlog_level: 3\nlisten: [tls://127.0.0.1:0]\ntls:\n  cert_file: " + cert_file +
           "\n  key_file: " + cert("server.key") + "\n  ocsp_file: " + ocsp_file + "\n";
  };
  const std::string good = ocsp_response(dir, "good", cert("server.pem"), "1001");
  ServerProcess stapling(binary("echo_server"), yaml(chain, good));
  for (const std::string version : {"-tls1_3", "-tls1_2"}) {
    INFO(version);
    const std::string asked = s_client_once(tls_port(stapling), version + " -status");
    CHECK_THAT(asked, Contains("OCSP Response Status: successful") && Contains("Cert Status: good"));
    CHECK_THAT(s_client_once(tls_port(stapling), version), Contains("New, TLSv1.") && !Contains("OCSP Response Status"));
  }

  const std::string foreign = ocsp_response(dir, "foreign", cert("server2.pem"), "2002");
  const std::string stale = stale_ocsp_response(dir);
  const std::vector<std::pair<std::string, std::string>> refused{
      {yaml(chain, foreign), "it is not about the certificate in tls.cert_file; it is not stapled"},
      {yaml(chain, stale), "it is stale or not yet valid"},
      {yaml(cert("server.pem"), good), "the certificate's issuer is not in tls.cert_file"},
  };
  for (const auto& [config_text, logged] : refused) {
    INFO(logged);
    ServerProcess server(binary("echo_server"), config_text);
    CHECK(server.wait_for_log(logged));
    CHECK_THAT(s_client_once(tls_port(server), "-status"), Contains("OCSP response: no response sent") && Contains("New, TLSv1.3"));
  }

  const std::string garbage = dir.write("garbage.der", "not DER at all\n").string();
  const std::string file = dir.write("bad.yaml", yaml(chain, garbage)).string();
  const Outcome started = run(binary("echo_server"), {"--config", file});
  const Outcome checked = run(binary("echo_server"), {"--config", file, "--check-config"});
  CHECK(started.status == 2);
  CHECK(checked.status == 2);
  CHECK_THAT(started.output, Contains("tls.ocsp_file") && Contains("not a DER OCSP response"));
  CHECK_THAT(checked.output, Contains("tls.ocsp_file") && Contains("not a DER OCSP response") && !Contains("configuration OK"));
}

TEST_CASE("TLS handshakes are counted on /metrics by result", "[tls][metrics]") {
  ServerProcess server(binary("echo_server"), config("multiplex") + "status:\n  listen: [\"127.0.0.1:" +
                                                  std::to_string(free_port()) + "\"]\n");
  CHECK_THAT(s_client_once(tls_port(server), ""), Contains("TLSv1.3"));  // one handshake that succeeds
  Client plain(tls_port(server));  // and one that fails: plaintext on the TLS port
  REQUIRE(plain.send("GET / HTTP/1.0\r\n\r\n"));
  CHECK(plain.closed_by_peer());
  const int status = metrics_checks::status_port(server);
  std::map<std::string, double> samples;
  CHECK(eventually([&] {
    samples = metrics_checks::samples_of(metrics_checks::curl(metrics_checks::url(status, "/metrics")).body);
    return metrics_checks::sample(samples, R"(netserver_tls_handshakes_total{result="ok"})") == 1 &&
           metrics_checks::sample(samples, R"(netserver_tls_handshakes_total{result="failed"})") == 1;
  }));
  CHECK(metrics_checks::sample(samples, R"(netserver_connections_accepted_total{listener="tls://127.0.0.1:0"})") == 2);
}
