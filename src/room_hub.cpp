#include "room_hub.hpp"

#include <unistd.h>

#include "bus/bus_options.hpp"
#include "bus/bus_room.hpp"
#include "local_room.hpp"
#include "netserver/server.hpp"

namespace netserver {

RoomHub::RoomHub(Server& server, boost::asio::io_context& io) : io_(io), settings_(bus::bus_settings(server.config())) {}

RoomHub::~RoomHub() {
  closing_ = true;
  if (bus_pid_ != ::getpid()) bus_.reset();  // inherited through a fork: nothing to say to Redis
  rooms_.clear();                            // their presence removals go out before the bus closes
}

void RoomHub::make_bus() {
  bus_ = std::make_unique<bus::RedisBus>(io_, *settings_);
  bus_pid_ = ::getpid();
}

bus::RedisBus* RoomHub::bus() {
  if (!settings_ || closing_) return bus_.get();
  if (!bus_) {
    make_bus();
  } else if (bus_pid_ != ::getpid()) {
    // A HUP's drainer: a copy whose parent exec'd, closing its own copies of the connections
    // (close-on-exec), so this copy alone talks on them now. Keeping them keeps the room's
    // subscription and every member's presence entry: no gap, nobody listed twice. (Replacing
    // the bus here would also destroy it inside its own callbacks, which call bus().)
    bus_pid_ = ::getpid();
    bus_->adopt();
  }
  return bus_.get();
}

Room& RoomHub::room(std::string_view name) {
  auto it = rooms_.find(name);
  if (it != rooms_.end()) return *it->second;
  std::unique_ptr<Room> room;
  if (settings_) room = std::make_unique<BusRoom>(*this, std::string(name));
  else room = std::make_unique<LocalRoom>(std::string(name));
  return *rooms_.emplace(std::string(name), std::move(room)).first->second;
}

void RoomHub::forget(Session& session) {
  for (auto& [name, room] : rooms_) room->leave(session);
}

}  // namespace netserver
