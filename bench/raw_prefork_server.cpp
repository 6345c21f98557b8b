// raw_prefork_server: the yardstick for the process-per-client model. N children share the
// listening socket; each blocks in accept(), then in read()/write() for one client at a time. No
// configuration, pool management, timers, hooks or logging: the least a prefork server can do.
//
//   raw_prefork_server PORT CHILDREN

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void serve(int client) {
  const std::string banner = "Welcome to \"raw\" (personality raw-prefork, pid " + std::to_string(::getpid()) + ")\r\n";
  (void)::write(client, banner.data(), banner.size());
  char in[65536];
  std::string pending, out;
  for (;;) {
    const ssize_t n = ::read(client, in, sizeof in);
    if (n <= 0) break;
    pending.append(in, static_cast<std::size_t>(n));
    std::size_t start = 0;
    for (std::size_t end; (end = pending.find('\n', start)) != std::string::npos; start = end + 1) {
      std::size_t length = end - start;
      if (length > 0 && pending[end - 1] == '\r') --length;
      out.append(pending, start, length).append("\r\n");
    }
    pending.erase(0, start);
    if (!out.empty() && ::write(client, out.data(), out.size()) < 0) break;
    out.clear();
  }
  ::close(client);
}

[[noreturn]] void child(int listener) {
  std::signal(SIGTERM, SIG_DFL);
  for (;;) {
    const int client = ::accept(listener, nullptr, nullptr);
    if (client >= 0) serve(client);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: raw_prefork_server PORT CHILDREN\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(listener, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(std::atoi(argv[1])));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(listener, 4096) != 0) {
    std::perror("raw_prefork_server: bind/listen");
    return 1;
  }
  std::vector<pid_t> children;
  for (int i = 0; i < std::atoi(argv[2]); ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) child(listener);
    children.push_back(pid);
  }
  std::fprintf(stderr, "listening on 127.0.0.1:%s with %zu children\n", argv[1], children.size());
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  ::sigprocmask(SIG_BLOCK, &stop, nullptr);
  int received = 0;
  ::sigwait(&stop, &received);
  for (pid_t pid : children) ::kill(pid, SIGTERM);
  for (pid_t pid : children) ::waitpid(pid, nullptr, 0);
  return 0;
}
