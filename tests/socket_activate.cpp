// socket_activate: starts a program the way systemd's socket activation does -- with a listening
// socket on descriptor 3, LISTEN_FDS=1 and LISTEN_PID=its pid -- for tests.
//   socket_activate 127.0.0.1:0 PROGRAM ARGS...

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: socket_activate IPV4:PORT PROGRAM ARGS...\n");
    return 2;
  }
  const std::string address = argv[1];
  const std::size_t colon = address.rfind(':');
  sockaddr_in where{};
  where.sin_family = AF_INET;
  where.sin_port = htons(static_cast<std::uint16_t>(std::atoi(address.substr(colon + 1).c_str())));
  ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &where.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&where), sizeof where) != 0 || ::listen(fd, 128) != 0) {
    std::perror("socket_activate: bind");
    return 1;
  }
  if (fd != 3 && (::dup2(fd, 3) != 3 || ::close(fd) != 0)) return 1;
  ::setenv("LISTEN_FDS", "1", 1);
  ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
  ::execv(argv[2], argv + 2);
  std::perror("socket_activate: exec");
  return 1;
}
