#include "netserver/errors.hpp"

#include <cstring>

namespace netserver {

std::string system_error_text(const std::string& what, int error_number) {
  return what + ": " + std::strerror(error_number);
}

}  // namespace netserver
