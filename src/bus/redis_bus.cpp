#include "bus/redis_bus.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <random>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "metrics_engine.hpp"
#include "netserver/log.hpp"

namespace netserver::bus {

namespace asio = boost::asio;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

Clock::duration after(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

// Made in the process that uses the bus, after any fork: two PreFork children never share one.
std::string make_identity() {
  std::random_device random;
  const std::uint64_t nonce = (std::uint64_t{random()} << 32) | random();
  return fmt::format("{}:{}:{:016x}", host_name().substr(0, 200), ::getpid(), nonce);
}

// bus_history: the message goes into the room's stream (trimmed to about bus_history entries) and,
// in the same atomic step, to the room's channel prefixed with its stream ID, so that pub/sub
// order is stream order and every copy names its place in the history.
constexpr const char* history_script =
    "local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2]) "
    "redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2]) return id";

// Stream IDs are "MILLISECONDS-SEQUENCE"; true when `a` comes after `b`.
bool later_id(std::string_view a, std::string_view b) {
  auto parts = [](std::string_view id) {
    std::uint64_t ms = 0, seq = 0;
    const std::size_t dash = id.find('-');
    std::from_chars(id.data(), id.data() + std::min(dash, id.size()), ms);
    if (dash != std::string_view::npos) std::from_chars(id.data() + dash + 1, id.data() + id.size(), seq);
    return std::pair{ms, seq};
  };
  return parts(a) > parts(b);
}

// Errors a retry will not cure by itself: said loudly on every attempt.
bool is_refusal(const std::string& error) {
  return error.find("AUTH refused") != std::string::npos || error.find("NOAUTH") != std::string::npos ||
         error.find("WRONGPASS") != std::string::npos ||
         error.find("NOPERM") != std::string::npos || error.find("invalid password") != std::string::npos;
}

std::string_view text_of(const redisReply& reply) {
  return reply.str == nullptr ? std::string_view() : std::string_view(reply.str, reply.len);
}

}  // namespace

RedisBus::RedisBus(asio::io_context& io, BusSettings settings)
    : io_(io),
      settings_(std::move(settings)),
      identity_(make_identity()),
      probe_channel_(key("probe", identity_)),
      retry_timer_(io),
      probe_timer_(io),
      heartbeat_timer_(io),
      confirm_timer_(io),
      owner_(::getpid()) {
  down_since_ = Clock::now();
  connect();
}

RedisBus::~RedisBus() {
  alive_.reset();
  // Only the process that made the bus talks on its connections (a forked copy just closes them).
  if (publisher_ && owner_ == ::getpid()) publisher_->flush_before_exit(0.2);
}

void RedisBus::adopt() {
  owner_ = ::getpid();
  std::weak_ptr<bool> alive = alive_;
  asio::post(io_, [this, alive] {
    if (alive.expired() || state_ != State::up) return;  // else came_up() rewrites them on reconnect
    for (auto& [name, channel] : channels_)
      if (channel.listener) channel.listener->came_up();
  });
}

std::string RedisBus::key(std::string_view kind, std::string_view room) const {
  return fmt::format("{}:{}:{}", settings_.prefix, kind, room);
}

// --- connecting ------------------------------------------------------------------------------

void RedisBus::connect() {
  if (state_ != State::up) engine_metrics().bus_up.set(0);  // a process with a bus says whether it is up
  if (state_ != State::starting) state_ = State::connecting;
  const std::uint64_t generation = ++generation_;
  if (!settings_.address.is_sentinel()) {
    master_ = settings_.address;
    return open_master(generation);
  }
  sentinels_tried_ = 0;
  sentinel_errors_.clear();
  ask_sentinel(generation);
}

// A connection is dropped from the loop, never inside its own callbacks.
void RedisBus::retire(std::unique_ptr<RedisConnection>& connection) {
  if (!connection) return;
  retired_.push_back(std::move(connection));
  std::weak_ptr<bool> alive = alive_;
  asio::post(io_, [this, alive] {
    if (!alive.expired()) retired_.clear();
  });
}

std::string RedisBus::where() const {
  if (!settings_.address.is_sentinel() || master_.host.empty()) return settings_.address.display();
  return fmt::format("{} (master {})", settings_.address.display(), master_.display());
}

// --- Sentinels ---------------------------------------------------------------------------------

// Asks the next Sentinel where the master is (SENTINEL get-master-addr-by-name), on a connection
// that then stays subscribed to +switch-master. Also called from the probe while the bus is up
// and has lost that watch: the answer then only confirms the master (or starts a reconnect).
void RedisBus::ask_sentinel(std::uint64_t generation) {
  const std::vector<RedisEndpoint>& all = settings_.address.sentinels;
  const RedisEndpoint& at = all[sentinel_next_ % all.size()];
  RedisAddress address;
  address.host = at.host;
  address.port = at.port;
  address.password = settings_.sentinel_password;
  retire(sentinel_);
  sentinel_ = std::make_unique<RedisConnection>(io_, std::move(address), settings_.connect_timeout, "sentinel");
  RedisConnection* asked = sentinel_.get();
  asked->on_push([this](const redisReply& reply) { on_sentinel_push(reply); });
  asked->open(
      [this, generation, asked] {
        if (generation != generation_ || asked != sentinel_.get()) return;
        asked->command({"SENTINEL", "get-master-addr-by-name", settings_.address.master_name},
                       [this, generation, asked](const redisReply& reply) {
                         if (generation == generation_ && asked == sentinel_.get()) sentinel_answered(*asked, reply);
                       });
      },
      [this, generation, asked](const std::string& error) {
        if (generation == generation_ && asked == sentinel_.get()) sentinel_failed(fmt::format("{}: {}", asked->describe(), error));
      });
}

void RedisBus::sentinel_answered(RedisConnection& sentinel, const redisReply& reply) {
  if (reply.type == REDIS_REPLY_ERROR) return sentinel_failed(fmt::format("{}: {}", sentinel.describe(), text_of(reply)));
  int port = 0;
  if (reply.type == REDIS_REPLY_ARRAY && reply.elements == 2 && reply.element[0]->type == REDIS_REPLY_STRING &&
      reply.element[1]->type == REDIS_REPLY_STRING) {
    const std::string_view digits = text_of(*reply.element[1]);
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (error != std::errc() || end != digits.data() + digits.size() || port < 1 || port > 65535) port = 0;
  }
  if (port == 0)
    return sentinel_failed(fmt::format("{}: knows no master named \"{}\"", sentinel.describe(), settings_.address.master_name));
  RedisAddress master = settings_.address.master_at(std::string(text_of(*reply.element[0])), port);
  if (state_ == State::up && (master.host != master_.host || master.port != master_.port))
    return went_down(fmt::format("{} names {} as master \"{}\" now", sentinel.describe(), master.display(),
                                 settings_.address.master_name));
  sentinel.subscription("SUBSCRIBE", "+switch-master");
  if (state_ == State::up) return;  // the watch is back; the master stays
  master_ = std::move(master);
  open_master(generation_);
}

// While connecting, the next Sentinel is asked, and when none answers the attempt fails like a
// refused connection (backoff, then all of them again). While up, the lost watch is reopened at
// the next probe, on the next Sentinel; the probe keeps watching the master meanwhile.
void RedisBus::sentinel_failed(const std::string& why) {
  retire(sentinel_);
  ++sentinel_next_;
  if (state_ == State::up) {
    if (!watch_lost_logged_) log::warning("bus: {}; failovers are noticed when the master stops answering until a Sentinel answers", why);
    else log::debug("bus: {}", why);
    watch_lost_logged_ = true;
    return;
  }
  sentinel_errors_ += (sentinel_errors_.empty() ? "" : "; ") + why;
  if (++sentinels_tried_ < settings_.address.sentinels.size()) return ask_sentinel(generation_);
  went_down(fmt::format("no Sentinel of {} named the master: {}", settings_.address.display(), sentinel_errors_));
}

// "+switch-master NAME OLD-IP OLD-PORT NEW-IP NEW-PORT": a failover ended; the bus reconnects,
// through the Sentinels, unless it is on the new master already.
void RedisBus::on_sentinel_push(const redisReply& reply) {
  if (reply.type != REDIS_REPLY_ARRAY || reply.elements < 3) return;
  const std::string_view kind = text_of(*reply.element[0]);
  if (kind == "subscribe") {
    if (watch_lost_logged_) log::info("bus: watching for failovers through the Sentinels again");
    watch_lost_logged_ = false;
    return;
  }
  if (kind != "message") return;
  std::vector<std::string_view> words;
  std::string_view rest = text_of(*reply.element[2]);
  while (!rest.empty()) {
    const std::size_t space = rest.find(' ');
    if (space != 0) words.push_back(rest.substr(0, space));
    if (space == std::string_view::npos) break;
    rest.remove_prefix(space + 1);
  }
  if (words.size() != 5 || words[0] != settings_.address.master_name || state_ == State::waiting) return;
  if (words[3] == master_.host && words[4] == std::to_string(master_.port)) return;
  went_down(fmt::format("Sentinel: master \"{}\" moved from {}:{} to {}:{} (+switch-master)", words[0], words[1], words[2],
                        words[3], words[4]));
}

// --- the master ----------------------------------------------------------------------------------

void RedisBus::open_master(std::uint64_t generation) {
  ready_count_ = 0;
  subscriber_ = std::make_unique<RedisConnection>(io_, master_, settings_.connect_timeout, "subscriber");
  publisher_ = std::make_unique<RedisConnection>(io_, master_, settings_.connect_timeout, "publisher");
  if (settings_.address.is_sentinel()) {
    subscriber_->require_master();
    publisher_->require_master();
  }
  subscriber_->on_push([this](const redisReply& reply) { on_push(reply); });
  for (auto* connection : {subscriber_.get(), publisher_.get()}) {
    const std::string role = connection == subscriber_.get() ? "subscriber" : "publisher";
    connection->open([this] { connection_ready(); },
                     [this, role, generation](const std::string& error) {
                       if (generation == generation_) connection_failed(role, error);  // else already down
                     });
  }
}

// Both connections answer: the subscriber listens to its own probe channel first; the bus is up
// once that subscription is confirmed (on_subscription).
void RedisBus::connection_ready() {
  if (++ready_count_ < 2) return;
  subscriber_->subscription("SUBSCRIBE", probe_channel_);
}

void RedisBus::connection_failed(const std::string& role, const std::string& error) {
  const std::string why = fmt::format("{} connection to {}: {}", role, where(), error);
  went_down(why);
}

// One failure ends both connections: the bus is up only as a whole. Connections are freed from
// the loop, never inside their own callbacks.
void RedisBus::went_down(const std::string& why) {
  ++generation_;  // the other connection's failure, if any, is this one
  const bool was_up = state_ == State::up;
  const bool first_failure = state_ == State::starting || was_up;
  engine_metrics().bus_up.set(0);
  for (auto* connection : {&subscriber_, &publisher_, &sentinel_}) retire(*connection);
  probe_timer_.cancel();
  heartbeat_timer_.cancel();
  confirm_timer_.cancel();
  confirm_armed_ = false;
  for (auto& [name, channel] : channels_) {
    channel.state = Subscription::none;
    channel.catching_up = false;  // what it held is read again from the stream
    channel.held.clear();
  }
  if (was_up || state_ == State::starting) {
    down_since_ = Clock::now();
    local_only_ = 0;
    failures_ = 0;
    maybe_lost_ = 0;
  }
  // What Redis never confirmed may have reached nobody else: this process's members get it now,
  // and the count is said (issue 19, defect 15).
  std::deque<Unconfirmed> unconfirmed = std::move(unconfirmed_);
  unconfirmed_.clear();
  const std::uint64_t lost = unconfirmed.size() + unconfirmed_overflow_;
  unconfirmed_overflow_ = 0;
  stalled_ = false;
  const bool history = settings_.history > 0;
  if (!history) maybe_lost_ += lost;
  std::string lost_text;
  if (lost != 0 && history)
    lost_text = fmt::format("; {} message(s) published since Redis last answered are sent again when it answers (each "
                            "delivered once: the others drop a second copy)",
                            lost);
  else if (lost != 0)
    lost_text = fmt::format("; {} message(s) published since Redis last answered may not have reached the other processes "
                            "(delivered to this process's members)",
                            lost);
  ++failures_;
  if (is_refusal(why)) {
    log::error("bus: {}; serving this process's clients only, retrying{}", why, lost_text);
  } else if (first_failure) {
    log::warning("bus: {}; serving this process's clients only, retrying until Redis answers{}", why, lost_text);
  } else {
    log::info("bus: still down (attempt {}): {}", failures_, why);
  }
  state_ = State::waiting;
  for (Unconfirmed& message : unconfirmed) {  // once down: what a delivery publishes stays here
    if (!message.delivered_here) deliver_here(message);
    if (!history) continue;
    if (auto room = channels_.find(key("room", message.room)); room != channels_.end())
      room->second.own_delivered_through = message.sequence;
    kept_.push_back(std::move(message));
  }
  if (first_failure)
    for (auto& [name, channel] : channels_)
      if (channel.listener) channel.listener->went_down();
  schedule_retry();
}

// Capped exponential backoff with +-20% jitter, so that the children of a pool do not all come
// back in the same millisecond.
void RedisBus::schedule_retry() {
  static thread_local std::minstd_rand jitter(static_cast<unsigned>(::getpid()));
  const double base = std::min(settings_.backoff_max, settings_.backoff_initial * std::pow(2.0, std::min(failures_ - 1, 30)));
  const double delay = base * std::uniform_real_distribution<double>(0.8, 1.2)(jitter);
  retry_timer_.expires_after(after(delay));
  retry_timer_.async_wait([this](const error_code& error) {
    if (!error) connect();
  });
}

void RedisBus::became_up() {
  const bool recovered = ever_up_;
  state_ = State::up;
  engine_metrics().bus_up.set(1);
  if (recovered) engine_metrics().bus_reconnects.add();
  ever_up_ = true;
  const double outage = std::chrono::duration<double>(Clock::now() - down_since_).count();
  if (recovered)
    log::notice("bus: reconnected to {} after {:.1f} s; {} message(s) reached only this process meanwhile, and {} "
                "published before the outage was noticed may be lost",
                where(), outage, local_only_, maybe_lost_);
  else
    log::notice("bus: connected to {} as {} (prefix \"{}\"; {} message(s) before reached only this process)",
                where(), identity_, settings_.prefix, local_only_);
  failures_ = 0;
  local_only_ = 0;
  maybe_lost_ = 0;
  for (auto& [name, channel] : channels_)
    if (channel.wanted) subscribe(channel);
  send_kept();
  for (auto& [name, channel] : channels_)
    if (channel.listener) channel.listener->came_up();
  probe_outstanding_ = false;
  start_probe();
  start_heartbeat();
}

// --- subscriptions ---------------------------------------------------------------------------

void RedisBus::attach(const std::string& room, BusListener& listener) {
  Channel& channel = channels_[key("room", room)];
  channel.room = room;
  channel.listener = &listener;
  channel.wanted = true;
  if (state_ == State::up && channel.state == Subscription::none) subscribe(channel);
}

void RedisBus::detach(const std::string& room) {
  auto it = channels_.find(key("room", room));
  if (it == channels_.end()) return;
  Channel& channel = it->second;
  channel.wanted = false;
  channel.last_id.clear();  // bus_history: whoever joins next hears the room from then on, not its past
  channel.last_sequence.clear();
  if (channel.state == Subscription::subscribed && subscriber_->subscription("UNSUBSCRIBE", it->first))
    channel.state = Subscription::unsubscribing;
}

// hiredis 0.14 keeps one callback per channel and an UNSUBSCRIBE confirmation removes it: a
// SUBSCRIBE sent while an UNSUBSCRIBE is pending would lose its messages. So a channel is
// subscribed again only after its unsubscription is confirmed (on_subscription).
void RedisBus::subscribe(Channel& channel) {
  if (channel.state != Subscription::none) return;
  if (subscriber_ && subscriber_->subscription("SUBSCRIBE", key("room", channel.room)))
    channel.state = Subscription::subscribing;
}

void RedisBus::on_push(const redisReply& reply) {
  if (reply.type != REDIS_REPLY_ARRAY || reply.elements < 3) return;
  const std::string_view kind = text_of(*reply.element[0]);
  const std::string channel(text_of(*reply.element[1]));
  if (kind == "message") return on_message(channel, text_of(*reply.element[2]));
  on_subscription(kind, channel);
}

void RedisBus::on_subscription(std::string_view kind, const std::string& name) {
  if (name == probe_channel_) {
    if (kind == "subscribe" && state_ != State::up) became_up();
    return;
  }
  auto it = channels_.find(name);
  if (it == channels_.end()) return;
  Channel& channel = it->second;
  if (kind == "unsubscribe") {
    channel.state = Subscription::none;
    if (channel.wanted && state_ == State::up) subscribe(channel);
    return;
  }
  if (kind != "subscribe") return;
  channel.state = Subscription::subscribed;
  if (!channel.wanted) {
    if (subscriber_->subscription("UNSUBSCRIBE", name)) channel.state = Subscription::unsubscribing;
    return;
  }
  if (settings_.history > 0) catch_up(name, channel);
  if (channel.listener) channel.listener->subscribed();
}

// --- history (bus_history) ---------------------------------------------------------------------

// Subscribed (again): what the room's stream holds after the last message delivered here is read
// and delivered first; pub/sub copies arriving meanwhile are held, then delivered unless read
// already (the stream ID decides). A room never heard before learns where its stream ends.
void RedisBus::catch_up(const std::string& name, Channel& channel) {
  const bool latest_only = channel.last_id.empty();
  std::vector<std::string> argv =
      latest_only ? std::vector<std::string>{"XREVRANGE", key("history", channel.room), "+", "-", "COUNT", "1"}
                  : std::vector<std::string>{"XRANGE", key("history", channel.room), "(" + channel.last_id, "+", "COUNT",
                                             std::to_string(settings_.history)};
  const std::uint64_t generation = generation_;
  channel.catching_up = publisher_->command(argv, [this, generation, name, latest_only](const redisReply& reply) {
    if (generation == generation_) caught_up(name, reply, latest_only);
  });
}

void RedisBus::caught_up(const std::string& name, const redisReply& reply, bool latest_only) {
  auto it = channels_.find(name);
  if (it == channels_.end() || !it->second.catching_up) return;
  Channel& channel = it->second;
  channel.catching_up = false;
  std::vector<std::pair<std::string, std::string>> held = std::move(channel.held);
  channel.held.clear();
  if (reply.type == REDIS_REPLY_ERROR) log::warning("bus: reading the history of {}: {}", name, text_of(reply));
  std::string latest;
  const std::size_t count = reply.type == REDIS_REPLY_ARRAY ? reply.elements : 0;
  for (std::size_t i = 0; i < count; ++i) {
    const redisReply& entry = *reply.element[i];
    if (entry.type != REDIS_REPLY_ARRAY || entry.elements != 2 || entry.element[1]->type != REDIS_REPLY_ARRAY) continue;
    const std::string id(text_of(*entry.element[0]));
    const redisReply& fields = *entry.element[1];
    for (std::size_t f = 0; f + 1 < fields.elements; f += 2)
      if (text_of(*fields.element[f]) == "e" && !latest_only) accept(name, channel, text_of(*fields.element[f + 1]), &id);
    latest = id;
  }
  if (!latest_only && count == static_cast<std::size_t>(settings_.history))
    log::warning("bus: {}: {} message(s) read back from its history, its whole length (bus_history): older ones this "
                 "process missed are lost",
                 name, count);
  for (const auto& [id, bytes] : held) accept(name, channel, bytes, &id);
  if (latest_only && !latest.empty() && (channel.last_id.empty() || later_id(latest, channel.last_id))) channel.last_id = latest;
}

// Down with bus_history: the message is delivered here by the room and kept to be sent when
// Redis answers again (bounded by bus_history; beyond, the oldest are forgotten and counted).
void RedisBus::keep_for_later(const std::string& room, std::uint64_t session, std::string_view payload) {
  const std::uint64_t sequence = ++publish_sequence_;
  if (auto heard = channels_.find(key("room", room)); heard != channels_.end()) heard->second.own_delivered_through = sequence;
  if (kept_.size() >= static_cast<std::size_t>(settings_.history)) {
    kept_.pop_front();
    ++kept_overflow_;
  }
  kept_.push_back(Unconfirmed{room, sequence, session, std::string(payload), Clock::now(), true});
}

void RedisBus::send_kept() {
  if (kept_.empty() && kept_overflow_ == 0) return;
  std::size_t sent = 0;
  for (const Unconfirmed& message : kept_)
    if (send(message.room, Envelope{identity_, message.session, message.sequence, {}, message.payload})) ++sent;
  log::notice("bus: sent {} message(s) kept while Redis did not answer{}", sent,
              kept_overflow_ == 0 ? std::string()
                                  : fmt::format("; {} older one(s) were forgotten (more than bus_history)", kept_overflow_));
  kept_.clear();
  kept_overflow_ = 0;
}

// One message onto the bus: PUBLISH, or with bus_history the stream and the channel at once.
bool RedisBus::send(const std::string& room, const Envelope& message) {
  const std::string channel = key("room", room);
  Envelope envelope = message;
  if (!settings_.secret.empty()) envelope.tag = bus_tag(settings_.secret, channel, envelope.signed_bytes());
  if (settings_.history == 0) return publisher_->command({"PUBLISH", channel, envelope.encode()});
  return publisher_->command({"EVAL", history_script, "2", key("history", room), channel, std::to_string(settings_.history),
                              envelope.encode()});
}

// The subscriber hands a message over and goes on reading: delivering only queues bytes on the
// members' sessions (a slow client is cut at max_output), so Redis never waits on a client.
// Bytes from Redis are input: a message in an unknown format or, with bus_secret, without a
// valid tag is dropped and counted. An own message is delivered here when it comes back, unless
// it was delivered here already (Redis was late: see publish()).
void RedisBus::on_message(const std::string& name, std::string_view payload) {
  if (name == probe_channel_) {
    probe_outstanding_ = false;
    std::uint64_t through = 0;
    const auto [end, error] = std::from_chars(payload.data(), payload.data() + payload.size(), through);
    if (error == std::errc() && end == payload.data() + payload.size()) confirmed_through(through);
    return;
  }
  auto it = channels_.find(name);
  if (it == channels_.end() || it->second.state != Subscription::subscribed || !it->second.listener) return;
  if (settings_.history == 0) return accept(name, it->second, payload, nullptr);
  const std::size_t space = payload.find(' ');
  if (space == std::string_view::npos) return count_dropped(name, "without a stream ID (bus_history)");
  const std::string id(payload.substr(0, space));
  if (it->second.catching_up) {
    it->second.held.emplace_back(id, std::string(payload.substr(space + 1)));
    return;
  }
  accept(name, it->second, payload.substr(space + 1), &id);
}

// A message of `channel` from Redis; `id` is its stream ID with bus_history (nullptr without):
// one delivered already (read from the stream and heard on the channel, or sent again after an
// outage) is dropped here.
void RedisBus::accept(const std::string& name, Channel& channel, std::string_view bytes, const std::string* id) {
  if (id != nullptr && !channel.last_id.empty() && !later_id(*id, channel.last_id)) return;
  std::optional<Envelope> envelope = Envelope::decode(bytes);
  if (!envelope) return count_dropped(name, "in an unknown format");
  if (!settings_.secret.empty() && !same_tag(envelope->tag, bus_tag(settings_.secret, name, envelope->signed_bytes())))
    return count_dropped(name, "without a valid bus_secret tag");
  if (id != nullptr) {
    channel.last_id = *id;
    auto [last, fresh] = channel.last_sequence.try_emplace(envelope->origin, 0);
    if (!fresh && envelope->sequence <= last->second) return;  // a copy sent again
    last->second = envelope->sequence;
    if (channel.last_sequence.size() > 4096) channel.last_sequence.erase(channel.last_sequence.begin());  // bounded
    if (envelope->origin == identity_ && envelope->sequence <= channel.own_delivered_through) return;
  }
  if (envelope->origin == identity_ && !echoed(envelope->sequence)) return;
  if (!channel.listener) return;
  engine_metrics().bus_received.add();
  channel.listener->delivered(*envelope);
}

void RedisBus::count_dropped(const std::string& channel, std::string_view why) {
  ++dropped_total_;
  ++dropped_unlogged_;
  const Clock::time_point now = Clock::now();
  if (dropped_unlogged_ != dropped_total_ && now - dropped_logged_ < std::chrono::minutes(1)) return;
  log::warning("bus: dropped {} message(s) from Redis since the last report ({} in all), the last on {} {}", dropped_unlogged_,
               dropped_total_, channel, why);
  dropped_unlogged_ = 0;
  dropped_logged_ = now;
}

std::string RedisBus::presence_tag(std::string_view field, std::string_view record_bytes) const {
  return settings_.secret.empty() ? std::string() : bus_tag(settings_.secret, field, record_bytes);
}

bool RedisBus::trusts(std::string_view field, const PresenceRecord& record) const {
  return settings_.secret.empty() || same_tag(record.tag, presence_tag(field, record.signed_bytes()));
}

// --- own messages Redis has not confirmed ------------------------------------------------------

// Redis answers: whatever it echoes, this process is no longer waiting on a stall.
void RedisBus::redis_answered() {
  stalled_ = false;
  if (!unconfirmed_.empty()) arm_confirm_timer();
}

// An own message is back. Earlier ones still unconfirmed were published to a channel this
// process is not subscribed to (yet): their echo will never come, so they are delivered here.
// True when the echoed one is still to be delivered.
bool RedisBus::echoed(std::uint64_t sequence) {
  bool deliver = true;
  while (!unconfirmed_.empty() && unconfirmed_.front().sequence <= sequence) {
    Unconfirmed message = std::move(unconfirmed_.front());
    unconfirmed_.pop_front();
    if (message.sequence == sequence) {
      deliver = !message.delivered_here;
      break;
    }
    if (!message.delivered_here) deliver_here(message);
  }
  redis_answered();
  return deliver;
}

// A probe published after `sequence` came back: Redis handled every message up to it, and those
// not echoed went to channels this process does not hear.
void RedisBus::confirmed_through(std::uint64_t sequence) {
  while (!unconfirmed_.empty() && unconfirmed_.front().sequence <= sequence) {
    Unconfirmed message = std::move(unconfirmed_.front());
    unconfirmed_.pop_front();
    if (!message.delivered_here) deliver_here(message);
  }
  redis_answered();
}

void RedisBus::deliver_here(Unconfirmed& message) {
  message.delivered_here = true;
  auto it = channels_.find(key("room", message.room));
  if (it == channels_.end() || !it->second.listener) return;
  it->second.listener->delivered(Envelope{identity_, message.session, message.sequence, {}, message.payload});
}

void RedisBus::arm_confirm_timer() {
  if (confirm_armed_ || unconfirmed_.empty()) return;
  confirm_armed_ = true;
  confirm_timer_.expires_at(unconfirmed_.front().sent + after(settings_.confirm_grace()));
  confirm_timer_.async_wait([this](const error_code& error) {
    if (error) return;  // cancelled: whoever cancelled it cleared confirm_armed_
    confirm_armed_ = false;
    confirm_overdue();
  });
}

// The oldest own message is not back within the grace: Redis may be stalled (SIGSTOP, a full
// disk, a long command). What arrived meanwhile is read first (the loop may have been busy);
// then this process's members get what is overdue, and everything published next, at once:
// they do not wait for the probe to notice. Their order may then differ from other processes'.
void RedisBus::confirm_overdue() {
  if (state_ != State::up) return;
  subscriber_->read_now();
  if (state_ != State::up || unconfirmed_.empty()) return;
  const Clock::time_point due = unconfirmed_.front().sent + after(settings_.confirm_grace());
  if (Clock::now() < due) return arm_confirm_timer();
  if (!stalled_)
    log::warning("bus: Redis has not echoed this process's messages for {:.1f} s; delivering them to this process's members "
                 "at once until it answers",
                 settings_.confirm_grace());
  stalled_ = true;
  for (std::size_t i = 0; i < unconfirmed_.size(); ++i)  // by index: a delivery may publish (and append)
    if (!unconfirmed_[i].delivered_here) deliver_here(unconfirmed_[i]);
}

// --- publishing --------------------------------------------------------------------------------

bool RedisBus::publish(const std::string& room, std::uint64_t session, std::string_view payload) {
  if (state_ != State::up) {
    if (settings_.history > 0 && ever_up_) keep_for_later(room, session, payload);  // an outage, not the start
    return false;
  }
  const std::string channel = key("room", room);
  Envelope envelope{identity_, session, publish_sequence_ + 1, {}, std::string(payload)};
  if (!send(room, envelope)) return false;
  ++publish_sequence_;
  engine_metrics().bus_published.add();
  // Only a message to a channel this process hears comes back; one to a room whose subscription
  // is on its way (or going) never did reach this process's members, and is not waited for.
  auto heard = channels_.find(channel);
  if (heard == channels_.end() || heard->second.state != Subscription::subscribed) return true;
  constexpr std::size_t kept = 10000;  // a bound on what a stall can hold here
  if (unconfirmed_.size() >= kept) {
    unconfirmed_.pop_front();
    ++unconfirmed_overflow_;
  }
  unconfirmed_.push_back(Unconfirmed{room, envelope.sequence, session, std::move(envelope.payload), Clock::now(), false});
  if (stalled_) deliver_here(unconfirmed_.back());
  arm_confirm_timer();
  return true;
}

void RedisBus::flush_now() {
  for (auto* connection : {subscriber_.get(), publisher_.get()})
    if (connection) connection->flush_now();
}

bool RedisBus::command(const std::vector<std::string>& argv, RedisConnection::Reply reply) {
  return state_ == State::up && publisher_->command(argv, std::move(reply));
}

// Before the first connection attempt has ended the bus is not down yet: such messages (from
// sessions still waiting for their subscription) are counted without a warning.
void RedisBus::count_local_only() {
  if (settings_.history > 0 && ever_up_) return;  // kept, and sent when Redis answers (keep_for_later)
  if (local_only_++ == 0 && state_ != State::starting)
    log::warning("bus: down; messages reach only this process's members until {} answers again",
                 settings_.address.display());
}

// --- liveness ----------------------------------------------------------------------------------

void RedisBus::start_probe() {
  probe_due_ = Clock::now() + after(settings_.probe_interval);
  probe_timer_.expires_at(probe_due_);
  probe_timer_.async_wait([this](const error_code& error) {
    if (!error) probe();
  });
}

// Every interval: the last probe must have come back through the subscriber, else the subscriber
// is silent (Redis stopped, a half-open connection) and the bus reconnects. A timer that fires
// far too late means the loop was paused (a PreFork child between clients): what arrived
// meanwhile is read first, and a late probe is not held against the connection.
void RedisBus::probe() {
  if (state_ != State::up) return;
  if (owner_ != ::getpid()) adopt();  // a drainer nobody spoke in yet: its pid in presence too
  const bool paused = Clock::now() - probe_due_ > after(settings_.probe_interval);
  subscriber_->read_now();
  if (state_ != State::up) return;
  if (probe_outstanding_ && !paused)
    return went_down(fmt::format("subscriber {}: silent: a liveness probe published {:.1f} s ago never came back",
                                 where(), settings_.probe_interval));
  if (settings_.address.is_sentinel() && !sentinel_) ask_sentinel(generation_);  // the +switch-master watch was lost
  probe_outstanding_ = true;
  publisher_->command({"PUBLISH", probe_channel_, std::to_string(publish_sequence_)});  // confirms all before it
  start_probe();
}

void RedisBus::start_heartbeat() {
  heartbeat_timer_.expires_after(after(settings_.heartbeat));
  heartbeat_timer_.async_wait([this](const error_code& error) {
    if (error || state_ != State::up) return;
    for (auto& [name, channel] : channels_)
      if (channel.listener) channel.listener->heartbeat();
    start_heartbeat();
  });
}

}  // namespace netserver::bus
