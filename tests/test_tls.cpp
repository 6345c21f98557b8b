// TLS listeners against real clients: Python's ssl module (tests/tls/tls_client.py), openssl
// s_client, and plain sockets where a client misbehaves. Certificates are made once per run by
// tests/tls/make-certs.

#include <catch2/catch.hpp>

#include <poll.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <boost/process.hpp>

#include "harness.hpp"

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
std::string python_client(int port, std::vector<std::string> args) {
  std::vector<std::string> all{source_dir + "/tests/tls/tls_client.py", "--ca", cert("ca.pem"), "--port",
                               std::to_string(port)};
  all.insert(all.end(), args.begin(), args.end());
  return run("/usr/bin/python3", all, 20s).output;
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
    const std::string s_client = "openssl s_client -connect 127.0.0.1:" + std::to_string(tls_port(server)) +
                                 " -CAfile " + cert("ca.pem") + " ";
    // s_client reads for a moment (the banner and the tickets), then its stdin ends.
    const Outcome first = run("/bin/sh", {"-c", "sleep 0.5 | " + s_client + "-sess_out " + session + " 2>&1"});
    CHECK_THAT(first.output, Contains("New, TLSv1.3"));
    const Outcome second = run("/bin/sh", {"-c", "sleep 0.5 | " + s_client + "-sess_in " + session + " 2>&1"});
    CHECK_THAT(second.output, Contains("Reused, TLSv1.3"));
    CHECK_THAT(python_client(tls_port(server), {"--resume", "--tls", "1.2"}), Contains("\"reused\": true"));
  }
}

TEST_CASE("a client that drops without close_notify is an ordinary end", "[tls]") {
  ServerProcess server(binary("echo_server"), config("multiplex"));
  CHECK_THAT(python_client(tls_port(server), {"--drop", "bye soon"}), Contains("\"bye soon\"]"));
  CHECK(server.wait_for_log("client closed"));
  CHECK_THAT(python_client(tls_port(server), {"next"}), Contains("\"next\"]"));
  CHECK(server.error_lines().empty());
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
  const std::vector<std::string> stream{"--stream", "4000", "--size", "4000", "--timeout", "5"};
  std::vector<std::string> over_unix{source_dir + "/tests/tls/tls_client.py", "--ca", cert("ca.pem"), "--unix", path};
  over_unix.insert(over_unix.end(), stream.begin(), stream.end());
  CHECK_THAT(run("/usr/bin/python3", over_unix, 60s).output, Contains("\"intact\": 4000, \"in_order\": true"));
  std::vector<std::string> over_tcp{"--rcvbuf", "262144"};  // a smaller window than loopback's: output backs up sooner
  over_tcp.insert(over_tcp.end(), stream.begin(), stream.end());
  CHECK_THAT(python_client(tls_port(server), over_tcp), Contains("\"intact\": 4000, \"in_order\": true"));
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
