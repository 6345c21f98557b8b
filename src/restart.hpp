#pragma once
/// Restart without dropping the port (SIGHUP): the running process execs a fresh image of the
/// same program -- same executable, arguments and working directory -- and hands it the listening
/// sockets, named in the environment. Sessions in flight stay with processes of the old image.

#include <sys/types.h>

#include <string>
#include <utility>
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
  bool detached = false;        ///< the previous image already went into the background
  bool restarted = false;       ///< a previous image started this one (HUP); not on a first start, socket-activated or not

  /// Reads, and removes from the environment, what a restart or systemd passed.
  static Inheritance take();
};

/// Adopts inherited sockets for the configured addresses, binds the others, closes inherited
/// sockets no longer configured. Sockets from systemd replace the configured addresses.
std::vector<Listener> open_listeners(const std::vector<ListenAddress>& addresses, Inheritance& inherited,
                                     const BindOptions& options);

/// A descriptor the next image must get beside the listeners, by name ("pid_lock"): it stays
/// close-on-exec except across a restart's exec. `fd` -1 forgets the name.
void keep_across_restart(const std::string& name, int fd);
/// In a restarted image: the descriptor the previous one kept as `name` (-1 when none); taken
/// once. Inheritance::take() must have run.
int take_inherited_descriptor(const std::string& name);
/// Closes what the previous image kept and this one did not take (a key no longer configured).
void close_untaken_descriptors();

/// How to start this program again, recorded at start-up (before any chdir).
class Relauncher {
 public:
  Relauncher(int argc, char** argv);
  /// Starts the new image in a process of its own (a child of this one), handing it `listeners`,
  /// the descriptors kept across restarts (keep_across_restart) and `descriptors`, with
  /// `environment` added. Returns its pid, or -1 when fork failed (logged); an exec that fails
  /// ends that process with status 127 (its stderr says why).
  pid_t start(const std::vector<const Listener*>& listeners, const std::vector<int>& descriptors,
              const std::vector<std::pair<std::string, std::string>>& environment, bool detached) const;
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
