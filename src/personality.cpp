#include "netserver/personality.hpp"

#include <algorithm>

#include "fork.hpp"
#include "multiplex.hpp"
#include "prefork.hpp"
#include "single.hpp"

namespace netserver {

Personalities Personalities::builtin() {
  Personalities personalities;
  personalities.add(Single::info());
  personalities.add(Multiplex::info());
  personalities.add(PreFork::info());
  personalities.add(Fork::info());
  return personalities;
}

void Personalities::add(PersonalityInfo info) {
  auto same = [&](const PersonalityInfo& other) { return other.name == info.name; };
  if (auto it = std::find_if(infos_.begin(), infos_.end(), same); it != infos_.end()) *it = std::move(info);
  else infos_.push_back(std::move(info));
}

const PersonalityInfo* Personalities::find(std::string_view name) const {
  auto it = std::find_if(infos_.begin(), infos_.end(), [&](const PersonalityInfo& info) { return info.name == name; });
  return it == infos_.end() ? nullptr : &*it;
}

std::vector<std::string> Personalities::names() const {
  std::vector<std::string> names;
  for (const PersonalityInfo& info : infos_) names.push_back(info.name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace netserver
