#pragma once
/// systemd integration through libsystemd: readiness and status notifications (sd_notify; a
/// no-op when not started by systemd) and socket activation (sd_listen_fds).

#include <string>

namespace netserver::systemd {

/// Sends one notification ("READY=1", "STATUS=...") when NOTIFY_SOCKET is set.
void notify(const std::string& state);
/// Number of listening sockets systemd passed (descriptors 3, 4, ...), 0 when none; removes
/// LISTEN_FDS/LISTEN_PID from the environment.
int listen_fds();
/// The first descriptor systemd passes.
inline constexpr int first_fd = 3;

}  // namespace netserver::systemd
