#include "bus/bus_room.hpp"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "netserver/log.hpp"
#include "room_hub.hpp"

namespace netserver {

namespace {

// KEYS: the hash, the expiry set. ARGV: expiry (ms since the epoch), key TTL (ms), then field
// and value pairs. The keys themselves expire too, so a room nobody refreshes goes away.
constexpr const char* upsert_script = R"(
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1)";

// KEYS: the hash, the expiry set. ARGV: now (ms). Prunes what expired, returns the rest.
constexpr const char* read_script = R"(
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, field in ipairs(gone) do redis.call('HDEL', KEYS[1], field) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return redis.call('HGETALL', KEYS[1]))";

// KEYS: the hash, the expiry set. ARGV: the fields to remove.
constexpr const char* remove_script = R"(
for _, field in ipairs(ARGV) do
  redis.call('HDEL', KEYS[1], field)
  redis.call('ZREM', KEYS[2], field)
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
  std::vector<std::string> fields;
  for (const RoomMembers::Entry* entry : admitted()) fields.push_back(field_of(*entry->session));
  remove_presence(fields);
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
  const bool was_waiting = std::erase_if(waiting_, [&](const auto& w) {
                             auto locked = w.first.lock();
                             return !locked || locked.get() == &session;
                           }) > 0;
  if (!members_.remove(session)) return;
  if (!was_waiting) remove_presence({field_of(session)});
  if (members_.size() == 0) {
    hub_.bus()->detach(name());
    subscribed_ = false;
  }
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
  admit_waiting();
}

void BusRoom::heartbeat() {
  if (members_.size() > 0) write_presence(admitted());
}

void BusRoom::delivered(const bus::Envelope& envelope) {
  const bool mine = envelope.origin == hub_.bus()->identity();
  members_.deliver(envelope.payload, [&](const Session& member) { return mine && member.id() == envelope.session; });
}

// --- publishing and presence -----------------------------------------------------------------

void BusRoom::publish(std::string_view bytes, const Session* except) {
  bus::RedisBus& bus = *hub_.bus();
  if (bus.publish(name(), except ? except->id() : 0, bytes)) return;
  members_.deliver(bytes, [except](const Session& member) { return &member == except; });
  bus.count_local_only();
}

void BusRoom::write_presence(const std::vector<const RoomMembers::Entry*>& entries) {
  bus::RedisBus& bus = *hub_.bus();
  if (entries.empty() || !bus.is_up()) return;
  const double ttl = bus.settings().presence_ttl;
  std::vector<std::string> argv{"EVAL", upsert_script, "2", bus.key("presence", name()), bus.key("presence-expiry", name()),
                                std::to_string(now_ms() + static_cast<std::int64_t>(ttl * 1000)),
                                std::to_string(static_cast<std::int64_t>(ttl * 1000) + 1000)};
  for (const RoomMembers::Entry* entry : entries) {
    argv.push_back(field_of(*entry->session));
    argv.push_back(bus::PresenceRecord{::getpid(), host_name(), entry->session->peer(), entry->label}.encode());
  }
  bus.command(argv, [room = name()](const redisReply& reply) {
    if (reply.type == REDIS_REPLY_ERROR) log::warning("bus: presence update of room {} refused: {}", room, text_of(reply));
  });
}

void BusRoom::remove_presence(const std::vector<std::string>& fields) {
  bus::RedisBus& bus = *hub_.bus();
  if (fields.empty() || !bus.is_up()) return;
  std::vector<std::string> argv{"EVAL", remove_script, "2", bus.key("presence", name()), bus.key("presence-expiry", name())};
  argv.insert(argv.end(), fields.begin(), fields.end());
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
      if (!record) continue;
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
