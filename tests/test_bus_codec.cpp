// The bus's pure parts: the `bus` address parser and the envelope / presence record codecs.

#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "bus/envelope.hpp"
#include "bus/redis_address.hpp"

using namespace netserver::bus;
using Catch::Matchers::Contains;

TEST_CASE("bus address: the accepted forms", "[bus][codec]") {
  RedisAddress address;
  REQUIRE(parse_redis_address("redis://127.0.0.1:6379", address).empty());
  CHECK((address.host == "127.0.0.1" && address.port == 6379 && address.password.empty() && !address.is_unix()));
  REQUIRE(parse_redis_address("redis://:p@ss:w0rd@redis.example:7000/", address).empty());
  CHECK((address.host == "redis.example" && address.port == 7000 && address.password == "p@ss:w0rd"));
  REQUIRE(parse_redis_address("redis://[::1]:6380", address).empty());
  CHECK((address.host == "::1" && address.port == 6380 && address.display() == "redis://[::1]:6380"));
  REQUIRE(parse_redis_address("redis+unix://:secret@/run/redis/redis.sock", address).empty());
  CHECK((address.path == "/run/redis/redis.sock" && address.password == "secret" && address.is_unix()));
}

TEST_CASE("bus address: what is refused and what the error says", "[bus][codec]") {
  RedisAddress address;
  CHECK_THAT(parse_redis_address("redis://127.0.0.1", address), Contains("the port is missing"));
  CHECK_THAT(parse_redis_address("redis://host:0", address), Contains("1 to 65535"));
  CHECK_THAT(parse_redis_address("redis://host:65536", address), Contains("1 to 65535"));
  CHECK_THAT(parse_redis_address("redis://host:12x", address), Contains("1 to 65535"));
  CHECK_THAT(parse_redis_address("redis://::1:6379", address), Contains("brackets"));
  CHECK_THAT(parse_redis_address("redis://[::1:6379", address), Contains("']'"));
  CHECK_THAT(parse_redis_address("redis://user:pw@host:1", address), Contains("user name"));
  CHECK_THAT(parse_redis_address("redis://:@host:1", address), Contains("password after ':' is empty"));
  CHECK_THAT(parse_redis_address("rediss://host:1", address), Contains("unknown scheme"));
  CHECK_THAT(parse_redis_address("redis+unix://run/redis.sock", address), Contains("absolute"));
  const std::string secret = parse_redis_address("redis://:hunter2@host", address);
  CHECK_THAT(secret, Contains("***@host") && !Contains("hunter2"));
}

TEST_CASE("bus envelope: any bytes survive a round trip", "[bus][codec]") {
  std::string payload;
  for (int byte = 0; byte < 256; ++byte) payload.push_back(static_cast<char>(byte));
  const Envelope sent{"host:42:00ff", 0x0102030405060708ull, 0x1112131415161718ull, std::string(tag_size, '\x5a'), payload};
  const auto received = Envelope::decode(sent.encode());
  REQUIRE(received);
  CHECK(received->origin == sent.origin);
  CHECK(received->session == sent.session);
  CHECK(received->sequence == sent.sequence);
  CHECK(received->tag == sent.tag);
  CHECK(received->payload == payload);
  CHECK(received->signed_bytes() == Envelope{sent.origin, sent.session, sent.sequence, {}, payload}.encode());
  CHECK(Envelope::decode(Envelope{"o", 0, 0, {}, ""}.encode())->payload.empty());
  // Version 1 (before sequences and tags) is still read.
  const std::string v1 = std::string("\x01\x03old", 5) + std::string("\0\0\0\0\0\0\0\x09", 8) + "text";
  const auto old = Envelope::decode(v1);
  REQUIRE(old);
  CHECK((old->origin == "old" && old->session == 9 && old->sequence == 0 && old->tag.empty() && old->payload == "text"));
}

TEST_CASE("bus envelope: another version or a damaged message is skipped", "[bus][codec]") {
  const std::string good = Envelope{"origin", 7, 1, {}, "text"}.encode();
  std::string other = good;
  other[0] = 3;
  CHECK_FALSE(Envelope::decode(other));
  for (std::size_t cut = 0; cut < 2 + 6 + 8 + 8 + 1; ++cut) CHECK_FALSE(Envelope::decode(good.substr(0, cut)));
  CHECK_FALSE(Envelope::decode(std::string("\x01\x00", 2) + std::string(8, '\0')));  // empty origin
  std::string bad_tag = good;
  bad_tag[2 + 6 + 8 + 8] = 5;  // a tag is 0 or 32 bytes
  CHECK_FALSE(Envelope::decode(bad_tag + "12345"));
}

TEST_CASE("bus tag: an HMAC over channel and bytes compared in constant time", "[bus][codec]") {
  const std::string tag = bus_tag("the-key-0123456789", "chat:room:chat", "bytes");
  CHECK(tag.size() == tag_size);
  CHECK(same_tag(tag, bus_tag("the-key-0123456789", "chat:room:chat", "bytes")));
  CHECK_FALSE(same_tag(tag, bus_tag("the-key-0123456789", "chat:room:other", "bytes")));
  CHECK_FALSE(same_tag(tag, bus_tag("another-key-012345", "chat:room:chat", "bytes")));
  CHECK_FALSE(same_tag(tag, bus_tag("the-key-0123456789", "chat:room:chat", "bytes!")));
  CHECK_FALSE(same_tag("", ""));  // no tag never matches
  // The construction, against an HMAC-SHA256 computed elsewhere (Python's hmac module) over
  // "what do ya want" NUL "for nothing?" with the key "Jefe".
  const std::string known = bus_tag("Jefe", "what do ya want", "for nothing?");
  std::string hex;
  for (unsigned char c : known) hex += fmt::format("{:02x}", c);
  CHECK(hex == "adf13648edae17564744ff0aef28b138a329fa4a8104ff63388d270cef395d2b");
}

TEST_CASE("bus presence record: round trip and damage", "[bus][codec]") {
  const PresenceRecord record{4242, "vm", "127.0.0.1:5555", std::string("n\0ck\xff", 5), {}};
  const auto back = PresenceRecord::decode(record.encode());
  REQUIRE(back);
  CHECK((back->pid == 4242 && back->host == "vm" && back->peer == "127.0.0.1:5555" && back->label == record.label));
  const std::string bytes = record.encode();
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) CHECK_FALSE(PresenceRecord::decode(bytes.substr(0, cut)));
  CHECK_FALSE(PresenceRecord::decode(bytes + "x"));
  PresenceRecord tagged = record;
  tagged.tag = bus_tag("k", "field", record.signed_bytes());
  const auto tagged_back = PresenceRecord::decode(tagged.encode());
  REQUIRE(tagged_back);
  CHECK((tagged_back->tag == tagged.tag && tagged_back->label == record.label && tagged_back->signed_bytes() == bytes));
  const std::string tagged_bytes = tagged.encode();
  CHECK_FALSE(PresenceRecord::decode(tagged_bytes.substr(0, tagged_bytes.size() - 1)));
}
