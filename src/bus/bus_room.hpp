#pragma once
// A room on the Redis bus: a publish goes to Redis, and this process delivers to its own members
// only what comes back (so every member everywhere sees one order), leaving out the sender by
// the identity in the envelope. Presence lives in Redis: a hash of members plus a sorted set of
// their expiry times, refreshed by heartbeat and pruned on read.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bus/redis_bus.hpp"
#include "netserver/room.hpp"
#include "room_members.hpp"

namespace netserver {

class RoomHub;

class BusRoom : public Room, public bus::BusListener {
 public:
  BusRoom(RoomHub& hub, std::string name);
  /// Removes the presence entries (and claimed keys) of members still here.
  ~BusRoom() override;

  void join(Session& session, std::string label, Joined joined) override;
  void relabel(Session& session, std::string label) override;
  void claim(Session& session, std::string label, std::string key, Claimed claimed) override;
  void leave(Session& session) override;
  bool contains(const Session& session) const override;
  void publish(std::string_view bytes, const Session* except) override;
  void who(Session& asking, Listing listing) override;
  void receive_filter(ReceiveFilter filter) override { filter_ = std::move(filter); }
  bool spans_processes() const override { return true; }

  void subscribed() override;
  void delivered(const bus::Envelope& envelope) override;
  void came_up() override;
  void went_down() override;
  void heartbeat() override;

 private:
  void admit_waiting();
  void take(Session& session, std::string label, std::string key, const Claimed& claimed);
  bool is_waiting(const Session& session) const;
  std::string record_of(const Session& session, const std::string& label);
  void write_presence(const std::vector<const RoomMembers::Entry*>& entries);
  void remove_presence(const std::vector<std::string>& fields_and_keys);
  std::vector<const RoomMembers::Entry*> admitted() const;
  std::string field_of(const Session& session);

  RoomHub& hub_;
  RoomMembers members_;
  PublishWindow window_;  // this process's messages on their way through Redis, per sender
  std::vector<std::pair<std::weak_ptr<Session>, Joined>> waiting_;  // joined, not yet subscribed
  bool subscribed_ = false;
  ReceiveFilter filter_;
  struct PendingClaim {
    std::uint64_t ticket;
    std::weak_ptr<Session> session;
    std::string label;
    std::string key;
    Claimed claimed;
  };
  std::vector<PendingClaim> claims_;  // sent to Redis, not answered yet
  std::uint64_t claim_tickets_ = 0;
};

}  // namespace netserver
