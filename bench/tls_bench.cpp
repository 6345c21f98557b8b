// tls_bench: the TLS load generator of scripts/bench-tls (netbench speaks plaintext only). Blocking
// OpenSSL clients, one thread per connection; the same client runs plaintext with --plain, so
// that TLS and plaintext figures come from one tool.
//
//   tls_bench echo      --port P --connections N --duration D [--plain]   closed-loop round trips
//   tls_bench handshake --port P --connections N --duration D             full handshakes (no resumption)
//   tls_bench resume    --port P --connections N --duration D             resumed handshakes (the ticket of
//                                                                         each connection resumes the next)
//   tls_bench idle      --port P --connections N --server-pid PID         server memory per idle connection
//
// Each prints one line of key=value pairs.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Options {
  std::string mode;
  int port = 0;
  std::size_t connections = 1;
  double duration = 3;
  int server_pid = 0;
  bool plain = false;
};

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "tls_bench: %s\n", message.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  if (argc < 2) die("usage: tls_bench echo|handshake|resume|idle --port P [--connections N] [--duration S] [--server-pid PID] [--plain]");
  Options options;
  options.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--plain") {
      options.plain = true;
      continue;
    }
    if (i + 1 >= argc) die(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--port") options.port = std::stoi(value);
    else if (flag == "--connections") options.connections = std::stoul(value);
    else if (flag == "--duration") options.duration = std::stod(value);
    else if (flag == "--server-pid") options.server_pid = std::stoi(value);
    else die("unknown option " + flag);
  }
  return options;
}

// One client connection, plaintext or TLS, with blocking reads of whole lines.
class Connection {
 public:
  Connection(int port, SSL_CTX* context, SSL_SESSION* resume = nullptr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) die(std::string("connect(): ") + std::strerror(errno));
    if (!context) return;
    ssl_ = SSL_new(context);
    SSL_set_fd(ssl_, fd_);
    if (resume) SSL_set_session(ssl_, resume);
    if (SSL_connect(ssl_) != 1) die("TLS handshake failed");
  }
  bool resumed() const { return ssl_ && SSL_session_reused(ssl_) == 1; }
  /// Sends close_notify: OpenSSL marks the session of a connection freed without it unresumable.
  void close_notify() {
    if (ssl_) SSL_shutdown(ssl_);
  }
  /// The session to resume next time (TLS 1.3: its ticket came after the handshake, with the banner).
  SSL_SESSION* session() const { return ssl_ ? SSL_get1_session(ssl_) : nullptr; }
  ~Connection() {
    if (ssl_) SSL_free(ssl_);  // no close_notify: the bench measures the server, not goodbyes
    if (fd_ >= 0) ::close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void write(const std::string& bytes) {
    const int n = ssl_ ? SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()))
                       : static_cast<int>(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL));
    if (n != static_cast<int>(bytes.size())) die("write failed");
  }
  void read_line() {
    for (;;) {
      if (const std::size_t end = buffer_.find('\n'); end != std::string::npos) {
        buffer_.erase(0, end + 1);
        return;
      }
      char chunk[4096];
      const int n = ssl_ ? SSL_read(ssl_, chunk, sizeof chunk) : static_cast<int>(::recv(fd_, chunk, sizeof chunk, 0));
      if (n <= 0) die("the server closed the connection");
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::string buffer_;
};

SSL_CTX* client_context(bool plain, bool resumable = false) {
  if (plain) return nullptr;
  SSL_CTX* context = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION);
  // Every handshake a full one, unless resuming: then the tickets are kept in each connection's
  // session (handed on by hand, never in OpenSSL's cache).
  SSL_CTX_set_session_cache_mode(context, resumable ? SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE : SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(context, SSL_MODE_RELEASE_BUFFERS);          // 10,000 idle clients stay small here too
  return context;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// N connections, each sending a 32-byte line and waiting for it to come back, for --duration.
void echo(const Options& options) {
  SSL_CTX* context = client_context(options.plain);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> trips{0};
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < options.connections; ++i) {
    threads.emplace_back([&] {
      Connection connection(options.port, context);
      connection.read_line();  // the banner
      const std::string line(30, 'x');
      std::uint64_t mine = 0;
      while (!stop) {
        connection.write(line + "\n");
        connection.read_line();
        ++mine;
      }
      trips += mine;
    });
  }
  const double start = now();
  std::this_thread::sleep_for(std::chrono::duration<double>(options.duration));
  stop = true;
  for (auto& thread : threads) thread.join();
  std::printf("mode=echo tls=%s connections=%zu round_trips_per_s=%.0f\n", options.plain ? "no" : "yes",
              options.connections, static_cast<double>(trips) / (now() - start));
}

// Full handshakes (no resumption), banner read, close; --connections loops at once.
void handshake(const Options& options) {
  SSL_CTX* context = client_context(false);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> count{0};
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < options.connections; ++i) {
    threads.emplace_back([&] {
      while (!stop) {
        Connection connection(options.port, context);
        connection.read_line();
        ++count;
      }
    });
  }
  const double start = now();
  std::this_thread::sleep_for(std::chrono::duration<double>(options.duration));
  stop = true;
  for (auto& thread : threads) thread.join();
  std::printf("mode=handshake handshakes=%llu handshakes_per_s=%.0f\n", static_cast<unsigned long long>(count.load()),
              static_cast<double>(count) / (now() - start));
}

// Resumed handshakes: each loop resumes with the ticket its previous connection got (the first
// one is a full handshake), banner read, close. Prints how many resumed: a server that refuses
// tickets shows resumed=0.
void resume(const Options& options) {
  SSL_CTX* context = client_context(false, true);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> count{0}, resumed{0};
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < options.connections; ++i) {
    threads.emplace_back([&] {
      SSL_SESSION* last = nullptr;
      while (!stop) {
        Connection connection(options.port, context, last);
        connection.read_line();
        ++count;
        if (connection.resumed()) ++resumed;
        if (last) SSL_SESSION_free(last);
        last = connection.session();
        connection.close_notify();
      }
      if (last) SSL_SESSION_free(last);
    });
  }
  const double start = now();
  std::this_thread::sleep_for(std::chrono::duration<double>(options.duration));
  stop = true;
  for (auto& thread : threads) thread.join();
  std::printf("mode=resume handshakes=%llu resumed=%llu handshakes_per_s=%.0f\n",
              static_cast<unsigned long long>(count.load()), static_cast<unsigned long long>(resumed.load()),
              static_cast<double>(count) / (now() - start));
}

long rss_kib(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string word;
  while (status >> word)
    if (word == "VmRSS:") {
      long kib = 0;
      status >> kib;
      return kib;
    }
  return -1;
}

// Opens --connections connections one after another, then compares the server's RSS.
void idle(const Options& options) {
  if (options.server_pid <= 0) die("idle needs --server-pid");
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  SSL_CTX* context = client_context(options.plain);
  const long before = rss_kib(options.server_pid);
  std::vector<std::unique_ptr<Connection>> held;
  for (std::size_t i = 0; i < options.connections; ++i) {
    held.push_back(std::make_unique<Connection>(options.port, context));
    held.back()->read_line();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const long after = rss_kib(options.server_pid);
  std::printf("mode=idle tls=%s connections=%zu server_rss_before_kib=%ld server_rss_after_kib=%ld per_connection_kib=%.1f\n",
              options.plain ? "no" : "yes", options.connections, before, after,
              static_cast<double>(after - before) / static_cast<double>(options.connections));
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  if (options.mode == "echo") echo(options);
  else if (options.mode == "handshake") handshake(options);
  else if (options.mode == "resume") resume(options);
  else if (options.mode == "idle") idle(options);
  else die("unknown mode " + options.mode);
}
