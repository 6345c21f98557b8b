#pragma once
/// Room: what a chat publishes to. Handlers get one by name from Session::room("chat") and never
/// learn which kind they hold: without `bus:` a room is the sessions of this process that joined
/// it (a walk over them, like Registry::broadcast); with `bus: redis://...` a publish goes through
/// Redis and every process on the bus delivers what comes back to its own members, so one room
/// spans every process of every personality, on every machine sharing the Redis.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace netserver {

class Session;

/// One member of a room, as Room::who reports it.
struct Member {
  std::string label;             ///< what the member is called (given to join / relabel)
  std::string peer;              ///< its client's address, as the serving process sees it
  pid_t pid = 0;                 ///< the process serving it
  std::string host;              ///< the host name of that process's machine
  std::uint64_t session_id = 0;  ///< its session id within that process
  Session* session = nullptr;    ///< the session when this process serves it, else null
};

/// What Room::claim decided.
struct ClaimOutcome {
  /// The three outcomes.
  enum class Kind {
    granted,  ///< the session holds the key and is called by the label now
    taken,    ///< another member holds the key: `holder` is its label (as its process wrote it)
    refused,  ///< the bus answered with an error (Redis out of memory, a read-only replica, ...):
              ///< nobody got the key; `why` is Redis's error. Only a bus that is *down* falls
              ///< back to comparing this process's members.
  };
  Kind kind = Kind::granted;  ///< which outcome
  std::string holder;  ///< taken: the holder's label
  std::string why;     ///< refused: what the bus said
};

/// A named room. Not thread-safe: every call happens on the process's event loop. Members are
/// sessions of this process; a session leaves every room by itself when it ends.
class Room {
 public:
  /// Runs for a session once it receives the room's messages; never runs for a session that
  /// ended first.
  using Joined = std::function<void(Session&)>;
  /// Receives the members for Room::who; runs only while the asking session is still open.
  using Listing = std::function<void(Session& asking, std::vector<Member> members)>;
  /// Receives Room::claim's outcome. Runs only while `session` is open.
  using Claimed = std::function<void(Session& session, const ClaimOutcome& outcome)>;
  /// Checks a message that came through the bus before this process delivers it: returns the
  /// bytes to deliver (the same, or made safe), or nothing to drop it. See receive_filter().
  using ReceiveFilter = std::function<std::optional<std::string>(std::string_view bytes)>;

  /// A room called `name`; handlers get rooms from Session::room, not by constructing them.
  explicit Room(std::string name) : name_(std::move(name)) {}
  virtual ~Room() = default;
  Room(const Room&) = delete;
  Room& operator=(const Room&) = delete;

  /// The room's name.
  const std::string& name() const { return name_; }

  /// Adds `session` as `label` (joining twice only relabels). `joined` runs at once without a
  /// bus or while the bus is down, and once the room's subscription is confirmed with one: a
  /// message published after `joined` ran reaches the session.
  virtual void join(Session& session, std::string label, Joined joined = {}) = 0;
  /// Changes how a member appears in who().
  virtual void relabel(Session& session, std::string label) = 0;
  /// Gives the member `session` the label `label`, unique in the whole room by `key` (what
  /// counts as the same label, e.g. "alice" for "Alice"): when another member holds `key`,
  /// nothing changes and `claimed` gets that member's label; else `session` is relabeled and holds
  /// `key` (letting go of the key it held before), and `claimed` gets nothing. Without a bus: this
  /// process's members are compared. With one: every process's, in one atomic step in Redis
  /// (`claimed` runs after a round trip); a member of a killed process holds its key until its
  /// presence entry expires. A claim Redis answers with an error is refused (nobody gets the key);
  /// one whose reply is lost because the bus goes down is decided as a down bus decides.
  /// While the bus is down, only this process's members are compared (two processes may then
  /// give out one key; neither is taken back when the bus returns). Nothing happens for a
  /// session that is not a member.
  virtual void claim(Session& session, std::string label, std::string key, Claimed claimed) = 0;
  /// Removes `session` (nothing when it is not a member).
  virtual void leave(Session& session) = 0;
  /// True when `session` is a member.
  virtual bool contains(const Session& session) const = 0;

  /// Sends `bytes` (any bytes) to every member except `except`, in every process on the bus.
  /// Every member receives the room's messages in the same order. While the bus is down, only
  /// this process's members receive it (counted and logged once per outage).
  /// Backpressure reaches the sender: a delivery that leaves a member's queue above
  /// `room_output_mark` stops the input of the publishing session (the one whose callback or
  /// Conversation runs, else `except`) until that member drains below it or is cut
  /// (`output_stall_timeout`); over the bus, only members of the sender's own process hold it.
  virtual void publish(std::string_view bytes, const Session* except = nullptr) = 0;

  /// The members, sorted by (host, pid, session id); `listing` may run later (a Redis round
  /// trip) and runs only while `asking` is open. Without a bus, or while it is down: the
  /// members of this process.
  virtual void who(Session& asking, Listing listing) = 0;

  /// Sets the check every message arriving through the bus passes before delivery (bytes from
  /// Redis are input: any program that can reach Redis can PUBLISH to the room's channel, and
  /// only `bus_secret` keeps it out). A dropped message is counted and logged once a minute.
  /// Without a bus there is nothing to check: what this process publishes is delivered as is.
  virtual void receive_filter(ReceiveFilter filter) = 0;

  /// True when who() and publish() reach past this process (a bus is configured).
  virtual bool spans_processes() const = 0;

 private:
  std::string name_;
};

}  // namespace netserver
