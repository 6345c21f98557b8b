#pragma once
// The envelope a room message travels in through Redis, and the presence record of a member.
// Both are binary-safe (any byte may occur in any field) and start with a version byte, so a
// later format can be told apart and skipped by an older process.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace netserver::bus {

/// A room message. Layout (version 1): [0x01][origin length: 1 byte][origin]
/// [session id: 8 bytes, big-endian][payload: the rest].
struct Envelope {
  static constexpr std::uint8_t version = 1;
  std::string origin;           ///< the publishing process's identity (1..255 bytes)
  std::uint64_t session = 0;    ///< the session left out of the delivery (0: nobody)
  std::string payload;          ///< the bytes published

  /// The bytes to PUBLISH.
  std::string encode() const;
  /// The envelope in `bytes`, or nothing for another version or a damaged message.
  static std::optional<Envelope> decode(std::string_view bytes);
};

/// A member as stored in the room's presence hash. Layout (version 1): [0x01] then pid, host,
/// peer, label, each as [length: 4 bytes, big-endian][bytes].
struct PresenceRecord {
  static constexpr std::uint8_t version = 1;
  long pid = 0;
  std::string host;
  std::string peer;
  std::string label;

  std::string encode() const;
  static std::optional<PresenceRecord> decode(std::string_view bytes);
};

}  // namespace netserver::bus
