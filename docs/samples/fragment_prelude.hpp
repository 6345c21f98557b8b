// What a ```cpp fragment of the docs assumes: the docs tests compile each fragment after this
// (tests/test_docs.cpp). A fragment is a part of a program -- a class, a function -- not a whole
// one; it uses netserver's public header and the standard library, nothing else.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <netserver/netserver.hpp>

using namespace std::chrono_literals;
