#pragma once
// The rooms of one process, by name, and the process's bus when `bus:` is configured.

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>

#include "bus/redis_bus.hpp"
#include "netserver/room.hpp"

namespace netserver {

class Server;
class Session;

/// This process's pid, without a system call once known (kept right across fork()).
pid_t current_pid();

class RoomHub {
 public:
  /// Without bus `settings`, rooms are LocalRooms; with them, the bus connects when a room is
  /// first used: in the process that serves, after any fork, with its loop running (an idle
  /// PreFork child waits outside its loop, where a connection could not make progress).
  RoomHub(boost::asio::io_context& io, std::optional<bus::BusSettings> settings);
  ~RoomHub();
  RoomHub(const RoomHub&) = delete;
  RoomHub& operator=(const RoomHub&) = delete;

  /// The room called `name`, made on first use.
  Room& room(std::string_view name);
  /// A session ended: it leaves every room.
  void forget(Session& session);
  /// The bus of this process, or null without one (or while the hub is destroyed). A bus
  /// inherited through a fork (a HUP's draining copy, whose parent exec'd) is adopted as it is:
  /// same connections, subscriptions and identity; presence entries then show the copy's pid.
  bus::RedisBus* bus();

 private:
  void make_bus();

  boost::asio::io_context& io_;
  std::optional<bus::BusSettings> settings_;
  std::unique_ptr<bus::RedisBus> bus_;
  pid_t bus_pid_ = 0;
  bool closing_ = false;  // in the destructor: bus() may be null
  std::map<std::string, std::unique_ptr<Room>, std::less<>> rooms_;  // destroyed before the bus
};

}  // namespace netserver
