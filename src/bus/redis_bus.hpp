#pragma once
// The Redis bus of one process: one subscriber and one publisher connection, reconnected forever
// with capped exponential backoff, every room resubscribed after a reconnect, and a liveness probe
// (a message published to a channel the subscriber listens to: PING does not work on a
// subscribed hiredis 0.14 connection) that catches a silent subscriber. With redis-sentinel://
// each connection attempt first asks the Sentinels where the master is, both connections check
// ROLE, and one Sentinel connection stays subscribed to +switch-master while the bus is up.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bus/envelope.hpp"
#include "bus/redis_address.hpp"
#include "bus/redis_connection.hpp"

namespace netserver::bus {

/// How the bus behaves; from the `bus*` configuration keys.
struct BusSettings {
  RedisAddress address;
  std::string sentinel_password; ///< AUTH for the Sentinels of a redis-sentinel:// address; empty: none
  std::string prefix;            ///< channel and key prefix ("chat": channels "chat:room:NAME")
  double connect_timeout = 2;    ///< seconds for connect + AUTH + PING
  double probe_interval = 5;     ///< seconds between liveness probes (and the time one may take)
  double backoff_initial = 0.1;  ///< first delay before reconnecting, doubled per failure ...
  double backoff_max = 10;       ///< ... up to this
  double presence_ttl = 60;      ///< seconds a member's presence entry lives without a heartbeat
  double heartbeat = 25;         ///< seconds between presence refreshes
  std::string secret;            ///< bus_secret (or bus_secret_file's content); empty: none
  std::int64_t history = 0;      ///< bus_history: messages kept per room in a Redis Stream; 0: pub/sub only
  /// Seconds an own message may stay un-echoed by Redis before this process delivers it (and
  /// what it publishes next) to its own members at once: min(1, probe_interval).
  double confirm_grace() const { return probe_interval < 1 ? probe_interval : 1.0; }
};

/// A room as the bus sees it. Calls come from the bus on the loop.
class BusListener {
 public:
  virtual ~BusListener() = default;
  /// The room's subscription is confirmed (again after every reconnect).
  virtual void subscribed() = 0;
  /// A message of the room came back from Redis.
  virtual void delivered(const Envelope& envelope) = 0;
  /// The bus is up (again): presence entries are written anew.
  virtual void came_up() = 0;
  /// The bus is down: whoever waits for a subscription is let in locally.
  virtual void went_down() = 0;
  /// Time to refresh this process's presence entries.
  virtual void heartbeat() = 0;
};

class RedisBus {
 public:
  /// Starts connecting at once (in the process that serves: create it after any fork).
  RedisBus(boost::asio::io_context& io, BusSettings settings);
  /// Gives queued commands (presence removals) a moment to leave, then closes both connections.
  ~RedisBus();
  RedisBus(const RedisBus&) = delete;
  RedisBus& operator=(const RedisBus&) = delete;

  /// Subscribes to `room` (now, or as soon as the bus is up) on behalf of `listener`.
  void attach(const std::string& room, BusListener& listener);
  /// Unsubscribes from `room` (its last local member left).
  void detach(const std::string& room);
  /// True while both connections work and the probe channel is subscribed.
  bool is_up() const { return state_ == State::up; }
  /// True until the first connection attempt has succeeded or failed.
  bool is_starting() const { return state_ == State::starting; }
  /// Publishes `payload` to `room` in an envelope naming this process and `session` (the one
  /// to leave out), tagged with bus_secret if set. False when the bus is down: the caller
  /// delivers locally. This process's own members get the message when Redis echoes it back
  /// (one order for everyone); one Redis has not echoed within confirm_grace() is delivered
  /// here at once, and so is what is published while such a message is overdue; messages never
  /// confirmed when the bus goes down are delivered here then and counted as maybe lost.
  bool publish(const std::string& room, std::uint64_t session, std::string_view payload);
  /// A command on the publisher connection; false when the bus is down.
  bool command(const std::vector<std::string>& argv, RedisConnection::Reply reply = {});
  /// Writes what both connections have queued, now (a PreFork child may stop its loop next).
  void flush_now();
  /// Counts a message that reached only this process; logged once per outage.
  void count_local_only();
  /// Counts a message from Redis this process did not deliver (`why`: "without a valid
  /// bus_secret tag", ...); the count is logged at once, then at most once a minute.
  void count_dropped(const std::string& channel, std::string_view why);
  /// What the bus dropped since it was made (every reason).
  std::uint64_t dropped() const { return dropped_total_; }
  /// The bus_secret tag of a presence record written under `field` (empty without a secret).
  std::string presence_tag(std::string_view field, std::string_view record_bytes) const;
  /// True when `record`, read from `field`, may be shown: always without a secret, else when it
  /// carries a valid tag (a record written by a program without the key is skipped).
  bool trusts(std::string_view field, const PresenceRecord& record) const;
  /// This process's identity on the bus: "host:pid:random", made when the bus is.
  const std::string& identity() const { return identity_; }
  /// The settings.
  const BusSettings& settings() const { return settings_; }
  /// This process is a fork()ed copy whose parent exec'd (a HUP's drainer): it owns the
  /// connections now, and the rooms rewrite their presence entries with its pid (posted: this
  /// may be called from inside the bus's own callbacks).
  void adopt();
  /// A Redis key or channel of this program: "<prefix>:<kind>:<room>".
  std::string key(std::string_view kind, std::string_view room) const;

 private:
  enum class State { starting, connecting, up, waiting };
  enum class Subscription { none, subscribing, subscribed, unsubscribing };
  struct Channel {
    std::string room;
    BusListener* listener = nullptr;
    bool wanted = false;
    Subscription state = Subscription::none;
    // bus_history: the room's stream as this process has delivered it
    std::string last_id;                       // stream ID of the last message delivered here
    bool catching_up = false;                  // a read of the stream after (re)subscribing is on its way
    std::vector<std::pair<std::string, std::string>> held;  // (ID, envelope) from pub/sub meanwhile
    std::map<std::string, std::uint64_t, std::less<>> last_sequence;  // by origin: a copy sent again is dropped
    std::uint64_t own_delivered_through = 0;   // own messages up to this sequence were delivered here already
  };

  void connect();
  void open_master(std::uint64_t generation);
  void ask_sentinel(std::uint64_t generation);
  void sentinel_answered(RedisConnection& sentinel, const redisReply& reply);
  void sentinel_failed(const std::string& why);
  void on_sentinel_push(const redisReply& reply);
  void retire(std::unique_ptr<RedisConnection>& connection);
  std::string where() const;
  void connection_ready();
  void connection_failed(const std::string& role, const std::string& error);
  void went_down(const std::string& why);
  void schedule_retry();
  void became_up();
  void on_push(const redisReply& reply);
  void on_subscription(std::string_view kind, const std::string& channel);
  void on_message(const std::string& channel, std::string_view payload);
  void accept(const std::string& name, Channel& channel, std::string_view bytes, const std::string* id);
  void catch_up(const std::string& name, Channel& channel);
  void caught_up(const std::string& name, const redisReply& reply, bool latest_only);
  void keep_for_later(const std::string& room, std::uint64_t session, std::string_view payload);
  void send_kept();
  bool send(const std::string& room, const Envelope& envelope);
  // Own messages not yet back from Redis (issue 19, defect 15): see publish().
  struct Unconfirmed {
    std::string room;
    std::uint64_t sequence = 0;
    std::uint64_t session = 0;
    std::string payload;
    std::chrono::steady_clock::time_point sent;
    bool delivered_here = false;  // given to this process's members without waiting for Redis
  };
  bool echoed(std::uint64_t sequence);
  void confirmed_through(std::uint64_t sequence);
  void redis_answered();
  void deliver_here(Unconfirmed& message);
  void arm_confirm_timer();
  void confirm_overdue();
  void subscribe(Channel& channel);
  void start_probe();
  void probe();
  void start_heartbeat();

  boost::asio::io_context& io_;
  BusSettings settings_;
  std::string identity_;
  std::string probe_channel_;
  State state_ = State::starting;
  std::unique_ptr<RedisConnection> subscriber_;
  std::unique_ptr<RedisConnection> publisher_;
  // redis-sentinel://: the Sentinel being asked or, once the bus is up, watched for +switch-master
  std::unique_ptr<RedisConnection> sentinel_;
  std::size_t sentinel_next_ = 0;    // the Sentinel to ask next: one that answers stays first
  std::size_t sentinels_tried_ = 0;  // in this connection attempt
  std::string sentinel_errors_;      // why each Sentinel tried in this attempt did not answer
  bool watch_lost_logged_ = false;   // the +switch-master watch is gone and that was said
  RedisAddress master_;              // where the connections go: the address, or the master a Sentinel named
  std::vector<std::unique_ptr<RedisConnection>> retired_;  // failed connections, freed from the loop
  int ready_count_ = 0;
  std::uint64_t generation_ = 0;            // of the current pair of connections
  std::map<std::string, Channel, std::less<>> channels_;  // by channel name
  boost::asio::steady_timer retry_timer_;
  boost::asio::steady_timer probe_timer_;
  boost::asio::steady_timer heartbeat_timer_;
  boost::asio::steady_timer confirm_timer_;
  bool confirm_armed_ = false;
  std::deque<Unconfirmed> unconfirmed_;     // in publish order
  std::deque<Unconfirmed> kept_;            // bus_history: delivered here while down, sent when Redis answers
  std::uint64_t kept_overflow_ = 0;         // forgotten from kept_ (bounded by bus_history)
  std::uint64_t unconfirmed_overflow_ = 0;  // forgotten from unconfirmed_ (it is bounded), this outage
  bool stalled_ = false;                    // own messages overdue: what is published is delivered here at once
  std::uint64_t publish_sequence_ = 0;
  std::uint64_t maybe_lost_ = 0;            // published before an outage was noticed, not confirmed
  std::uint64_t dropped_total_ = 0;
  std::uint64_t dropped_unlogged_ = 0;
  std::chrono::steady_clock::time_point dropped_logged_;
  int failures_ = 0;                        // in this outage
  bool probe_outstanding_ = false;
  std::chrono::steady_clock::time_point probe_due_;
  std::chrono::steady_clock::time_point down_since_;
  std::uint64_t local_only_ = 0;            // messages that reached only this process, this outage
  bool ever_up_ = false;
  pid_t owner_;                             // the process that made the bus
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace netserver::bus
