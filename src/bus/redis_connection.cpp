#include "bus/redis_connection.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <fmt/format.h>

#include "netserver/log.hpp"

namespace netserver::bus {

namespace asio = boost::asio;
using boost::system::error_code;

// The adapter proper: hiredis says what it wants to wait for (read, write) until it says it no
// longer does; Asio's async_wait is one-shot, so each completed wait re-arms while the interest
// lasts. Handlers hold the Watch alive; after cleanup (the context is gone) they do nothing.
struct RedisConnection::Watch : std::enable_shared_from_this<Watch> {
  Watch(asio::io_context& io, redisAsyncContext* context) : descriptor(io, context->c.fd), context(context) {}

  asio::posix::stream_descriptor descriptor;
  redisAsyncContext* context;
  bool want[2] = {false, false};     // [0] read, [1] write
  bool waiting[2] = {false, false};  // an async_wait is pending

  void arm(int which) {
    if (!want[which] || waiting[which] || context == nullptr) return;
    waiting[which] = true;
    const auto kind = which == 0 ? asio::posix::stream_descriptor::wait_read : asio::posix::stream_descriptor::wait_write;
    descriptor.async_wait(kind, [self = shared_from_this(), which](const error_code& error) {
      self->waiting[which] = false;
      if (error || self->context == nullptr || !self->want[which]) return;
      if (which == 0) redisAsyncHandleRead(self->context);
      else redisAsyncHandleWrite(self->context);
      self->arm(which);  // a no-op when the context went away meanwhile
    });
  }

  static Watch& of(void* data) { return *static_cast<Watch*>(data); }
  static void add_read(void* data) { of(data).want[0] = true, of(data).arm(0); }
  static void del_read(void* data) { of(data).want[0] = false; }
  static void add_write(void* data) { of(data).want[1] = true, of(data).arm(1); }
  static void del_write(void* data) { of(data).want[1] = false; }
  // hiredis is about to close the descriptor: stop watching it without closing it ourselves.
  static void cleanup(void* data) {
    Watch& watch = of(data);
    watch.context = nullptr;
    watch.want[0] = watch.want[1] = false;
    watch.descriptor.release();  // cancels the pending waits
  }
};

namespace {

// A command's reply callback, owned by hiredis until the reply (or NULL, at teardown) arrives.
struct Pending {
  RedisConnection::Reply reply;
};

std::string error_of(const redisAsyncContext* context, const char* otherwise) {
  return context != nullptr && context->errstr != nullptr && context->errstr[0] != '\0' ? context->errstr : otherwise;
}

}  // namespace

RedisConnection::RedisConnection(asio::io_context& io, RedisAddress address, double connect_timeout, std::string role)
    : io_(io),
      address_(std::move(address)),
      connect_timeout_(connect_timeout),
      role_(std::move(role)),
      deadline_(io) {}

RedisConnection::~RedisConnection() {
  alive_.reset();
  failed_ = true;
  close_context();
}

std::string RedisConnection::describe() const { return role_ + " " + address_.display(); }

void RedisConnection::open(std::function<void()> ready, std::function<void(const std::string&)> failed) {
  ready_ = std::move(ready);
  failed_callback_ = std::move(failed);
  deadline_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(connect_timeout_)));
  // Destroying the timer does not take back a completion already queued (the deadline expired in
  // the same turn as the owner retired this connection): the handler checks that it still exists.
  std::weak_ptr<bool> alive = alive_;
  deadline_.async_wait([this, alive](const error_code& error) {
    if (!error && !alive.expired()) fail(fmt::format("no answer within {} s (connect, AUTH, PING)", connect_timeout_));
  });
  if (address_.is_unix()) return connect_to("");
  error_code not_numeric;
  const asio::ip::address numeric = asio::ip::make_address(address_.host, not_numeric);
  if (!not_numeric) return connect_to(numeric.to_string());
  resolve();
}

// getaddrinfo blocks, and the loop runs without locks on one thread (asio's own async resolver
// needs a second one): a short-lived thread resolves and reports through a socket pair the loop
// watches (a socket, not a pipe: if the connection is gone by then, send() fails instead of
// raising SIGPIPE). Every address of the name is kept, in getaddrinfo's order: "localhost" may
// be ::1 and 127.0.0.1 while Redis listens on only one of them.
void RedisConnection::resolve() {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, ends) != 0)
    return fail(fmt::format("socketpair() for resolving {}: {}", address_.host, std::strerror(errno)));
  auto answer = std::make_shared<std::vector<std::string>>();
  auto error = std::make_shared<std::string>();
  std::thread([host = address_.host, answer, error, done = ends[1]] {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int status = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
    if (status != 0) *error = ::gai_strerror(status);
    for (const addrinfo* at = found; at != nullptr; at = at->ai_next) {
      char text[INET6_ADDRSTRLEN] = {};
      if (::getnameinfo(at->ai_addr, at->ai_addrlen, text, sizeof text, nullptr, 0, NI_NUMERICHOST) != 0) continue;
      if (std::find(answer->begin(), answer->end(), text) == answer->end()) answer->push_back(text);
    }
    if (status == 0 && answer->empty()) *error = "no numeric address";
    if (found != nullptr) ::freeaddrinfo(found);
    [[maybe_unused]] const ssize_t ignored = ::send(done, "x", 1, MSG_NOSIGNAL);
    ::close(done);
  }).detach();
  resolving_ = std::make_unique<asio::posix::stream_descriptor>(io_, ends[0]);
  std::weak_ptr<bool> alive = alive_;
  resolving_->async_wait(asio::posix::stream_descriptor::wait_read, [this, alive, answer, error](const error_code& failed) {
    if (alive.expired() || failed) return;
    resolving_.reset();
    if (!error->empty()) return fail(fmt::format("cannot resolve {}: {}", address_.host, *error));
    candidates_ = std::move(*answer);
    try_next_address("");
  });
}

// Connects to the next resolved address; `why` is how the previous one failed ("" at first).
void RedisConnection::try_next_address(const std::string& why) {
  if (candidates_.empty()) return fail(why);
  const std::string ip = candidates_.front();
  candidates_.erase(candidates_.begin());
  if (!why.empty()) log::debug("bus: {}: {}; trying {}", describe(), why, ip);
  connect_to(ip);
}

void RedisConnection::connect_to(const std::string& ip) {
  ip_ = ip;
  context_ = address_.is_unix() ? redisAsyncConnectUnix(address_.path.c_str()) : redisAsyncConnect(ip.c_str(), address_.port);
  if (context_ == nullptr) return fail("redisAsyncConnect(): out of memory");
  if (context_->err) {
    const std::string error = fmt::format("connect({}): {}", ip.empty() ? address_.path : ip, error_of(context_, "connect failed"));
    redisAsyncFree(context_);
    context_ = nullptr;
    return try_next_address(error);
  }
  ::fcntl(context_->c.fd, F_SETFD, FD_CLOEXEC);  // a restart's exec must not inherit it
  attach();
}

void RedisConnection::attach() {
  watch_ = std::make_shared<Watch>(io_, context_);
  context_->ev.data = watch_.get();
  context_->ev.addRead = &Watch::add_read;
  context_->ev.delRead = &Watch::del_read;
  context_->ev.addWrite = &Watch::add_write;
  context_->ev.delWrite = &Watch::del_write;
  context_->ev.cleanup = &Watch::cleanup;
  context_->data = this;
  redisAsyncSetConnectCallback(context_, &RedisConnection::on_connect);
  redisAsyncSetDisconnectCallback(context_, &RedisConnection::on_disconnect);
}

// A refused address is followed by the name's next one (from the loop: hiredis frees this
// context when the callback returns).
void RedisConnection::on_connect(const redisAsyncContext* context, int status) {
  auto* self = static_cast<RedisConnection*>(context->data);
  if (status == REDIS_OK) return self->handshake();
  self->context_ = nullptr;  // hiredis frees it when this returns
  const std::string error = fmt::format("connect({}): {}", self->connecting_to(), error_of(context, "refused"));
  if (self->candidates_.empty()) return self->report_failure(error);
  std::weak_ptr<bool> alive = self->alive_;
  asio::post(self->io_, [self, alive, error] {
    if (!alive.expired() && !self->failed_) self->try_next_address(error);
  });
}

void RedisConnection::on_disconnect(const redisAsyncContext* context, int) {
  auto* self = static_cast<RedisConnection*>(context->data);
  self->context_ = nullptr;  // hiredis frees it when this returns
  self->open_ = false;
  if (!self->closing_) self->report_failure(error_of(context, "connection closed by Redis"));
}

// AUTH (on every new connection), then PING: a PING answered means commands are accepted, and
// an error ("NOAUTH Authentication required", "WRONGPASS ...") is reported as it came.
void RedisConnection::handshake() {
  auto check = [this](const char* step) {
    return [this, step](const redisReply& reply) {
      if (reply.type == REDIS_REPLY_ERROR) report_failure(fmt::format("{} refused: {}", step, std::string(reply.str, reply.len)));
    };
  };
  if (!address_.password.empty()) command({"AUTH", address_.password}, check("AUTH"));
  command({"PING"}, [this, check](const redisReply& reply) {
    check("PING")(reply);
    if (reply.type == REDIS_REPLY_ERROR || failed_) return;
    if (require_master_) return check_role();
    handshake_done();
  });
}

// ROLE's first element is "master", "slave" or "sentinel"; only a master is used. A replica
// answering where the master was means a failover happened: the owner asks the Sentinels again.
void RedisConnection::check_role() {
  command({"ROLE"}, [this](const redisReply& reply) {
    if (failed_) return;
    if (reply.type == REDIS_REPLY_ERROR)
      return report_failure(fmt::format("ROLE refused: {}", std::string(reply.str, reply.len)));
    const redisReply* first = reply.type == REDIS_REPLY_ARRAY && reply.elements > 0 ? reply.element[0] : nullptr;
    const std::string role = first != nullptr && first->str != nullptr ? std::string(first->str, first->len) : "?";
    if (role != "master") return report_failure(fmt::format("ROLE says '{}', not master: a replica is never written to", role));
    handshake_done();
  });
}

void RedisConnection::handshake_done() {
  deadline_.cancel();
  open_ = true;
  if (ready_) ready_();
}

bool RedisConnection::command(const std::vector<std::string>& argv, Reply reply) {
  if (context_ == nullptr || failed_) return false;
  std::vector<const char*> words;
  std::vector<std::size_t> lengths;
  for (const std::string& word : argv) {
    words.push_back(word.data());
    lengths.push_back(word.size());
  }
  auto* pending = new Pending{std::move(reply)};
  if (redisAsyncCommandArgv(context_, &RedisConnection::on_reply, pending, static_cast<int>(argv.size()), words.data(),
                            lengths.data()) != REDIS_OK) {
    delete pending;
    return false;
  }
  flush_soon();
  return true;
}

// Commands queued during one turn of the loop (the 50 lines read from 50 clients in one turn
// become 50 PUBLISHes) leave in one write when the handlers already due have run: one syscall
// instead of 50, and Redis handles them in one pass and answers its subscribers in one write
// each. No added wait: the posted flush runs in the same turn, before the loop polls again.
void RedisConnection::flush_soon() {
  if (flush_posted_) return;
  flush_posted_ = true;
  std::weak_ptr<bool> alive = alive_;
  asio::post(io_, [this, alive] {
    if (alive.expired()) return;
    flush_posted_ = false;
    flush_now();
  });
}

bool RedisConnection::subscription(const char* verb, const std::string& channel) {
  if (!open_ || context_ == nullptr) return false;
  const char* words[] = {verb, channel.data()};
  const std::size_t lengths[] = {std::strlen(verb), channel.size()};
  if (redisAsyncCommandArgv(context_, &RedisConnection::on_subscription_reply, this, 2, words, lengths) != REDIS_OK)
    return false;
  flush_now();
  return true;
}

void RedisConnection::on_reply(redisAsyncContext*, void* reply, void* data) {
  std::unique_ptr<Pending> pending(static_cast<Pending*>(data));
  if (reply != nullptr && pending->reply) pending->reply(*static_cast<const redisReply*>(reply));
}

// hiredis keeps one callback per subscribed channel and calls it for every message, with the
// same `data`; at teardown it calls it once more with NULL.
void RedisConnection::on_subscription_reply(redisAsyncContext*, void* reply, void* data) {
  auto* self = static_cast<RedisConnection*>(data);
  if (reply != nullptr && self->push_) self->push_(*static_cast<const redisReply*>(reply));
}

void RedisConnection::flush_now() {
  if (context_ == nullptr || (context_->c.flags & REDIS_IN_CALLBACK) || !(context_->c.flags & REDIS_CONNECTED)) return;
  redisAsyncHandleWrite(context_);  // writes what the socket takes now; the rest waits for the loop
}

void RedisConnection::read_now() {
  if (context_ == nullptr || (context_->c.flags & REDIS_IN_CALLBACK) || !(context_->c.flags & REDIS_CONNECTED)) return;
  pollfd readable{context_->c.fd, POLLIN, 0};
  if (::poll(&readable, 1, 0) == 1) redisAsyncHandleRead(context_);
}

void RedisConnection::flush_before_exit(double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  // A queued command always starts with '*' (RESP); an empty output buffer is "".
  while (context_ != nullptr && open_ && context_->c.obuf != nullptr && context_->c.obuf[0] != '\0') {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return;
    pollfd writable{context_->c.fd, POLLOUT, 0};
    if (::poll(&writable, 1, static_cast<int>(left.count())) <= 0) return;
    redisAsyncHandleWrite(context_);
  }
}

void RedisConnection::report_failure(const std::string& error) {
  std::weak_ptr<bool> alive = alive_;
  asio::post(io_, [this, alive, error] {
    if (!alive.expired()) fail(error);
  });
}

// The one way out: the context is freed here (never inside a hiredis callback: failures found
// there are posted), and `failed` runs once. The owner may destroy this object from `failed`.
void RedisConnection::fail(const std::string& error) {
  if (failed_) return;
  failed_ = true;
  open_ = false;
  deadline_.cancel();
  resolving_.reset();
  close_context();
  auto failed = std::move(failed_callback_);
  if (failed) failed(error);
}

void RedisConnection::close_context() {
  if (context_ == nullptr) return;
  closing_ = true;
  redisAsyncContext* context = context_;
  context_ = nullptr;
  redisAsyncFree(context);
}

}  // namespace netserver::bus
