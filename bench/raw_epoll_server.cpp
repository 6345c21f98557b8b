// raw_epoll_server: the yardstick for one process on one core. A minimal single-threaded epoll
// server speaking the echo and chat demos' lines, with nothing else: no configuration, limits,
// timeouts, hooks or logging. Like netserver's Multiplex it writes a client's own replies right
// after handling its input and writes broadcasts once per batch of events. In chat, every
// newcomer is welcomed and announced to everyone already there; the accepts of one batch all
// happen before that batch's one write per client (the join storm's yardstick).
//
//   raw_epoll_server echo|chat PORT [BACKLOG]     (BACKLOG: listen(2) queue, default 4096)

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Client {
  int fd = -1;
  std::string name;
  std::string in;
  std::string out;
  std::size_t index = 0;       // position in `clients`
  bool dirty = false;          // has output waiting for the end-of-batch flush
  bool writable_wanted = false;
  bool closing = false;
};

int epoll_fd = -1;
bool chat = false;
std::vector<Client*> clients;
std::vector<Client*> dirty;
std::vector<Client*> closed;   // freed after the batch, when no pointer to them is in use

void watch(Client& c, bool writable) {
  epoll_event event{};
  event.events = EPOLLIN | (writable ? EPOLLOUT : 0u);
  event.data.ptr = &c;
  epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c.fd, &event);
  c.writable_wanted = writable;
}

void drop(Client& c);

void flush(Client& c) {
  std::size_t sent = 0;
  while (sent < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + sent, c.out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    c.out.clear();
    return drop(c);
  }
  c.out.erase(0, sent);
  if (c.out.empty() && c.closing) return drop(c);
  if (!c.out.empty() != c.writable_wanted) watch(c, !c.out.empty());
}

void broadcast(std::string_view text, const Client* except) {
  for (Client* other : clients) {
    if (other == except || other->closing) continue;
    other->out.append(text);
    if (!other->dirty) {
      other->dirty = true;
      dirty.push_back(other);
    }
  }
}

void drop(Client& c) {
  if (c.fd < 0) return;
  epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c.fd, nullptr);
  ::close(c.fd);
  c.fd = -1;
  clients[c.index] = clients.back();
  clients[c.index]->index = c.index;
  clients.pop_back();
  if (chat) broadcast("Unfortunately " + c.name + " left us\r\n", &c);
  closed.push_back(&c);
}

void accept_all(int listener) {
  for (;;) {
    sockaddr_in peer{};
    socklen_t length = sizeof peer;
    const int fd = ::accept4(listener, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    auto* c = new Client;
    c->fd = fd;
    char address[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &peer.sin_addr, address, sizeof address);
    c->name = std::string(address) + ":" + std::to_string(ntohs(peer.sin_port));
    c->index = clients.size();
    clients.push_back(c);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = c;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event);
    if (chat) {
      c->out = "Welcome, to the server!\r\n";
      broadcast("Please welcome " + c->name + ", who just joined us\r\n", c);
    } else {
      c->out = "Welcome to \"raw\" (personality raw-epoll, pid " + std::to_string(::getpid()) + ")\r\n";
    }
    flush(*c);
  }
}

void handle_line(Client& c, std::string_view line) {
  if (!chat) {
    c.out.append(line).append("\r\n");
    return;
  }
  if (line.empty()) return;
  broadcast("Client " + c.name + " said: " + std::string(line) + "\r\n", &c);
  if (line == "bye") c.closing = true;
}

void read_from(Client& c) {
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return drop(c);
    if (n < 0) break;
    c.in.append(buffer, static_cast<std::size_t>(n));
    if (static_cast<std::size_t>(n) < sizeof buffer) break;
  }
  std::size_t start = 0;
  for (std::size_t end; !c.closing && (end = c.in.find('\n', start)) != std::string::npos; start = end + 1) {
    std::size_t length = end - start;
    if (length > 0 && c.in[end - 1] == '\r') --length;
    handle_line(c, std::string_view(c.in).substr(start, length));
  }
  c.in.erase(0, start);
  flush(c);
}

int listen_on(int port, int backlog) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(fd, backlog) != 0) {
    std::perror("raw_epoll_server: bind/listen");
    std::exit(1);
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4 || (std::string_view(argv[1]) != "echo" && std::string_view(argv[1]) != "chat")) {
    std::fprintf(stderr, "usage: raw_epoll_server echo|chat PORT [BACKLOG]\n");
    return 2;
  }
  chat = std::string_view(argv[1]) == "chat";
  std::signal(SIGPIPE, SIG_IGN);
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  const int listener = listen_on(std::atoi(argv[2]), argc == 4 ? std::atoi(argv[3]) : 4096);
  epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.ptr = nullptr;
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener, &event);
  std::fprintf(stderr, "listening on 127.0.0.1:%s\n", argv[2]);
  epoll_event events[1024];
  for (;;) {
    const int ready = ::epoll_wait(epoll_fd, events, 1024, -1);
    for (int i = 0; i < ready; ++i) {
      auto* c = static_cast<Client*>(events[i].data.ptr);
      if (!c) {
        accept_all(listener);
        continue;
      }
      if (c->fd < 0) continue;
      if (events[i].events & EPOLLOUT) flush(*c);
      if (c->fd >= 0 && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) read_from(*c);
    }
    for (std::size_t d = 0; d < dirty.size(); ++d) {  // a flush may drop a client, which adds more
      dirty[d]->dirty = false;
      if (dirty[d]->fd >= 0) flush(*dirty[d]);
    }
    dirty.clear();
    for (Client* c : closed) delete c;
    closed.clear();
  }
}
