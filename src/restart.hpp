#pragma once
/// Restart without dropping the port (SIGHUP): the running process execs a fresh image of the
/// same program -- same executable, arguments and working directory -- and hands it the listening
/// sockets, named in the environment. Sessions in flight stay with processes of the old image.

#include <sys/types.h>

#include <string>
#include <vector>

#include "netserver/listener.hpp"

namespace netserver {

/// What a process got from the image it replaced, or from systemd.
struct Inheritance {
  /// A listening socket: its descriptor and the address it was configured as ("127.0.0.1:0",
  /// "unix:/run/x.sock"), or "systemd" for one passed by socket activation.
  struct Socket {
    int fd = -1;
    std::string address;
  };
  std::vector<Socket> sockets;
  std::vector<pid_t> children;  ///< processes of the previous image this one waits for
  bool detached = false;        ///< the previous image already went into the background
  bool restarted = false;       ///< a previous image exec'd this one (HUP); not on a first start, socket-activated or not

  /// Reads, and removes from the environment, what a restart or systemd passed.
  static Inheritance take();
};

/// Adopts inherited sockets for the configured addresses, binds the others, closes inherited
/// sockets no longer configured. Sockets from systemd replace the configured addresses.
std::vector<Listener> open_listeners(const std::vector<ListenAddress>& addresses, Inheritance& inherited,
                                     const BindOptions& options);

/// How to start this program again, recorded at start-up (before any chdir).
class Relauncher {
 public:
  Relauncher(int argc, char** argv);
  /// Execs the new image with `listeners` and `children`. Returns only when exec failed, after
  /// logging why and undoing its preparations.
  void exec(const std::vector<const Listener*>& listeners, const std::vector<pid_t>& children, bool detached) const;
  /// The arguments the program was started with.
  const std::vector<std::string>& arguments() const { return arguments_; }
  /// The working directory at start-up.
  const std::string& directory() const { return directory_; }

 private:
  std::string executable_;
  std::vector<std::string> arguments_;
  std::string directory_;
};

}  // namespace netserver
