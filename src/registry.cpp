#include "netserver/registry.hpp"

namespace netserver {

void Registry::broadcast(std::string_view bytes, const Session* except) const {
  for_each([&](Session& session) {
    if (&session != except) session.send(bytes);
  });
}

void Registry::add(std::shared_ptr<Session> session) {
  session->registry_index_ = sessions_.size();
  sessions_.push_back(std::move(session));
}

void Registry::remove(Session& session) {
  const std::size_t index = session.registry_index_;
  if (index >= sessions_.size() || sessions_[index].get() != &session) return;
  sessions_[index] = std::move(sessions_.back());
  sessions_[index]->registry_index_ = index;
  sessions_.pop_back();
}

}  // namespace netserver
