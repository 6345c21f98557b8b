#pragma once
// A room without a bus: the sessions of this process that joined it. What the tutorial teaches:
// it reaches everyone under Multiplex and nobody else under Single and PreFork.

#include "netserver/room.hpp"
#include "room_members.hpp"

namespace netserver {

class LocalRoom : public Room {
 public:
  explicit LocalRoom(std::string name) : Room(std::move(name)) {}
  void join(Session& session, std::string label, Joined joined) override;
  void relabel(Session& session, std::string label) override;
  void claim(Session& session, std::string label, std::string key, Claimed claimed) override;
  void leave(Session& session) override;
  bool contains(const Session& session) const override;
  void publish(std::string_view bytes, const Session* except) override;
  void who(Session& asking, Listing listing) override;
  void receive_filter(ReceiveFilter) override {}  // nothing arrives from outside this process
  bool spans_processes() const override { return false; }

 private:
  RoomMembers members_;
};

}  // namespace netserver
