#include "local_room.hpp"

namespace netserver {

void LocalRoom::join(Session& session, std::string label, Joined joined) {
  const bool fresh = members_.add(session, std::move(label));
  if (fresh && joined) joined(session);
}

void LocalRoom::relabel(Session& session, std::string label) {
  if (RoomMembers::Entry* entry = members_.find(session)) entry->label = std::move(label);
}

void LocalRoom::claim(Session& session, std::string label, std::string key, Claimed claimed) {
  RoomMembers::Entry* entry = members_.find(session);
  if (entry == nullptr || !session.is_open()) return;
  if (const RoomMembers::Entry* holder = members_.holder_of(key, session))
    return claimed(session, ClaimOutcome{ClaimOutcome::Kind::taken, holder->label, {}});
  entry->label = std::move(label);
  entry->key = std::move(key);
  claimed(session, ClaimOutcome{});
}

void LocalRoom::leave(Session& session) { members_.remove(session); }

bool LocalRoom::contains(const Session& session) const {
  return const_cast<RoomMembers&>(members_).find(session) != nullptr;
}

void LocalRoom::publish(std::string_view bytes, const Session* except) {
  members_.deliver(bytes, [except](const Session& member) { return &member == except; }, except);
}

void LocalRoom::who(Session& asking, Listing listing) {
  if (asking.is_open()) listing(asking, members_.listing(host_name()));
}

}  // namespace netserver
