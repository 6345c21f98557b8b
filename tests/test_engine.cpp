// The engine and its sessions against a fake transport: what the Session promises (backpressure,
// soft and hard output limits, pause/resume, close after flush, EOF ordering) checked byte by
// byte, without a socket's timing in the way.

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <string>
#include <vector>

#include <boost/asio/post.hpp>

#include "engine.hpp"
#include "token_bucket.hpp"
#include "netserver/handler.hpp"
#include "netserver/server.hpp"

using namespace netserver;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

// A byte stream the test drives: what the client "sends" waits in `incoming`, what the session
// writes lands in `written` as long as `room` lasts (the socket's free space).
class FakeTransport final : public Transport {
 public:
  explicit FakeTransport(asio::io_context& io) : io_(io) {}

  std::string written;
  std::size_t room = SIZE_MAX;
  std::deque<std::string> incoming;
  bool client_finished = false;
  bool shut_down = false;  // a graceful end
  bool closed = false;     // closed at once (or after the graceful end)
  bool reading() const { return static_cast<bool>(read_done_); }
  bool watching_reset() const { return static_cast<bool>(reset_); }
  bool waiting_writable() const { return static_cast<bool>(writable_); }

  // --- the test's side ---
  void send(std::string bytes) {
    incoming.push_back(std::move(bytes));
    pump();
  }
  void finish() {
    client_finished = true;
    pump();
  }
  void reset_by_client() {  // an RST: a read in flight fails, a reset watch reports it
    if (auto done = std::exchange(read_done_, nullptr))
      asio::post(io_, [done] { done(asio::error::connection_reset, 0); });
    if (auto reset = std::exchange(reset_, nullptr)) asio::post(io_, [reset] { reset(asio::error::connection_reset); });
  }
  void drain(std::size_t more = SIZE_MAX) {  // the client reads: the socket takes more
    room = more;
    if (auto ready = std::exchange(writable_, nullptr)) asio::post(io_, [ready] { ready({}); });
  }

  // --- Transport ---
  void start(Ready ready) override { ready({}); }
  void async_read_some(std::span<char> into, ReadDone done) override {
    REQUIRE_FALSE(reset_);  // a reset watch is cancelled before any read
    into_ = into;
    read_done_ = std::move(done);
    pump();
  }
  std::size_t read_now(std::span<char> into, bool& eof) override {
    if (incoming.empty()) {
      eof = client_finished;
      return 0;
    }
    return take(into);
  }
  std::size_t write_now(std::string_view bytes, boost::system::error_code&) override {
    const std::size_t n = std::min(bytes.size(), room);
    written.append(bytes.substr(0, n));
    room -= n;
    return n;
  }
  void async_wait_writable(Ready ready) override { writable_ = std::move(ready); }
  void async_wait_reset(Ready reset, asio::cancellation_slot cancel) override {
    REQUIRE_FALSE(read_done_);  // never while a read is in flight: asio would stop reading speculatively
    reset_ = std::move(reset);
    cancel.assign([this](asio::cancellation_type) {
      if (auto reset = std::exchange(reset_, nullptr)) asio::post(io_, [reset] { reset(asio::error::operation_aborted); });
    });
  }
  bool shutdown(Duration, bool, std::function<void()>) override {
    shut_down = closed = true;
    return false;
  }
  void close() override {
    closed = true;
    if (auto done = std::exchange(read_done_, nullptr))
      asio::post(io_, [done] { done(asio::error::operation_aborted, 0); });
    if (auto ready = std::exchange(writable_, nullptr))
      asio::post(io_, [ready] { ready(asio::error::operation_aborted); });
    if (auto reset = std::exchange(reset_, nullptr)) asio::post(io_, [reset] { reset(asio::error::operation_aborted); });
  }
  bool is_open() const override { return !closed; }

 private:
  std::size_t take(std::span<char> into) {
    std::string& front = incoming.front();
    const std::size_t n = std::min(front.size(), into.size());
    std::copy_n(front.data(), n, into.data());
    front.erase(0, n);
    if (front.empty()) incoming.pop_front();
    return n;
  }
  void pump() {
    if (!read_done_ || (incoming.empty() && !client_finished)) return;
    auto done = std::exchange(read_done_, nullptr);
    if (incoming.empty()) return asio::post(io_, [done] { done(asio::error::eof, 0); });
    const std::size_t n = take(into_);
    asio::post(io_, [done, n] { done({}, n); });
  }

  asio::io_context& io_;
  std::span<char> into_;
  ReadDone read_done_;
  Ready writable_;
  Ready reset_;
};

class FakeFactory final : public TransportFactory {
 public:
  explicit FakeFactory(asio::io_context& io) : io_(io) {}
  std::shared_ptr<Transport> make(Transport::Socket socket) override {
    sockets_.push_back(std::move(socket));
    last = std::make_shared<FakeTransport>(io_);
    return last;
  }
  bool plaintext() const override { return true; }
  std::shared_ptr<FakeTransport> last;

 private:
  asio::io_context& io_;
  std::vector<Transport::Socket> sockets_;  // the real (unused) sockets the sessions were accepted on
};

// What a handler saw, in order.
struct Journal {
  std::vector<std::string> events;
  std::weak_ptr<Session> session;  // the last one connected
  std::vector<std::weak_ptr<Session>> sessions;  // every one, in the order they connected
  std::string joined() const {
    std::string out;
    for (const auto& event : events) out += event + ";";
    return out;
  }
};

// Echoes lines; "flood N" queues N bytes; "pause" pauses input; "close" closes; "join" joins the
// room "r"; "say N" publishes N bytes and a line end to the others in it.
class ScriptHandler final : public LineHandler {
 public:
  explicit ScriptHandler(Journal& journal) : journal_(journal) {}
  void on_connect(Session& session) override {
    journal_.events.push_back("connect");
    journal_.session = session.shared_from_this();
    journal_.sessions.push_back(session.shared_from_this());
  }
  void on_line(Session& session, std::string_view line) override {
    journal_.events.push_back("line " + std::string(line));
    if (line.starts_with("flood ")) return session.send(std::string(std::stoul(std::string(line.substr(6))), 'x'));
    if (line == "pause") return session.pause_input();
    if (line == "close") return session.close();
    if (line == "join") return session.room("r").join(session, "member");
    if (line.starts_with("say "))
      return session.room("r").publish(std::string(std::stoul(std::string(line.substr(4))), 'm') + "\n", &session);
    session.send_line(line);
  }
  void on_eof(Session& session) override {
    journal_.events.push_back("eof");
    session.send_line("bye");
  }
  void on_close(Session&) override { journal_.events.push_back("close"); }

 private:
  Journal& journal_;
};

// An engine serving one fake client.
struct Rig {
  explicit Rig(SessionLimits limits = {})
      : handler(std::make_shared<ScriptHandler>(journal)),
        server("engine-test", handler),
        factory(std::make_shared<FakeFactory>(io)),
        engine(server, io, EngineOptions{.max_sessions = 10, .limits = limits}) {
    endpoint.address = endpoint.name = "127.0.0.1:1";
    endpoint.family = AF_INET;
    endpoint.transport = factory;
    endpoint.handler = handler;
  }
  // A session still open at the end holds itself through the fake's pending read: end every one,
  // as the io_context's destruction would end a real socket's operations.
  ~Rig() {
    std::vector<std::shared_ptr<Session>> open;
    engine.registry().for_each([&](Session& s) { open.push_back(s.shared_from_this()); });
    for (auto& session : open) session->abort("the test ends");
    if (factory->last) factory->last->close();
    run();
  }

  std::shared_ptr<FakeTransport> connect() {
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) == 0);
    ::close(pair[1]);
    AcceptedClient client;
    client.socket = OwnedFd(pair[0]);
    client.family = AF_UNIX;
    client.peer = "127.0.0.9:4242";
    client.endpoint = &endpoint;
    engine.serve(std::move(client));
    run();
    return factory->last;
  }
  void run() {
    io.restart();
    io.poll();
  }
  void run_for(Duration time) {
    io.restart();
    io.run_for(time);
  }
  SessionImpl& session() {
    auto session = journal.session.lock();
    REQUIRE(session);
    return static_cast<SessionImpl&>(*session);
  }
  SessionImpl& session(std::size_t index) {
    REQUIRE(index < journal.sessions.size());
    auto session = journal.sessions[index].lock();
    REQUIRE(session);
    return static_cast<SessionImpl&>(*session);
  }
  std::size_t count(const std::string& event) const {
    return static_cast<std::size_t>(std::count(journal.events.begin(), journal.events.end(), event));
  }
  Session* only_session() {
    Session* found = nullptr;
    engine.registry().for_each([&](Session& s) { found = &s; });
    return found;
  }

  asio::io_context io{single_threaded};
  Journal journal;
  std::shared_ptr<ScriptHandler> handler;
  Server server;
  std::shared_ptr<FakeFactory> factory;
  Endpoint endpoint;
  Engine engine;
};

SessionLimits small_limits() {
  SessionLimits limits;
  limits.max_line = 64;
  limits.max_output = 4096;
  return limits;
}

}  // namespace

TEST_CASE("a session echoes through the fake transport and its lines arrive in order", "[engine][session]") {
  Rig rig;
  auto client = rig.connect();
  REQUIRE(client);
  client->send("one\r\ntwo\nthr");
  rig.run();
  client->send("ee\n");
  rig.run();
  CHECK(client->written == "one\r\ntwo\r\nthree\r\n");
  CHECK(rig.journal.joined() == "connect;line one;line two;line three;");
  CHECK(rig.session().bytes_in() == 15);
  CHECK(rig.session().bytes_out() == client->written.size());
}

TEST_CASE("output the socket does not take stops the client's input above half of max_output", "[engine][session]") {
  Rig rig(small_limits());
  auto client = rig.connect();
  client->room = 0;  // the client reads nothing
  client->send("flood 2100\n");
  rig.run();
  REQUIRE(rig.session().queued() == 2100);
  CHECK_FALSE(client->reading());  // above max_output / 2: no read in flight
  client->send("echo\n");
  rig.run();
  CHECK(rig.journal.joined() == "connect;line flood 2100;");  // not read yet
  client->drain();
  rig.run();
  CHECK(rig.session().queued() == 0);
  CHECK(rig.journal.joined() == "connect;line flood 2100;line echo;");  // read again once drained
  CHECK(client->written.ends_with("echo\r\n"));
}

TEST_CASE("a client that takes no output is cut when its queue would pass max_output", "[engine][session]") {
  Rig rig(small_limits());
  auto client = rig.connect();
  client->room = 1000;  // the socket takes 1000 bytes, then nothing
  client->send("flood 3000\n");
  rig.run();
  CHECK(rig.session().is_open());  // 2000 queued: within the bound
  client->send("flood 3000\n");
  rig.run();
  CHECK(client->closed);
  CHECK_FALSE(client->shut_down);  // cut, not ended gracefully
  CHECK(rig.journal.joined() == "connect;line flood 3000;line flood 3000;close;");
  CHECK(rig.only_session() == nullptr);
}

TEST_CASE("a session cut inside on_line with more lines of the same read pending ends cleanly", "[engine][session]") {
  // The cut used to free the input the line framing was still walking (found by ASan under a
  // pipelining client of the status listener).
  Rig rig(small_limits());
  auto client = rig.connect();
  client->room = 0;
  client->send("flood 5000\nsecond line\nthird line\n");
  rig.run();
  CHECK(client->closed);
  CHECK(rig.journal.joined() == "connect;line flood 5000;close;");
  CHECK(rig.only_session() == nullptr);
}

TEST_CASE("a queue above max_output_soft for max_output_soft_seconds ends the session", "[engine][session]") {
  SessionLimits limits = small_limits();
  limits.max_output_soft = 1000;
  limits.max_output_soft_for = 50ms;
  Rig rig(limits);
  auto client = rig.connect();
  client->room = 0;
  client->send("flood 1500\n");
  rig.run();
  rig.run_for(20ms);
  CHECK_FALSE(client->closed);  // above the soft limit, not for long yet
  rig.run_for(100ms);
  CHECK(client->closed);
  CHECK(rig.journal.joined() == "connect;line flood 1500;close;");
}

TEST_CASE("a queue that drops back below max_output_soft in time keeps its session", "[engine][session]") {
  SessionLimits limits = small_limits();
  limits.max_output_soft = 1000;
  limits.max_output_soft_for = 80ms;
  Rig rig(limits);
  auto client = rig.connect();
  client->room = 0;
  client->send("flood 1500\n");
  rig.run();
  rig.run_for(20ms);
  client->drain();
  rig.run_for(150ms);
  CHECK_FALSE(client->closed);
  CHECK(rig.session().is_open());
}

TEST_CASE("paused input stays pending and is handed over after resume_input", "[engine][session]") {
  Rig rig;
  auto client = rig.connect();
  client->send("pause\nkept\n");
  rig.run();
  CHECK(rig.journal.joined() == "connect;line pause;line kept;");  // lines already in hand are delivered
  client->send("later\n");
  rig.run();
  CHECK(rig.journal.joined() == "connect;line pause;line kept;");  // nothing read while paused
  CHECK(rig.session().input_paused());
  rig.session().resume_input();
  rig.run();
  CHECK(rig.journal.joined() == "connect;line pause;line kept;line later;");
}

TEST_CASE("a reset while input is paused ends the session and resuming first cancels the watch", "[engine][session]") {
  Rig rig;
  auto client = rig.connect();
  client->send("pause\n");
  rig.run();
  CHECK(client->watching_reset());
  rig.session().resume_input();  // the watch ends before the read starts (the fake checks)
  rig.run();
  CHECK_FALSE(client->watching_reset());
  CHECK(client->reading());
  client->send("pause\n");
  rig.run();
  CHECK(client->watching_reset());
  client->reset_by_client();
  rig.run();
  CHECK(client->closed);
  CHECK(rig.journal.joined() == "connect;line pause;line pause;close;");
}

TEST_CASE("an EOF held back while paused comes after the pending input once resumed", "[engine][session]") {
  Rig rig;
  auto client = rig.connect();
  client->send("pause\n");
  rig.run();
  client->finish();
  rig.run();
  CHECK(rig.journal.joined() == "connect;line pause;");
  rig.session().resume_input();
  rig.run();
  CHECK(rig.journal.joined() == "connect;line pause;eof;close;");
  CHECK(client->written == "bye\r\n");
}

TEST_CASE("close() delivers everything queued before the stream ends", "[engine][session]") {
  Rig rig;
  auto client = rig.connect();
  client->room = 10;
  client->send("0123456789abcdef\nclose\n");
  rig.run();
  CHECK_FALSE(client->shut_down);  // the reply is still queued
  CHECK(rig.session().phase() == SessionImpl::Phase::closing);
  client->drain();
  rig.run();
  CHECK(client->written == "0123456789abcdef\r\n");
  CHECK(client->shut_down);
  CHECK(rig.journal.joined() == "connect;line 0123456789abcdef;line close;close;");
}

TEST_CASE("at EOF the last unterminated line comes first - then on_eof - the flush and on_close",
          "[engine][session]") {
  Rig rig;
  auto client = rig.connect();
  client->send("a\nlast");
  client->finish();
  rig.run();
  rig.run();
  CHECK(rig.journal.joined() == "connect;line a;line last;eof;close;");
  CHECK(client->written == "a\r\nlast\r\nbye\r\n");
  CHECK(client->shut_down);
}

TEST_CASE("a line longer than max_line ends the session with an error line", "[engine][session]") {
  Rig rig(small_limits());
  auto client = rig.connect();
  client->send(std::string(100, 'z'));
  rig.run();
  rig.run();
  CHECK(client->written == "error: line too long\r\n");
  CHECK(client->shut_down);
}

TEST_CASE("stop(close) delivers each queue before the engine reports it stopped", "[engine]") {
  Rig rig;
  auto client = rig.connect();
  client->room = 3;
  client->send("hello\n");
  rig.run();
  bool stopped = false;
  rig.engine.stop(StopMode::close, std::chrono::seconds(5), [&] { stopped = true; });
  rig.run();
  CHECK_FALSE(stopped);  // output still queued
  client->drain();
  rig.run();
  CHECK(client->written == "hello\r\n");
  CHECK(stopped);
}

// --- room fan-out: the output mark, the stall watch, flood control --------------------------------

namespace {

// Limits for the fan-out tests: a mark of 1000 bytes well below max_output.
SessionLimits fanout_limits(Duration stall = std::chrono::seconds(5)) {
  SessionLimits limits;
  limits.max_output = 64 * 1024;
  limits.room_output_mark = 1000;
  limits.output_stall_timeout = stall;
  return limits;
}

// Two members of room "r": a sender and a recipient whose socket takes nothing.
struct Room2 {
  explicit Room2(Rig& rig) : rig(rig) {
    sender = rig.connect();
    recipient = rig.connect();
    sender->send("join\n");
    recipient->send("join\n");
    rig.run();
    recipient->room = 0;
  }
  Rig& rig;
  std::shared_ptr<FakeTransport> sender, recipient;
};

}  // namespace

TEST_CASE("a room message that leaves a member above the mark holds its sender until the member drains",
          "[engine][fanout]") {
  Rig rig(fanout_limits());
  Room2 room(rig);
  room.sender->send("say 600\nsay 600\n");
  rig.run();
  CHECK(rig.session(1).queued() == 1202);
  CHECK(rig.session(0).held_by() == 1);
  CHECK_FALSE(room.sender->reading());  // the sender's input waits, its client's kernel buffers fill
  room.sender->send("say 10\n");
  rig.run();
  CHECK(rig.count("line say 10") == 0);
  room.recipient->drain();
  rig.run();
  CHECK(rig.session(0).held_by() == 0);
  CHECK(rig.count("line say 10") == 1);  // read again once the member is below the mark
  CHECK(room.recipient->written == std::string(600, 'm') + "\n" + std::string(600, 'm') + "\n" + std::string(10, 'm') + "\n");
  CHECK(rig.session(1).is_open());
}

TEST_CASE("below the mark a room message holds nobody", "[engine][fanout]") {
  Rig rig(fanout_limits());
  Room2 room(rig);
  room.sender->send("say 900\n");
  rig.run();
  CHECK(rig.session(1).queued() == 901);
  CHECK(rig.session(0).held_by() == 0);
  CHECK(room.sender->reading());
}

TEST_CASE("a member above the mark that takes nothing for output_stall_timeout is cut and frees its sender",
          "[engine][fanout]") {
  Rig rig(fanout_limits(50ms));
  Room2 room(rig);
  room.sender->send("say 600\nsay 600\n");
  rig.run();
  room.sender->send("say 10\n");
  rig.run();
  REQUIRE(rig.session(0).held_by() == 1);
  rig.run_for(20ms);
  CHECK_FALSE(room.recipient->closed);  // not stalled for long yet
  rig.run_for(100ms);
  CHECK(room.recipient->closed);
  CHECK_FALSE(room.recipient->shut_down);  // cut, not ended gracefully
  CHECK(rig.session(0).held_by() == 0);
  CHECK(rig.count("line say 10") == 1);
  CHECK(rig.session(0).is_open());
}

TEST_CASE("a member that keeps taking bytes is never cut for being slower than its sender", "[engine][fanout]") {
  Rig rig(fanout_limits(60ms));
  Room2 room(rig);
  room.sender->send("say 600\nsay 600\nsay 600\nsay 600\n");  // the rest of a read is delivered
  rig.run();
  REQUIRE(rig.session(1).queued() == 2404);
  for (int i = 0; i < 8; ++i) {  // 160 ms in all, 50 bytes every 20 ms: always above the mark
    room.recipient->drain(50);
    rig.run_for(20ms);
  }
  CHECK(rig.session(1).is_open());
  CHECK(rig.session(1).queued() == 2004);
  CHECK(rig.session(0).held_by() == 1);  // the sender still waits on it
  room.recipient->drain();
  rig.run();
  CHECK(rig.session(0).held_by() == 0);
  CHECK(room.sender->reading());
}

TEST_CASE("a member cut at max_output frees the sender it held", "[engine][fanout]") {
  SessionLimits limits = fanout_limits();
  limits.max_output = 4096;
  Rig rig(limits);
  Room2 room(rig);
  room.sender->send("say 2000\nsay 2000\nsay 2000\n");  // the third passes max_output
  rig.run();
  CHECK(room.recipient->closed);
  CHECK(rig.session(0).held_by() == 0);
  CHECK(room.sender->reading());
}

TEST_CASE("a token bucket runs into debt and tells how long it takes to pay back", "[engine][fanout]") {
  const auto start = TokenBucket::Clock::now();
  const auto milliseconds = [](TokenBucket::Clock::duration wait) {
    return std::chrono::round<std::chrono::milliseconds>(wait).count();
  };
  TokenBucket bucket(10, 5, start);
  CHECK(milliseconds(bucket.take(5, start)) == 0);  // the burst
  CHECK(milliseconds(bucket.take(1, start)) == 100);  // one line in debt at 10 a second
  CHECK(milliseconds(bucket.take(1, start + 200ms)) == 0);  // paid back, and one more
  CHECK(milliseconds(bucket.take(0, start + 10s)) == 0);
  CHECK(milliseconds(bucket.take(7, start + 10s)) == 200);  // saved up no more than the burst
}

TEST_CASE("past max_input_rate a client is not read until its bucket refills and keeps its session",
          "[engine][fanout]") {
  SessionLimits limits;
  limits.max_input_rate = 20;
  limits.max_input_burst = 2;
  Rig rig(limits);
  auto client = rig.connect();
  client->send("a\nb\nc\nd\n");  // two lines past the burst: 100 ms of debt
  rig.run();
  CHECK(rig.journal.joined() == "connect;line a;line b;line c;line d;");
  CHECK_FALSE(client->reading());
  client->send("e\n");
  rig.run_for(30ms);
  CHECK(rig.count("line e") == 0);
  rig.run_for(200ms);
  CHECK(rig.count("line e") == 1);
  CHECK(rig.session().is_open());
}
