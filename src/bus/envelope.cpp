#include "bus/envelope.hpp"

#include <charconv>

namespace netserver::bus {

namespace {

void put_u64(std::string& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((value >> shift) & 0xff));
}

void put_u32(std::string& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((value >> shift) & 0xff));
}

// Reads `bytes` big-endian bytes off the front of `in`; false when too short.
bool take_number(std::string_view& in, int bytes, std::uint64_t& value) {
  if (in.size() < static_cast<std::size_t>(bytes)) return false;
  value = 0;
  for (int i = 0; i < bytes; ++i) value = (value << 8) | static_cast<unsigned char>(in[i]);
  in.remove_prefix(bytes);
  return true;
}

bool take_field(std::string_view& in, std::string& field) {
  std::uint64_t length = 0;
  if (!take_number(in, 4, length) || in.size() < length) return false;
  field.assign(in.data(), length);
  in.remove_prefix(length);
  return true;
}

void put_field(std::string& out, std::string_view field) {
  put_u32(out, static_cast<std::uint32_t>(field.size()));
  out.append(field);
}

}  // namespace

std::string Envelope::encode() const {
  std::string out;
  out.reserve(2 + origin.size() + 8 + payload.size());
  out.push_back(static_cast<char>(version));
  out.push_back(static_cast<char>(origin.size()));
  out.append(origin);
  put_u64(out, session);
  out.append(payload);
  return out;
}

std::optional<Envelope> Envelope::decode(std::string_view in) {
  std::uint64_t number = 0;
  if (!take_number(in, 1, number) || number != version) return std::nullopt;
  if (!take_number(in, 1, number) || number == 0 || in.size() < number) return std::nullopt;
  Envelope envelope;
  envelope.origin.assign(in.data(), number);
  in.remove_prefix(number);
  if (!take_number(in, 8, envelope.session)) return std::nullopt;
  envelope.payload.assign(in.data(), in.size());
  return envelope;
}

std::string PresenceRecord::encode() const {
  std::string out(1, static_cast<char>(version));
  put_field(out, std::to_string(pid));
  put_field(out, host);
  put_field(out, peer);
  put_field(out, label);
  return out;
}

std::optional<PresenceRecord> PresenceRecord::decode(std::string_view in) {
  std::uint64_t number = 0;
  if (!take_number(in, 1, number) || number != version) return std::nullopt;
  PresenceRecord record;
  std::string pid;
  if (!take_field(in, pid) || !take_field(in, record.host) || !take_field(in, record.peer) ||
      !take_field(in, record.label) || !in.empty())
    return std::nullopt;
  const auto [end, error] = std::from_chars(pid.data(), pid.data() + pid.size(), record.pid);
  if (error != std::errc() || end != pid.data() + pid.size()) return std::nullopt;
  return record;
}

}  // namespace netserver::bus
