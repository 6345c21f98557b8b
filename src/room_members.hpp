#pragma once
// The members a room has in this process, in the order they joined, shared by both kinds of Room.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "netserver/room.hpp"
#include "netserver/session.hpp"
#include "session_impl.hpp"  // every Session is the engine's

namespace netserver {

class RoomMembers {
 public:
  struct Entry {
    std::shared_ptr<Session> session;  // removed when the session ends (RoomHub::forget)
    std::string label;
    std::string key;  // held through Room::claim; empty: none
  };

  /// The entry of `session`, or null.
  Entry* find(const Session& session);
  /// Adds `session`; false when it was already a member (its label is updated then).
  bool add(Session& session, std::string label);
  /// The member other than `except` holding `key`, or null.
  const Entry* holder_of(std::string_view key, const Session& except) const;
  /// Removes `session`; false when it was not a member.
  bool remove(const Session& session);
  std::size_t size() const { return entries_.size(); }
  const std::vector<Entry>& entries() const { return entries_; }
  /// Sends `bytes` to every open member but the ones `skip` names. A member left above the
  /// output mark holds the sender -- the session whose callback runs, else `sender` (null: none
  /// known) -- see SessionImpl::room_delivered. Safe when a send ends a session on the way: the
  /// walk is over a copy of the list, and an ended session stays alive until its retirement,
  /// which the loop runs later (SessionImpl::finish posts it). The copy holds plain pointers: a
  /// counted one per member would cost two atomic operations on a cold cache line per delivery,
  /// most of a room's fan-out (the process has threads: libstdc++ counts atomically then).
  template <class Skip>
  void deliver(std::string_view bytes, Skip&& skip, const Session* sender) {
    snapshot_.clear();
    for (const Entry& entry : entries_) snapshot_.push_back(entry.session.get());
    for (Session* session : snapshot_) {
      if (!session->is_open() || skip(*session)) continue;
      session->send(bytes);
      // Every Session is the engine's; a sender is const only in Room::publish's signature.
      static_cast<SessionImpl&>(*session).room_delivered(static_cast<SessionImpl*>(const_cast<Session*>(sender)));
    }
    snapshot_.clear();
  }
  /// The member with session id `id`, or null.
  Session* by_id(std::uint64_t id) const;
  /// The members as Room::who reports them, for this process.
  std::vector<Member> listing(const std::string& host) const;

 private:
  std::vector<Entry> entries_;
  std::vector<Session*> snapshot_;  // deliver()'s copy of the list
};

/// Who sends what a room publishes now: the session whose callback (or Conversation) runs, else
/// `except` (the publisher leaving itself out), else nobody known.
Session* room_sender(const Session* except);

/// A bus room's messages from this process's senders that Redis has not sent back yet. A sender
/// with more than its output mark in flight is not read until half of it is back: the hold of a
/// member above the mark comes a round trip late over the bus, and without this window a flooder
/// would run ahead by everything it can send meanwhile.
class PublishWindow {
 public:
  /// A message of session `id` (its envelope's: 0 for none, not counted) of `bytes` went to Redis;
  /// `sender` (room_sender) is held while too much of `id`'s is in flight.
  void published(std::uint64_t id, Session* sender, std::size_t bytes);
  /// A message of session `id` came back (or was delivered here without Redis).
  void returned(std::uint64_t id, std::size_t bytes);
  /// `session` ended or left: nothing of it is waited for.
  void forget(const Session& session);
  /// The bus went down: what was in flight will never come back.
  void clear();
  /// A heartbeat: a sender held for a whole beat without any of its messages coming back is let
  /// go (they were lost), so a miscount can never hold a session for good.
  void beat();

 private:
  struct Flight {
    std::weak_ptr<Session> session;
    std::size_t bytes = 0;
    bool holding = false;
    bool returned = false;  // some came back since the last beat
  };
  void release(Flight& flight);
  std::unordered_map<std::uint64_t, Flight> flights_;
};

/// This machine's host name (as `hostname` prints it).
const std::string& host_name();

}  // namespace netserver
