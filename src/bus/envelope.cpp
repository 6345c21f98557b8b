#include "bus/envelope.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

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

// The keyed HMAC state, made once per key and thread: re-initialised with the same key for each
// message (EVP_MAC_init with no key keeps it), about 5x cheaper than OpenSSL's one-shot HMAC(),
// which fetches the digest and schedules the key every time (bench/results/bus-hardening.md).
class KeyedMac {
 public:
  KeyedMac() = default;
  ~KeyedMac() { reset(); }
  KeyedMac(const KeyedMac&) = delete;
  KeyedMac& operator=(const KeyedMac&) = delete;

  EVP_MAC_CTX* with(std::string_view secret) {
    if (context_ != nullptr && secret == secret_) return EVP_MAC_init(context_, nullptr, 0, nullptr) == 1 ? context_ : nullptr;
    reset();
    mac_ = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    context_ = mac_ ? EVP_MAC_CTX_new(mac_) : nullptr;
    if (context_ == nullptr) return nullptr;
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
    if (EVP_MAC_init(context_, reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), params) != 1) {
      reset();
      return nullptr;
    }
    secret_.assign(secret);
    return context_;
  }

 private:
  void reset() {
    EVP_MAC_CTX_free(context_);
    EVP_MAC_free(mac_);
    context_ = nullptr;
    mac_ = nullptr;
    OPENSSL_cleanse(secret_.data(), secret_.size());
    secret_.clear();
  }
  EVP_MAC* mac_ = nullptr;
  EVP_MAC_CTX* context_ = nullptr;
  std::string secret_;
};

std::string bus_tag(std::string_view secret, std::string_view context, std::string_view bytes) {
  static thread_local KeyedMac keyed;
  EVP_MAC_CTX* mac = keyed.with(secret);
  if (mac == nullptr) return {};
  const unsigned char separator = 0;
  unsigned char digest[EVP_MAX_MD_SIZE];
  std::size_t length = 0;
  if (EVP_MAC_update(mac, reinterpret_cast<const unsigned char*>(context.data()), context.size()) != 1 ||
      EVP_MAC_update(mac, &separator, 1) != 1 ||
      EVP_MAC_update(mac, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()) != 1 ||
      EVP_MAC_final(mac, digest, &length, sizeof digest) != 1)
    return {};
  return std::string(reinterpret_cast<const char*>(digest), length);
}

bool same_tag(std::string_view a, std::string_view b) {
  return a.size() == b.size() && !a.empty() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string Envelope::encode() const {
  std::string out;
  out.reserve(2 + origin.size() + 17 + tag.size() + payload.size());
  out.push_back(static_cast<char>(version));
  out.push_back(static_cast<char>(origin.size()));
  out.append(origin);
  put_u64(out, session);
  put_u64(out, sequence);
  out.push_back(static_cast<char>(tag.size()));
  out.append(tag);
  out.append(payload);
  return out;
}

std::string Envelope::signed_bytes() const {
  Envelope untagged = *this;
  untagged.tag.clear();
  return untagged.encode();
}

std::optional<Envelope> Envelope::decode(std::string_view in) {
  std::uint64_t number = 0;
  if (!take_number(in, 1, number) || (number != 1 && number != version)) return std::nullopt;
  const bool tagged_format = number == version;
  if (!take_number(in, 1, number) || number == 0 || in.size() < number) return std::nullopt;
  Envelope envelope;
  envelope.origin.assign(in.data(), number);
  in.remove_prefix(number);
  if (!take_number(in, 8, envelope.session)) return std::nullopt;
  if (tagged_format) {
    if (!take_number(in, 8, envelope.sequence) || !take_number(in, 1, number)) return std::nullopt;
    if ((number != 0 && number != tag_size) || in.size() < number) return std::nullopt;
    envelope.tag.assign(in.data(), number);
    in.remove_prefix(number);
  }
  envelope.payload.assign(in.data(), in.size());
  return envelope;
}

std::string PresenceRecord::signed_bytes() const {
  std::string out(1, static_cast<char>(version));
  put_field(out, std::to_string(pid));
  put_field(out, host);
  put_field(out, peer);
  put_field(out, label);
  return out;
}

std::string PresenceRecord::encode() const {
  std::string out = signed_bytes();
  if (tag.empty()) return out;
  out[0] = static_cast<char>(version + 1);
  put_field(out, tag);
  return out;
}

std::optional<PresenceRecord> PresenceRecord::decode(std::string_view in) {
  std::uint64_t number = 0;
  if (!take_number(in, 1, number) || (number != version && number != version + 1)) return std::nullopt;
  const bool tagged = number == version + 1;
  PresenceRecord record;
  std::string pid;
  if (!take_field(in, pid) || !take_field(in, record.host) || !take_field(in, record.peer) ||
      !take_field(in, record.label) || (tagged && (!take_field(in, record.tag) || record.tag.size() != tag_size)) ||
      !in.empty())
    return std::nullopt;
  const auto [end, error] = std::from_chars(pid.data(), pid.data() + pid.size(), record.pid);
  if (error != std::errc() || end != pid.data() + pid.size()) return std::nullopt;
  return record;
}

}  // namespace netserver::bus
