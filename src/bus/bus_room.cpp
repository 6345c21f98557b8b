#include "bus/bus_room.hpp"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "netserver/log.hpp"
#include "room_hub.hpp"

namespace netserver {

namespace {

// KEYS: the hash, the expiry set, the names (claimed key -> field). ARGV: expiry (ms since the
// epoch), key TTL (ms), now (ms), then field, value and claimed key ("" for none) triples. A key
// is taken back (after a reconnect) unless a live member of another field holds it. The keys
// themselves expire too, so a room nobody refreshes goes away.
constexpr const char* upsert_script = R"(
for i = 4, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
  if ARGV[i + 2] ~= '' then
    local holder = redis.call('HGET', KEYS[3], ARGV[i + 2])
    local live = holder and holder ~= ARGV[i] and tonumber(redis.call('ZSCORE', KEYS[2], holder) or '0') > tonumber(ARGV[3])
    if not live then redis.call('HSET', KEYS[3], ARGV[i + 2], ARGV[i]) end
  end
end
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[2]) end
return 1)";

// KEYS: the hash, the expiry set, the names. ARGV: now, expiry, key TTL (ms), the key wanted,
// the field asking, its record with the new label, the key it held ("" for none). Returns 1 when
// the field got the key (its record and expiry written, its old key let go), else the holder's
// record: a key is held while its holder's presence entry lives.
constexpr const char* claim_script = R"(
local holder = redis.call('HGET', KEYS[3], ARGV[4])
if holder and holder ~= ARGV[5] then
  local expiry = redis.call('ZSCORE', KEYS[2], holder)
  if expiry and tonumber(expiry) > tonumber(ARGV[1]) then return redis.call('HGET', KEYS[1], holder) or '' end
end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
if ARGV[7] ~= '' and ARGV[7] ~= ARGV[4] and redis.call('HGET', KEYS[3], ARGV[7]) == ARGV[5] then
  redis.call('HDEL', KEYS[3], ARGV[7])
end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
return 1)";

// KEYS: the hash, the expiry set. ARGV: now (ms). Prunes what expired, returns the rest.
constexpr const char* read_script = R"(
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, field in ipairs(gone) do redis.call('HDEL', KEYS[1], field) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return redis.call('HGETALL', KEYS[1]))";

// KEYS: the hash, the expiry set, the names. ARGV: field and claimed key ("" for none) pairs.
constexpr const char* remove_script = R"(
for i = 1, #ARGV, 2 do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  if ARGV[i + 1] ~= '' and redis.call('HGET', KEYS[3], ARGV[i + 1]) == ARGV[i] then redis.call('HDEL', KEYS[3], ARGV[i + 1]) end
end
return 1)";

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string_view text_of(const redisReply& reply) {
  return reply.str == nullptr ? std::string_view() : std::string_view(reply.str, reply.len);
}

}  // namespace

BusRoom::BusRoom(RoomHub& hub, std::string name) : Room(std::move(name)), hub_(hub) {}

BusRoom::~BusRoom() {
  if (hub_.bus() == nullptr) return;
  std::vector<std::string> fields_and_keys;
  for (const RoomMembers::Entry* entry : admitted()) {
    fields_and_keys.push_back(field_of(*entry->session));
    fields_and_keys.push_back(entry->key);
  }
  remove_presence(fields_and_keys);
}

std::string BusRoom::field_of(const Session& session) {
  return fmt::format("{}/{}", hub_.bus()->identity(), session.id());
}

// --- membership ----------------------------------------------------------------------------------

void BusRoom::join(Session& session, std::string label, Joined joined) {
  if (!members_.add(session, std::move(label))) return relabel(session, members_.find(session)->label);
  bus::RedisBus& bus = *hub_.bus();
  if (members_.size() == 1) bus.attach(name(), *this);
  waiting_.emplace_back(session.weak_from_this(), std::move(joined));
  // Let in at once unless a subscription is on its way: while the bus is down, or before it ever
  // answered, waiting would only delay the chat.
  if (subscribed_ || !(bus.is_up() || bus.is_starting())) admit_waiting();
}

void BusRoom::relabel(Session& session, std::string label) {
  RoomMembers::Entry* entry = members_.find(session);
  if (entry == nullptr) return;
  entry->label = std::move(label);
  const bool waiting = std::any_of(waiting_.begin(), waiting_.end(), [&](const auto& w) { return w.first.lock().get() == &session; });
  if (!waiting) write_presence({entry});
}

void BusRoom::leave(Session& session) {
  const RoomMembers::Entry* entry = members_.find(session);
  const std::string key = entry ? entry->key : std::string();
  const bool was_waiting = std::erase_if(waiting_, [&](const auto& w) {
                             auto locked = w.first.lock();
                             return !locked || locked.get() == &session;
                           }) > 0;
  window_.forget(session);
  if (!members_.remove(session)) return;
  if (!was_waiting || !key.empty()) remove_presence({field_of(session), key});  // a claim writes presence too
  if (members_.size() == 0) {
    hub_.bus()->detach(name());
    subscribed_ = false;
  }
}

// A member of this process holding the key answers without Redis; while the bus is down so does
// everyone else (the fallback: unique in this process).
// An error from Redis (out of memory at maxmemory, a read-only replica, NOSCRIPT...) refuses the
// claim: the bus is up, so granting it here could give one key to two processes.
void BusRoom::claim(Session& session, std::string label, std::string key, Claimed claimed) {
  RoomMembers::Entry* entry = members_.find(session);
  if (entry == nullptr || !session.is_open()) return;
  if (const RoomMembers::Entry* holder = members_.holder_of(key, session))
    return claimed(session, ClaimOutcome{ClaimOutcome::Kind::taken, holder->label, {}});
  bus::RedisBus& bus = *hub_.bus();
  const double ttl = bus.settings().presence_ttl;
  const std::int64_t now = now_ms();
  const std::vector<std::string> argv{
      "EVAL", claim_script, "3", bus.key("presence", name()), bus.key("presence-expiry", name()), bus.key("names", name()),
      std::to_string(now), std::to_string(now + static_cast<std::int64_t>(ttl * 1000)),
      std::to_string(static_cast<std::int64_t>(ttl * 1000) + 1000), key, field_of(session), record_of(session, label),
      entry->key};
  // Kept until Redis answers: if the bus goes down first, the reply never comes (hiredis drops
  // it), and the claim is decided as a down bus decides it (went_down).
  const std::uint64_t ticket = ++claim_tickets_;
  claims_.push_back(PendingClaim{ticket, session.weak_from_this(), label, key, claimed});
  auto answer = [this, ticket, label, key, claimed](const redisReply& reply) {
    auto pending = std::find_if(claims_.begin(), claims_.end(), [&](const PendingClaim& c) { return c.ticket == ticket; });
    if (pending == claims_.end()) return;  // decided already
    auto asking = pending->session.lock();
    claims_.erase(pending);
    if (!asking || !asking->is_open()) return;
    if (reply.type == REDIS_REPLY_STRING) {
      auto record = bus::PresenceRecord::decode(text_of(reply));
      return claimed(*asking, ClaimOutcome{ClaimOutcome::Kind::taken, record ? record->label : key, {}});
    }
    if (reply.type != REDIS_REPLY_INTEGER) {
      const std::string why = reply.type == REDIS_REPLY_ERROR ? std::string(text_of(reply)) : "an unexpected reply";
      log::warning("bus: claiming a label in room {} refused by Redis: {}", name(), why);
      return claimed(*asking, ClaimOutcome{ClaimOutcome::Kind::refused, {}, why});
    }
    take(*asking, label, key, claimed);
  };
  if (bus.command(argv, answer)) return;
  claims_.pop_back();
  take(session, std::move(label), std::move(key), claimed);
}

// The label is this session's now (it won the claim, or the bus could not be asked).
void BusRoom::take(Session& session, std::string label, std::string key, const Claimed& claimed) {
  RoomMembers::Entry* entry = members_.find(session);
  if (entry == nullptr) return;
  if (const RoomMembers::Entry* holder = members_.holder_of(key, session))
    return claimed(session, ClaimOutcome{ClaimOutcome::Kind::taken, holder->label, {}});
  entry->label = std::move(label);
  entry->key = std::move(key);
  if (hub_.bus()->is_up() && !is_waiting(session)) write_presence({entry});
  claimed(session, ClaimOutcome{});
}

bool BusRoom::is_waiting(const Session& session) const {
  return std::any_of(waiting_.begin(), waiting_.end(), [&](const auto& w) { return w.first.lock().get() == &session; });
}

std::string BusRoom::record_of(const Session& session, const std::string& label) {
  bus::PresenceRecord record{current_pid(), host_name(), session.peer(), label, {}};
  record.tag = hub_.bus()->presence_tag(field_of(session), record.signed_bytes());
  return record.encode();
}

bool BusRoom::contains(const Session& session) const { return const_cast<RoomMembers&>(members_).find(session) != nullptr; }

// The members whose joined callback ran (they are in the presence hash).
std::vector<const RoomMembers::Entry*> BusRoom::admitted() const {
  std::vector<const RoomMembers::Entry*> entries;
  for (const RoomMembers::Entry& entry : members_.entries()) {
    const bool waiting = std::any_of(waiting_.begin(), waiting_.end(),
                                     [&](const auto& w) { return w.first.lock() == entry.session; });
    if (!waiting) entries.push_back(&entry);
  }
  return entries;
}

void BusRoom::admit_waiting() {
  auto waiting = std::move(waiting_);
  waiting_.clear();
  std::vector<const RoomMembers::Entry*> entries;
  for (auto& [weak, joined] : waiting)
    if (auto session = weak.lock(); session && session->is_open())
      if (const RoomMembers::Entry* entry = members_.find(*session)) entries.push_back(entry);
  write_presence(entries);
  for (auto& [weak, joined] : waiting) {
    auto session = weak.lock();
    if (session && session->is_open() && joined) joined(*session);
  }
}

// --- what the bus says ---------------------------------------------------------------------------

void BusRoom::subscribed() {
  subscribed_ = true;
  admit_waiting();
}

void BusRoom::came_up() { write_presence(admitted()); }

void BusRoom::went_down() {
  subscribed_ = false;
  window_.clear();  // what was in flight will never come back
  admit_waiting();
  auto claims = std::move(claims_);  // their replies will never come
  claims_.clear();
  for (PendingClaim& claim : claims)
    if (auto session = claim.session.lock(); session && session->is_open()) take(*session, claim.label, claim.key, claim.claimed);
}

void BusRoom::heartbeat() {
  window_.beat();
  if (members_.size() > 0) write_presence(admitted());
}

// Bytes from Redis pass the room's receive filter (the application's own rules) first. A message
// this process published comes back naming its sender, which local members above the output mark
// then hold as a local publish does; a sender in another process cannot be held from here (see
// docs/bus.md: its members are bounded by output_stall_timeout and max_output instead).
void BusRoom::delivered(const bus::Envelope& envelope) {
  bus::RedisBus& bus = *hub_.bus();
  const bool mine = envelope.origin == bus.identity();
  const auto skip = [&](const Session& member) { return mine && member.id() == envelope.session; };
  const Session* sender = mine ? members_.by_id(envelope.session) : nullptr;
  if (mine) window_.returned(envelope.session, envelope.payload.size());
  if (!filter_) return members_.deliver(envelope.payload, skip, sender);
  const std::optional<std::string> checked = filter_(envelope.payload);
  if (!checked) return bus.count_dropped(bus.key("room", name()), "refused by the room's receive filter");
  members_.deliver(*checked, skip, sender);
}

// --- publishing and presence -----------------------------------------------------------------

void BusRoom::publish(std::string_view bytes, const Session* except) {
  bus::RedisBus& bus = *hub_.bus();
  // Counted before it goes: a bus that waits on a stalled Redis delivers it here at once. Only
  // what this process hears comes back to it.
  const std::uint64_t id = except ? except->id() : 0;
  window_.published(id, subscribed_ ? room_sender(except) : nullptr, bytes.size());
  if (bus.publish(name(), id, bytes)) return;
  window_.returned(id, bytes.size());
  members_.deliver(bytes, [except](const Session& member) { return &member == except; }, except);
  bus.count_local_only();
}

void BusRoom::write_presence(const std::vector<const RoomMembers::Entry*>& entries) {
  bus::RedisBus& bus = *hub_.bus();
  if (entries.empty() || !bus.is_up()) return;
  const double ttl = bus.settings().presence_ttl;
  const std::int64_t now = now_ms();
  std::vector<std::string> argv{"EVAL", upsert_script, "3", bus.key("presence", name()), bus.key("presence-expiry", name()),
                                bus.key("names", name()), std::to_string(now + static_cast<std::int64_t>(ttl * 1000)),
                                std::to_string(static_cast<std::int64_t>(ttl * 1000) + 1000), std::to_string(now)};
  for (const RoomMembers::Entry* entry : entries) {
    argv.push_back(field_of(*entry->session));
    argv.push_back(record_of(*entry->session, entry->label));
    argv.push_back(entry->key);
  }
  bus.command(argv, [room = name()](const redisReply& reply) {
    if (reply.type == REDIS_REPLY_ERROR) log::warning("bus: presence update of room {} refused: {}", room, text_of(reply));
  });
}

// `fields_and_keys`: each member's presence field followed by the key it claimed ("" for none).
void BusRoom::remove_presence(const std::vector<std::string>& fields_and_keys) {
  bus::RedisBus& bus = *hub_.bus();
  if (fields_and_keys.empty() || !bus.is_up()) return;
  std::vector<std::string> argv{"EVAL", remove_script, "3", bus.key("presence", name()), bus.key("presence-expiry", name()),
                                bus.key("names", name())};
  argv.insert(argv.end(), fields_and_keys.begin(), fields_and_keys.end());
  bus.command(argv);
}

void BusRoom::who(Session& asking, Listing listing) {
  bus::RedisBus& bus = *hub_.bus();
  const std::vector<std::string> argv{"EVAL", read_script, "2", bus.key("presence", name()),
                                      bus.key("presence-expiry", name()), std::to_string(now_ms())};
  std::weak_ptr<Session> weak = asking.weak_from_this();
  const std::string mine = bus.identity() + "/";
  auto answer = [this, weak, listing, mine](const redisReply& reply) {
    auto session = weak.lock();
    if (!session || !session->is_open()) return;
    std::vector<Member> members;
    for (std::size_t i = 0; reply.type == REDIS_REPLY_ARRAY && i + 1 < reply.elements; i += 2) {
      const std::string_view field = text_of(*reply.element[i]);
      auto record = bus::PresenceRecord::decode(text_of(*reply.element[i + 1]));
      if (!record || !hub_.bus()->trusts(field, *record)) continue;  // damaged, or written without bus_secret
      Member member{record->label, record->peer, static_cast<pid_t>(record->pid), record->host, 0, nullptr};
      if (auto slash = field.rfind('/'); slash != std::string_view::npos)
        member.session_id = std::strtoull(std::string(field.substr(slash + 1)).c_str(), nullptr, 10);
      if (field.starts_with(mine))
        for (const RoomMembers::Entry& entry : members_.entries())
          if (entry.session->id() == member.session_id) member.session = entry.session.get();
      members.push_back(std::move(member));
    }
    std::sort(members.begin(), members.end(), [](const Member& a, const Member& b) {
      return std::tie(a.host, a.pid, a.session_id) < std::tie(b.host, b.pid, b.session_id);
    });
    listing(*session, std::move(members));
  };
  if (!bus.command(argv, answer)) listing(asking, members_.listing(host_name()));
}

}  // namespace netserver
