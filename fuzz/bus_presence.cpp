// The bus's presence reader: a presence hash value (and the names registry's answer, which is one)
// comes from Redis, where any program can HSET it. A decoded record survives a round trip, and
// what the chat shows of it (label checked, address and host escaped) holds no control byte.

#include <cstdint>
#include <string>

#include "bus/envelope.hpp"
#include "chat_protocol.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto record = netserver::bus::PresenceRecord::decode(bytes);
  if (!record) return 0;
  FUZZ_CHECK(record->tag.empty() || record->tag.size() == netserver::bus::tag_size);
  const auto again = netserver::bus::PresenceRecord::decode(record->encode());
  FUZZ_CHECK(again && again->pid == record->pid && again->host == record->host && again->peer == record->peer &&
             again->label == record->label && again->tag == record->tag);
  for (const std::string& shown : {chat::escape_controls(record->host), chat::escape_controls(record->peer)})
    for (const char c : shown) FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
  if (chat::is_member_label(record->label))
    for (const char c : record->label) FUZZ_CHECK(static_cast<unsigned char>(c) > 0x20 && c != 0x7f);
  return 0;
}
