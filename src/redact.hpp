#pragma once
// Secrets kept out of what the server prints.

#include <string>
#include <string_view>

namespace netserver {

/// `text` with the password of every "scheme://[USER]:PASSWORD@" in it replaced by "***": the bus
/// address carries Redis's password, and no error, log line or --check-config dump may show it.
std::string without_passwords(std::string_view text);

}  // namespace netserver
