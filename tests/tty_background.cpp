// tty_background: runs a program as a background job of a fresh terminal set to `stty tostop`, as
// a shell runs `program &` -- the kernel then sends SIGTTOU to the job when it writes to the
// terminal. Whatever the program writes there is copied to this helper's standard output.
//   tty_background PROGRAM ARGS...     (execs PROGRAM: its pid is the helper's)

#include <pty.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tty_background PROGRAM ARGS...\n");
    return 2;
  }
  int master = -1, slave = -1;
  if (::openpty(&master, &slave, nullptr, nullptr, nullptr) != 0 || ::setsid() < 0 ||
      ::ioctl(slave, TIOCSCTTY, 0) != 0) {
    std::perror("tty_background: openpty/setsid/TIOCSCTTY");
    return 1;
  }
  termios modes{};
  ::tcgetattr(slave, &modes);
  modes.c_lflag |= TOSTOP;
  modes.c_oflag &= ~static_cast<tcflag_t>(OPOST);  // no CR added before each LF
  ::tcsetattr(slave, TCSANOW, &modes);
  const pid_t copier = ::fork();
  if (copier == 0) {  // the foreground job: copies the terminal's output until it is closed
    ::setpgid(0, 0);
    ::close(slave);
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(master, buffer, sizeof buffer)) > 0)
      if (::write(STDOUT_FILENO, buffer, static_cast<size_t>(n)) != n) break;
    ::_exit(0);
  }
  ::setpgid(copier, copier);
  ::tcsetpgrp(slave, copier);  // from here on this process is a background job
  ::close(master);
  ::dup2(slave, STDERR_FILENO);
  ::close(slave);
  ::execvp(argv[1], argv + 1);
  std::perror("tty_background: execvp");
  return 1;
}
