#include "systemd.hpp"

#include <systemd/sd-daemon.h>

#include <cstring>

#include "netserver/log.hpp"

namespace netserver::systemd {

void notify(const std::string& state) {
  if (const int rc = ::sd_notify(0, state.c_str()); rc < 0)
    log::warning("sd_notify(\"{}\"): {}", state, std::strerror(-rc));
}

int listen_fds() {
  const int count = ::sd_listen_fds(1);
  if (count < 0) log::warning("sd_listen_fds(): {}", std::strerror(-count));
  return count > 0 ? count : 0;
}

}  // namespace netserver::systemd
