#pragma once
// The envelope a room message travels in through Redis, and the presence record of a member.
// Both are binary-safe (any byte may occur in any field) and start with a version byte, so a
// later format can be told apart and skipped by an older process. Bytes from Redis are input:
// decode() takes any bytes and never reads past them (fuzzed: fuzz/bus_envelope.cpp).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace netserver::bus {

/// Length of a bus_secret tag: an HMAC-SHA256.
inline constexpr std::size_t tag_size = 32;

/// HMAC-SHA256 of `context`, a NUL byte and `bytes`, keyed with `secret`: the tag of a message
/// (context: its channel, so a message cannot be replayed into another room) or a presence
/// record (context: its field).
std::string bus_tag(std::string_view secret, std::string_view context, std::string_view bytes);
/// Compares two tags in constant time.
bool same_tag(std::string_view a, std::string_view b);

/// A room message. Layout (version 2): [0x02][origin length: 1 byte][origin][session id: 8 bytes]
/// [sequence: 8 bytes][tag length: 1 byte, 0 or 32][tag][payload: the rest], numbers big-endian.
/// Version 1 ([0x01][origin length][origin][session id][payload]) is still read (no sequence,
/// no tag).
struct Envelope {
  static constexpr std::uint8_t version = 2;
  std::string origin;           ///< the publishing process's identity (1..255 bytes)
  std::uint64_t session = 0;    ///< the session left out of the delivery (0: nobody)
  std::uint64_t sequence = 0;   ///< the publisher's count of its messages (0: version 1)
  std::string tag;              ///< empty, or the bus_secret HMAC over the envelope without it
  std::string payload;          ///< the bytes published

  /// The bytes to PUBLISH (with the tag as it is).
  std::string encode() const;
  /// The bytes the tag covers: the envelope encoded with no tag.
  std::string signed_bytes() const;
  /// The envelope in `bytes`, or nothing for another version or a damaged message.
  static std::optional<Envelope> decode(std::string_view bytes);
};

/// A member as stored in the room's presence hash. Layout: [0x01] then pid, host, peer, label,
/// each as [length: 4 bytes, big-endian][bytes]; with bus_secret, version [0x02] adds a fifth
/// field, the tag over the version-1 bytes.
struct PresenceRecord {
  static constexpr std::uint8_t version = 1;
  long pid = 0;
  std::string host;
  std::string peer;
  std::string label;
  std::string tag;  ///< empty, or the bus_secret HMAC (see encode)

  /// Version 1 without a tag, version 2 with one.
  std::string encode() const;
  /// The bytes the tag covers: version 1 of this record.
  std::string signed_bytes() const;
  static std::optional<PresenceRecord> decode(std::string_view bytes);
};

}  // namespace netserver::bus
