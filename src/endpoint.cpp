#include "endpoint.hpp"

#include <fmt/format.h>

#include "netserver/config.hpp"
#include "netserver/errors.hpp"
#include "tls.hpp"

namespace netserver {

namespace {

class PlainFactory final : public TransportFactory {
 public:
  std::shared_ptr<Transport> make(Transport::Socket socket) override { return make_plain_transport(std::move(socket)); }
  bool plaintext() const override { return true; }
};

class TlsFactory final : public TransportFactory {
 public:
  TlsFactory(std::shared_ptr<TlsContext> context, std::size_t listener) : context_(std::move(context)), listener_(listener) {}
  std::shared_ptr<Transport> make(Transport::Socket socket) override {
    return context_->make_transport(std::move(socket), listener_);
  }
  bool plaintext() const override { return false; }

 private:
  std::shared_ptr<TlsContext> context_;
  std::size_t listener_;  // which certificates its listener serves
};

}  // namespace

TransportSchemes TransportSchemes::load(const Config& config, const std::vector<ListenAddress>& addresses) {
  TransportSchemes schemes;
  schemes.factories_["tcp"] = std::make_shared<PlainFactory>();
  std::vector<std::string> tls_listeners;
  for (const ListenAddress& address : addresses)
    if (address.tls()) tls_listeners.push_back(address.text());
  if (!tls_listeners.empty()) {
    schemes.tls_ = TlsContext::load(config, tls_listeners);
    schemes.factories_["tls"] = std::make_shared<TlsFactory>(schemes.tls_, 0);
    for (const std::string& listener : tls_listeners)
      schemes.tls_listeners_[listener] = std::make_shared<TlsFactory>(schemes.tls_, schemes.tls_->served_for(listener));
  }
  return schemes;
}

void TransportSchemes::keep_across_restart() const {
  if (tls_) tls_->keep_ticket_secret_across_restart();
}

std::shared_ptr<TransportFactory> TransportSchemes::factory(const std::string& scheme, const std::string& address) const {
  if (const auto found = tls_listeners_.find(address); scheme == "tls" && found != tls_listeners_.end()) return found->second;
  return factory(scheme);
}

std::shared_ptr<TransportFactory> TransportSchemes::factory(const std::string& scheme) const {
  const auto found = factories_.find(scheme);
  if (found == factories_.end()) throw Error(fmt::format("no transport loaded for scheme \"{}\"", scheme));
  return found->second;
}

}  // namespace netserver
