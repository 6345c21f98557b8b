// The listen-address parser ("127.0.0.1:80", "[::1]:80", "*:80", "80", "unix:/path", "tls://..."). A parsed
// address prints (text()) as something that parses back to the same address.

#include <cstdint>
#include <string>

#include <netserver/listener.hpp>

#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  netserver::ListenAddress address;
  std::string problem;
  if (!netserver::ListenAddress::parse(text, address, problem)) {
    FUZZ_CHECK(!problem.empty());
    return 0;
  }
  netserver::ListenAddress again;
  FUZZ_CHECK(netserver::ListenAddress::parse(address.text(), again, problem));
  FUZZ_CHECK(again.text() == address.text());
  FUZZ_CHECK(again.kind == address.kind && again.scheme == address.scheme && again.host == address.host &&
             again.port == address.port &&
             again.path == address.path);
  return 0;
}
