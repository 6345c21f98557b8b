// The bus envelope decoder: bytes from Redis are input like bytes from a socket (any program that
// can reach Redis can PUBLISH to a room's channel). A decoded envelope encodes back to the same
// bytes (version 2), and its tag checks the way the bus checks it.

#include <cstdint>
#include <string>

#include "bus/envelope.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto envelope = netserver::bus::Envelope::decode(bytes);
  if (!envelope) return 0;
  FUZZ_CHECK(!envelope->origin.empty() && envelope->origin.size() <= 255);
  FUZZ_CHECK(envelope->tag.empty() || envelope->tag.size() == netserver::bus::tag_size);
  FUZZ_CHECK(envelope->payload.size() <= size);
  if (bytes[0] == netserver::bus::Envelope::version) FUZZ_CHECK(envelope->encode() == bytes);
  const auto again = netserver::bus::Envelope::decode(envelope->encode());
  FUZZ_CHECK(again && again->origin == envelope->origin && again->payload == envelope->payload &&
             again->session == envelope->session && again->sequence == envelope->sequence && again->tag == envelope->tag);
  // A tag made with the key verifies; the same envelope under another channel does not.
  netserver::bus::Envelope tagged = *envelope;
  tagged.tag = netserver::bus::bus_tag("fuzzing-key-0123456789", "chat:room:chat", tagged.signed_bytes());
  FUZZ_CHECK(netserver::bus::same_tag(tagged.tag, netserver::bus::bus_tag("fuzzing-key-0123456789", "chat:room:chat",
                                                                          netserver::bus::Envelope::decode(tagged.encode())->signed_bytes())));
  FUZZ_CHECK(!netserver::bus::same_tag(tagged.tag, netserver::bus::bus_tag("fuzzing-key-0123456789", "chat:room:other",
                                                                           tagged.signed_bytes())));
  return 0;
}
