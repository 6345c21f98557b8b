// no_ipv6: an LD_PRELOAD shim that makes socket(AF_INET6, ...) fail with EAFNOSUPPORT, as on a
// kernel or container without IPv6 -- to test that host "*" still works there.

#include <dlfcn.h>
#include <sys/socket.h>

#include <cerrno>

extern "C" int socket(int domain, int type, int protocol) {
  using Socket = int (*)(int, int, int);
  static const Socket real = reinterpret_cast<Socket>(::dlsym(RTLD_NEXT, "socket"));
  if (domain == AF_INET6) {
    errno = EAFNOSUPPORT;
    return -1;
  }
  return real(domain, type, protocol);
}
