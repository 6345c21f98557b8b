#pragma once
/// Single: one process serving one client at a time. The next client waits in the kernel's
/// backlog and sees nothing until the current one leaves. Handler code may block.

#include "netserver/personality.hpp"

namespace netserver {

class Single : public Personality {
 public:
  /// Registry entry: name "single", no config block.
  static PersonalityInfo info();
  void loop(Server& server) override;
};

}  // namespace netserver
