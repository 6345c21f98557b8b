#include "room_hub.hpp"

#include <pthread.h>
#include <unistd.h>

#include "bus/bus_options.hpp"
#include "bus/bus_room.hpp"
#include "local_room.hpp"
#include "netserver/server.hpp"

namespace netserver {

namespace {

// getpid() without a system call (glibc no longer caches it, and bus() runs for every message
// published and delivered): read once, and again in the child of every fork.
pid_t cached_pid = 0;

}  // namespace

pid_t current_pid() {
  static const bool registered = [] {
    cached_pid = ::getpid();
    return ::pthread_atfork(nullptr, nullptr, [] { cached_pid = ::getpid(); }) == 0;
  }();
  return registered ? cached_pid : ::getpid();
}

RoomHub::RoomHub(boost::asio::io_context& io, std::optional<bus::BusSettings> settings)
    : io_(io), settings_(std::move(settings)) {}

RoomHub::~RoomHub() {
  closing_ = true;
  if (bus_pid_ != ::getpid()) bus_.reset();  // inherited through a fork: nothing to say to Redis
  rooms_.clear();                            // their presence removals go out before the bus closes
}

void RoomHub::make_bus() {
  bus_ = std::make_unique<bus::RedisBus>(io_, *settings_);
  bus_pid_ = current_pid();
}

bus::RedisBus* RoomHub::bus() {
  if (!settings_ || closing_) return bus_.get();
  if (!bus_) {
    make_bus();
  } else if (bus_pid_ != current_pid()) {
    // A HUP's drainer: a copy whose parent exec'd, closing its own copies of the connections
    // (close-on-exec), so this copy alone talks on them now. Keeping them keeps the room's
    // subscription and every member's presence entry: no gap, nobody listed twice. (Replacing
    // the bus here would also destroy it inside its own callbacks, which call bus().)
    bus_pid_ = current_pid();
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

// The session's last words ("left us", its presence removal) leave at once: a PreFork child
// stops its loop when its session ends, and a command posted for later would wait for the next
// client.
void RoomHub::forget(Session& session) {
  for (auto& [name, room] : rooms_) room->leave(session);
  if (bus_ && bus_pid_ == current_pid()) bus_->flush_now();
}

}  // namespace netserver
