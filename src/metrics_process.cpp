#include "metrics_process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace netserver {

namespace {

// /proc/stat's btime: the boot time, to which a process's start (in clock ticks) is relative.
double boot_time() {
  static const double seconds = [] {
    std::ifstream in("/proc/stat");
    for (std::string line; std::getline(in, line);)
      if (line.starts_with("btime ")) return std::strtod(line.c_str() + 6, nullptr);
    return 0.0;
  }();
  return seconds;
}

std::int64_t count_descriptors(pid_t pid) {
  DIR* dir = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!dir) return -1;
  std::int64_t count = 0;
  while (const dirent* entry = ::readdir(dir))
    if (entry->d_name[0] != '.') ++count;
  ::closedir(dir);
  return pid == ::getpid() ? count - 1 : count;  // not counting the directory's own descriptor
}

double seconds_of(const timeval& time) { return static_cast<double>(time.tv_sec) + time.tv_usec / 1e6; }

// /proc/PID/stat in one read(2): a scrape reads it for every process of the server.
std::string read_stat(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buffer[1024];
  const ssize_t n = ::read(fd, buffer, sizeof buffer - 1);
  ::close(fd);
  return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

ProcessStats read_process_stats(pid_t pid) {
  ProcessStats stats;
  const std::string text = read_stat(pid);
  const std::size_t name_end = text.rfind(')');  // the command name may hold spaces and parentheses
  if (name_end == std::string::npos) return stats;
  // Fields from 3 (state) on, split at spaces; stat(5) numbers them from 1.
  std::vector<std::string_view> field;
  std::string_view rest = std::string_view(text).substr(name_end + 1);
  while (!rest.empty() && field.size() < 22) {
    const std::size_t start = rest.find_first_not_of(' ');
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    const std::size_t end = std::min(rest.find(' '), rest.size());
    field.push_back(rest.substr(0, end));
    rest.remove_prefix(end);
  }
  if (field.size() < 22) return stats;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const auto number = [&](std::size_t index) { return std::strtod(std::string(field[index]).c_str(), nullptr); };
  stats.alive = true;
  stats.cpu_seconds = (number(11) + number(12)) / ticks;         // utime, stime
  stats.reaped_cpu_seconds = (number(13) + number(14)) / ticks;  // cutime, cstime
  stats.start_time = boot_time() + number(19) / ticks;     // starttime
  stats.resident_bytes = static_cast<std::int64_t>(number(21)) * ::sysconf(_SC_PAGESIZE);  // rss in pages
  stats.open_fds = count_descriptors(pid);
  return stats;
}

double own_and_reaped_cpu_seconds() {
  rusage self{}, children{};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &children);
  return seconds_of(self.ru_utime) + seconds_of(self.ru_stime) + seconds_of(children.ru_utime) +
         seconds_of(children.ru_stime);
}

}  // namespace netserver
