#include "room_members.hpp"

#include <unistd.h>

#include <algorithm>

#include "engine.hpp"
#include "session_impl.hpp"

namespace netserver {

RoomMembers::Entry* RoomMembers::find(const Session& session) {
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.session.get() == &session; });
  return it == entries_.end() ? nullptr : &*it;
}

bool RoomMembers::add(Session& session, std::string label) {
  if (Entry* entry = find(session)) {
    entry->label = std::move(label);
    return false;
  }
  entries_.push_back(Entry{session.shared_from_this(), std::move(label), std::string()});
  return true;
}

const RoomMembers::Entry* RoomMembers::holder_of(std::string_view key, const Session& except) const {
  for (const Entry& entry : entries_)
    if (entry.session.get() != &except && !key.empty() && entry.key == key) return &entry;
  return nullptr;
}

Session* room_sender(const Session* except) {
  if (except == nullptr) return nullptr;
  auto& session = static_cast<SessionImpl&>(const_cast<Session&>(*except));
  SessionImpl* acting = session.engine().acting();
  return acting != nullptr ? acting : &session;
}

// --- the publish window ----------------------------------------------------------------------

void PublishWindow::published(std::uint64_t id, Session* sender, std::size_t bytes) {
  if (sender == nullptr || id == 0) return;
  auto& session = static_cast<SessionImpl&>(*sender);
  Flight& flight = flights_[id];
  if (flight.bytes == 0 && !flight.holding) flight.session = session.weak_from_this();
  flight.bytes += bytes;
  if (flight.holding || flight.bytes <= session.limits().output_mark()) return;
  flight.holding = true;
  session.hold_input();
}

void PublishWindow::returned(std::uint64_t id, std::size_t bytes) {
  auto found = flights_.find(id);
  if (found == flights_.end()) return;
  Flight& flight = found->second;
  flight.bytes -= std::min(bytes, flight.bytes);
  flight.returned = true;
  auto session = flight.session.lock();
  if (!session) return (void)flights_.erase(found);
  if (flight.holding && flight.bytes <= session->limits().output_mark() / 2) release(flight);
  if (flight.bytes == 0) flights_.erase(found);
}

void PublishWindow::release(Flight& flight) {
  flight.holding = false;
  if (auto session = flight.session.lock()) static_cast<SessionImpl&>(*session).release_input();
}

void PublishWindow::forget(const Session& session) {
  auto found = flights_.find(session.id());
  if (found == flights_.end()) return;
  release(found->second);
  flights_.erase(found);
}

void PublishWindow::beat() {
  for (auto it = flights_.begin(); it != flights_.end();) {
    Flight& flight = it->second;
    if (flight.holding && !flight.returned) {
      release(flight);
      it = flights_.erase(it);
      continue;
    }
    flight.returned = false;
    ++it;
  }
}

void PublishWindow::clear() {
  auto flights = std::move(flights_);
  flights_.clear();
  for (auto& [id, flight] : flights)
    if (flight.holding) release(flight);
}

Session* RoomMembers::by_id(std::uint64_t id) const {
  for (const Entry& entry : entries_)
    if (entry.session->id() == id) return entry.session.get();
  return nullptr;
}

bool RoomMembers::remove(const Session& session) {
  const auto before = entries_.size();
  std::erase_if(entries_, [&](const Entry& e) { return e.session.get() == &session; });
  return entries_.size() != before;
}

std::vector<Member> RoomMembers::listing(const std::string& host) const {
  std::vector<Member> members;
  for (const Entry& entry : entries_) {
    if (!entry.session->is_open()) continue;
    members.push_back(Member{entry.label, entry.session->peer(), ::getpid(), host, entry.session->id(), entry.session.get()});
  }
  std::sort(members.begin(), members.end(), [](const Member& a, const Member& b) { return a.session_id < b.session_id; });
  return members;
}

const std::string& host_name() {
  static const std::string name = [] {
    char text[256] = {};
    return ::gethostname(text, sizeof text - 1) == 0 ? std::string(text) : std::string("localhost");
  }();
  return name;
}

}  // namespace netserver
