#pragma once
/// @file
/// netserver's version as preprocessor macros. This header is the one place the version is
/// written: the top-level CMakeLists.txt reads it for `project(VERSION)`, so the CMake package,
/// netserver.pc and the Debian packages carry the same number.

/// Major version: 0 while the API may still change between minor versions.
#define NETSERVER_VERSION_MAJOR 0
/// Minor version: at 0.x a new minor version may change the API (see CHANGELOG.md).
#define NETSERVER_VERSION_MINOR 2
/// Patch version: fixes only, no API change.
#define NETSERVER_VERSION_PATCH 0

/// The version as one number, MAJOR * 10000 + MINOR * 100 + PATCH (0.2.0 is 200), for
/// `#if NETSERVER_VERSION >= 200`.
#define NETSERVER_VERSION \
  (NETSERVER_VERSION_MAJOR * 10000 + NETSERVER_VERSION_MINOR * 100 + NETSERVER_VERSION_PATCH)

/// @cond INTERNAL
#define NETSERVER_VERSION_TEXT_(x) #x
#define NETSERVER_VERSION_TEXT(x) NETSERVER_VERSION_TEXT_(x)
/// @endcond

/// The version as text, "0.2.0".
#define NETSERVER_VERSION_STRING                                               \
  NETSERVER_VERSION_TEXT(NETSERVER_VERSION_MAJOR) "." NETSERVER_VERSION_TEXT( \
      NETSERVER_VERSION_MINOR) "." NETSERVER_VERSION_TEXT(NETSERVER_VERSION_PATCH)
