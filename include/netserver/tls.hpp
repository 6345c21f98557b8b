#pragma once
/// What a TLS connection negotiated, as a handler sees it through Session::tls() (null on a
/// plaintext connection).

#include <string>

namespace netserver {

/// Filled once the handshake has completed; constant for the session's life.
struct TlsInfo {
  std::string version;       ///< "TLSv1.3", "TLSv1.2"
  std::string cipher;        ///< "TLS_AES_256_GCM_SHA384"
  std::string server_name;   ///< the SNI name the client asked for ("" when it sent none)
  std::string alpn;          ///< the ALPN protocol selected ("" when none was)
  std::string peer_subject;  ///< the client certificate's subject, RFC 2253 ("CN=alice,O=Example"); "" when none
  bool peer_verified = false;  ///< the client presented a certificate and it verified against tls.ca_file
  bool resumed = false;      ///< the session was resumed (ticket or cache), no full handshake
};

}  // namespace netserver
