#pragma once
// One connection to Redis, driven by the process's Asio event loop: hiredis's async API with its
// event hooks (addRead/delRead/addWrite/delWrite/cleanup) mapped onto
// posix::stream_descriptor::async_wait. The descriptor belongs to hiredis: the adapter watches it
// and releases it, never closes it.

#include <hiredis/async.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bus/redis_address.hpp"

namespace netserver::bus {

/// A connection to Redis. Never blocks the loop: host names are resolved on a helper thread
/// before hiredis connects (hiredis's own getaddrinfo would block), the connect and the handshake (AUTH, PING)
/// are bounded by a timer. Not thread-safe. Destroy it only from the loop, never from inside one
/// of its own callbacks (failures are reported through asio::post for that reason).
class RedisConnection {
 public:
  /// A reply to a command; only called with a real reply, never during teardown.
  using Reply = std::function<void(const redisReply& reply)>;

  /// `role` names the connection in logs ("subscriber", "publisher").
  RedisConnection(boost::asio::io_context& io, RedisAddress address, double connect_timeout, std::string role);
  /// Frees the hiredis context; pending replies are dropped (hiredis hands them over as NULL).
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  /// Resolves, connects, sends AUTH (when the address has a password) and PING. `ready` runs
  /// once the PING is answered; `failed` runs once, with what went wrong, if the handshake fails
  /// or times out or, after `ready`, the connection is lost. Call once.
  void open(std::function<void()> ready, std::function<void(const std::string&)> failed);
  /// Before open(): the handshake asks ROLE after PING, and a server that is not a master (a
  /// replica, a Sentinel) fails the connection: the bus never writes to a replica.
  void require_master() { require_master_ = true; }
  /// True between `ready` and a failure.
  bool is_open() const { return open_; }
  /// Sends a command (binary-safe arguments); false when the connection is not open.
  bool command(const std::vector<std::string>& argv, Reply reply = {});
  /// Sends SUBSCRIBE or UNSUBSCRIBE for `channel`; its confirmations and the channel's messages
  /// go to the push handler. False when the connection is not open.
  bool subscription(const char* verb, const std::string& channel);
  /// Where subscription confirmations and messages go (arrays as Redis sends them).
  void on_push(std::function<void(const redisReply& reply)> push) { push_ = std::move(push); }
  /// Writes what hiredis has queued now, without waiting for the loop (a PreFork child stops its
  /// loop when its session ends; what it queued last must still leave). Never blocks. command()
  /// writes by itself, once per turn of the loop (see flush_soon).
  void flush_now();
  /// Reads and handles what has arrived, without waiting for the loop (the loop may have been
  /// paused: a PreFork child between clients). Never blocks.
  void read_now();
  /// Writes what is queued, waiting at most `seconds` (at exit, after the loop stopped).
  void flush_before_exit(double seconds);
  /// "subscriber redis://127.0.0.1:6379", for log lines.
  std::string describe() const;

 private:
  struct Watch;
  static void on_connect(const redisAsyncContext* context, int status);
  static void on_disconnect(const redisAsyncContext* context, int status);
  static void on_reply(redisAsyncContext* context, void* reply, void* data);
  static void on_subscription_reply(redisAsyncContext* context, void* reply, void* data);

  void resolve();
  void try_next_address(const std::string& why);
  void connect_to(const std::string& ip);
  std::string connecting_to() const { return address_.is_unix() ? address_.path : ip_; }
  void attach();
  void handshake();
  void check_role();
  void handshake_done();
  void fail(const std::string& error);
  void report_failure(const std::string& error);
  void flush_soon();
  void close_context();

  boost::asio::io_context& io_;
  RedisAddress address_;
  double connect_timeout_;
  std::string role_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> resolving_;  // a resolver thread's answer
  std::vector<std::string> candidates_;   // resolved addresses not tried yet
  std::string ip_;                        // the address being connected to
  boost::asio::steady_timer deadline_;
  redisAsyncContext* context_ = nullptr;  // owned by hiredis once it reports a disconnect
  std::shared_ptr<Watch> watch_;
  bool open_ = false;
  bool closing_ = false;                  // we are freeing the context ourselves
  bool failed_ = false;
  bool require_master_ = false;
  bool flush_posted_ = false;             // a flush_now() is posted for this turn of the loop
  std::function<void()> ready_;
  std::function<void(const std::string&)> failed_callback_;
  std::function<void(const redisReply&)> push_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for posted failure reports
};

}  // namespace netserver::bus
