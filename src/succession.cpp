#include "succession.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string_view>

#include <fmt/format.h>

#include "engine.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "server_runtime.hpp"
#include "signals.hpp"
#include "supervisor.hpp"
#include "systemd.hpp"

namespace netserver {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

constexpr const char* ready_variable = "NETSERVER_READY_FD";    // the image that started this one waits on it
constexpr const char* anchor_variable = "NETSERVER_ANCHOR_FD";  // "serving PID" lines for the anchor
constexpr const char* anchor_pid_variable = "NETSERVER_ANCHOR_PID";

// What the environment said (Succession::take_environment), and the anchor's own pipe.
int ready_fd = -1;        // this image says "ready" here once it serves
int anchor_write = -1;    // every image tells the anchor here that it serves (passed down the line)
int anchor_read = -1;     // in the anchor: where the announcements arrive
bool started_by_an_image = false;
pid_t anchor = 0;         // the anchor's pid (this process's own in the anchor)
pid_t serving_now = 0;    // in the anchor: the image that serves (after a hand-over)
bool stop_passed_on = false;  // a stop reached this image after its hand-over and went on down the line
std::set<pid_t> images;   // in the anchor: every image that announced itself (some may have ended)

int take_fd(const char* name) {
  const char* value = std::getenv(name);
  const int fd = value ? std::atoi(value) : -1;
  ::unsetenv(name);
  if (fd >= 0) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

// In the anchor, once: the pipe images announce themselves on, and the subreaper role (an image
// that exits after its own hand-over leaves its successor to the anchor, which then waits for it).
void prepare_anchor() {
  if (anchor_write >= 0) return;
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    log::warning("{}", system_error_text("pipe() for the images' announcements", errno));
    return;
  }
  anchor_read = pipe_fds[0];
  anchor_write = pipe_fds[1];
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) log::warning("{}", system_error_text("prctl(PR_SET_CHILD_SUBREAPER)", errno));
}

// The parent of `pid` from /proc (0 when it is gone).
pid_t parent_of(pid_t pid) {
  std::FILE* file = std::fopen(fmt::format("/proc/{}/stat", pid).c_str(), "r");
  if (!file) return 0;
  char line[512] = {};
  const bool read = std::fgets(line, sizeof line, file) != nullptr;
  std::fclose(file);
  const char* after_name = read ? std::strrchr(line, ')') : nullptr;  // the name may hold anything
  int parent = 0;
  if (!after_name || std::sscanf(after_name + 1, " %*c %d", &parent) != 1) return 0;
  return parent;
}

// An image pid is signalled only while it is still one of this process's descendants: one that
// ended and was reaped by another image may have given its pid to an unrelated process.
bool is_descendant(pid_t pid) {
  for (int depth = 0; depth < 64 && pid > 1; ++depth) {
    pid = parent_of(pid);
    if (pid == ::getpid()) return true;
  }
  return false;
}

void signal_image(pid_t pid, int signal) {
  if (pid > 0 && is_descendant(pid)) ::kill(pid, signal);
}

// "serving 1234\n" lines: the last complete one names the image serving now.
void note_announcements(std::string_view text) {
  for (std::size_t at = text.find("serving "); at != std::string_view::npos; at = text.find("serving ", at + 1)) {
    const long pid = std::atol(std::string(text.substr(at + 8, 12)).c_str());
    if (pid <= 0) continue;
    serving_now = static_cast<pid_t>(pid);
    images.insert(serving_now);
  }
}

void drain_announcements() {
  if (anchor_read < 0) return;
  char buffer[256];
  for (ssize_t n; (n = ::read(anchor_read, buffer, sizeof buffer)) > 0;)
    note_announcements(std::string_view(buffer, static_cast<std::size_t>(n)));
}

}  // namespace

// --- the new image on trial ------------------------------------------------------------------------

Successor::Successor(asio::io_context& io, ServerRuntime& runtime, Duration timeout, Outcome outcome)
    : ready_(io), deadline_(io), outcome_(std::move(outcome)) {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) {
    log::error("{}", system_error_text("HUP: pipe() for the new image's ready word; the running server carries on", errno));
    outcome_ = nullptr;
    return;
  }
  const std::string ready_text = std::to_string(ready[1]);
  const std::string anchor_text = std::to_string(anchor_write);
  pid_ = runtime.start_new_image({ready[1], anchor_write}, {{ready_variable, ready_text},
                                                           {anchor_variable, anchor_text},
                                                           {anchor_pid_variable, std::to_string(Succession::anchor_pid())}});
  ::close(ready[1]);
  if (pid_ <= 0) {
    ::close(ready[0]);
    outcome_ = nullptr;
    return;
  }
  ready_.assign(ready[0]);
  read_ready();
  deadline_.expires_after(timeout);
  deadline_.async_wait([this, timeout](const error_code& error) {
    if (error || !on_trial()) return;
    decide(false, fmt::format("did not report ready within restart_timeout ({} s); killed", to_seconds(timeout)));
  });
}

Successor::~Successor() {
  error_code ignored;
  deadline_.cancel();
  ready_.close(ignored);
}

void Successor::read_ready() {
  ready_.async_read_some(asio::buffer(word_), [this](const error_code& error, std::size_t n) {
    if (error == asio::error::operation_aborted || !on_trial()) return;
    if (!error && std::string_view(word_, n).starts_with("ready")) return decide(true, "");
    if (!error) return read_ready();
    // The pipe closed without the word: the new image is ending (its SIGCHLD reaps it and says
    // how), or it exec'd something that closed the descriptor and lives on: killed a moment later.
    if (reap() || !on_trial()) return;
    deadline_.expires_after(std::chrono::seconds(1));
    deadline_.async_wait([this](const error_code& error) {
      if (error || !on_trial() || reap()) return;
      decide(false, "closed its ready descriptor without saying it was ready; killed");
    });
  });
}

void Successor::decide(bool ready, const std::string& why) {
  deadline_.cancel();
  error_code ignored;
  ready_.close(ignored);
  if (!ready && !reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &exit_status_, 0);
    reaped_ = true;
  }
  if (!ready)
    log::error("HUP: the new image (pid {}) {}; the running server carries on (the new image's own lines above "
               "say why, when it got that far)",
               pid_, why);
  auto outcome = std::exchange(outcome_, nullptr);
  outcome(ready);
}

bool Successor::reap() {
  if (pid_ <= 0 || reaped_) return reaped_;
  if (::waitpid(pid_, &exit_status_, WNOHANG) != pid_) return false;
  reaped_ = true;
  if (on_trial()) decide(false, fmt::format("{} before it was ready", describe_wait_status(exit_status_)));
  return true;
}

void Successor::abandon() {
  if (!on_trial()) return;
  deadline_.cancel();
  outcome_ = nullptr;
  error_code ignored;
  ready_.close(ignored);
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &exit_status_, 0);
    reaped_ = true;
  }
  log::notice("the new image (pid {}) on trial was stopped", pid_);
}

// --- this image's part ------------------------------------------------------------------------------

Succession::Succession(asio::io_context& io, ServerRuntime& runtime, Hooks hooks)
    : io_(io), runtime_(runtime), hooks_(std::move(hooks)) {}

Succession::~Succession() = default;

void Succession::take_environment() {
  ready_fd = take_fd(ready_variable);
  anchor_write = take_fd(anchor_variable);
  started_by_an_image = ready_fd >= 0;
  const char* pid = std::getenv(anchor_pid_variable);
  anchor = started_by_an_image && pid ? static_cast<pid_t>(std::atol(pid)) : 0;
  ::unsetenv(anchor_pid_variable);
}

bool Succession::is_anchor() { return !started_by_an_image; }

pid_t Succession::anchor_pid() { return anchor > 0 ? anchor : ::getpid(); }

// The anchor hears it first: the image that started this one may exit as soon as it reads
// "ready", and the anchor must know whom to relay to by the time it reaps that image.
void Succession::announce_serving() {
  if (ready_fd < 0) return;
  if (anchor_write >= 0) {
    const std::string line = fmt::format("serving {}\n", ::getpid());
    [[maybe_unused]] const ssize_t ignored = ::write(anchor_write, line.data(), line.size());
  }
  [[maybe_unused]] const ssize_t ignored = ::write(ready_fd, "ready\n", 6);
  ::close(ready_fd);
  ready_fd = -1;
}

void Succession::hup() {
  if (handed_over_) return forward(SIGHUP);
  if (successor_ && successor_->on_trial()) {  // taken up once the trial ends: a HUP is never lost
    hup_pending_ = true;
    return log::notice("HUP: a new image is on trial already (pid {}); this HUP follows once it serves or fails",
                       successor_->pid());
  }
  if (!runtime_.prepare_restart()) return;
  if (is_anchor()) {
    prepare_anchor();
    watch_anchor_pipe();
  }
  start_successor();
}

void Succession::start_successor() {
  systemd::notify("RELOADING=1");
  successor_ = std::make_unique<Successor>(io_, runtime_, runtime_.stop_times().restart_timeout, [this](bool ready) {
    const bool again = std::exchange(hup_pending_, false);
    if (!ready) {
      runtime_.cancel_restart();
      systemd::notify("READY=1");
      if (again) asio::post(io_, [this] { hup(); });
      return;
    }
    handed_over_ = true;
    if (is_anchor()) images.insert(serving_now = successor_->pid());
    // The main pid stays the anchor's: it outlives every image (a non-anchor image leaves it be).
    systemd::notify(fmt::format("READY=1\nSTATUS=pid {} serves; the previous image finishes its sessions{}",
                                successor_->pid(), is_anchor() ? fmt::format("\nMAINPID={}", ::getpid()) : ""));
    log::notice("HUP: the new image (pid {}) serves; this one lets go of the listeners and finishes its work",
                successor_->pid());
    hooks_.let_go();
    runtime_.release_listeners();
    if (again) forward(SIGHUP);
  });
  if (!successor_->started()) {
    successor_.reset();
    runtime_.cancel_restart();
    systemd::notify("READY=1");
  }
}

// The anchor follows the images' announcements while it still serves or drains, so that whatever
// it passes on reaches the image serving now.
void Succession::watch_anchor_pipe() {
  if (anchor_pipe_ || anchor_read < 0) return;
  const int fd = ::fcntl(anchor_read, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return;
  anchor_pipe_ = std::make_unique<asio::posix::stream_descriptor>(io_, fd);
  anchor_pipe_->async_wait(asio::posix::descriptor_base::wait_read, [this](const error_code& error) {
    if (error) return;
    drain_announcements();
    anchor_pipe_.reset();
    watch_anchor_pipe();
  });
}

void Succession::forward(int signal) {
  if (!handed_over_) return;
  if (is_anchor()) drain_announcements();
  signal_image(is_anchor() && serving_now > 0 ? serving_now : successor_->pid(), signal);
}

void Succession::reap() {
  if (!successor_ || successor_->on_trial()) {
    if (successor_) successor_->reap();
    return;
  }
  if (successor_->reaped() || !successor_->reap()) return;
  if (is_anchor()) drain_announcements();
  if (is_anchor() && serving_now != successor_->pid()) return;
  if (stop_passed_on)  // this image passed a stop on: the next one ended because it was told to
    log::info("the image serving after this one (pid {}) {}", successor_->pid(), describe_wait_status(successor_->exit_status()));
  else
    log::error("the image serving after this one (pid {}) {} on its own", successor_->pid(),
               describe_wait_status(successor_->exit_status()));
}

void Succession::stop(int signal) {
  if (successor_ && successor_->on_trial()) successor_->abandon();
  if (!handed_over_) return;
  stop_passed_on = true;
  if (!is_anchor()) return forward(signal);
  drain_announcements();
  for (pid_t image : images) signal_image(image, signal);
}

// --- the anchor's relay ---------------------------------------------------------------------------

// The anchor with nothing of its own left: every signal a server acts on goes to the image serving
// now; every child that ends is reaped (the anchor is their subreaper). When the serving image ends
// after a stop, the server has stopped; when it ends on its own, the server is down: the images
// still finishing sessions are told to stop, and the exit status says it.
int Succession::relay(ServerRuntime& runtime) {
  asio::io_context io{single_threaded};
  SignalWatcher signals(io);
  bool stopping = stop_passed_on;  // the images were told already, while this one drained
  int status = exit_status::ok;
  drain_announcements();
  log::notice("pid {} relays signals to pid {}, which serves", ::getpid(), serving_now);
  const auto pass_on = [](int signal) {
    drain_announcements();
    signal_image(serving_now, signal);
  };
  const auto stop_all = [](int signal) {  // TERM, INT, QUIT reach the images still finishing sessions too
    drain_announcements();
    for (pid_t image : images) signal_image(image, signal);
  };
  const auto reap = [&] {
    drain_announcements();
    for (;;) {
      int wait_status = 0;
      const pid_t pid = ::waitpid(-1, &wait_status, WNOHANG);
      if (pid == 0) return;
      if (pid < 0) {  // no child left: every image has ended
        signals.stop();
        io.stop();
        return;
      }
      drain_announcements();
      images.erase(pid);
      if (pid != serving_now) continue;
      if (stopping) {
        status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : exit_status::failure;
        continue;
      }
      log::error("the serving image (pid {}) {} on its own: the server is down", pid, describe_wait_status(wait_status));
      status = exit_status::failure;
      stopping = true;
      stop_all(SIGTERM);  // the images still finishing sessions
    }
  };
  signals.on({SIGTERM, SIGINT, SIGQUIT}, [&](int signal) {
    stopping = true;
    systemd::notify("STOPPING=1");
    stop_all(signal);
  });
  signals.on({SIGHUP, SIGUSR1, SIGTTIN, SIGTTOU}, [&](int signal) {
    if (signal == SIGUSR1) runtime.reopen_log();
    pass_on(signal);
  });
  signals.on({SIGCHLD}, [&](int) { reap(); });
  reap();
  if (!stopping && (serving_now <= 0 || !is_descendant(serving_now))) {  // it died while this one drained
    log::error("the serving image (pid {}) is gone: the server is down", serving_now);
    status = exit_status::failure;
    stopping = true;
    stop_all(SIGTERM);
    reap();
  }
  io.run();
  return status;
}

}  // namespace netserver
