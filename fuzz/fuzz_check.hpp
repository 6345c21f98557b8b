#pragma once
// What every fuzz target shares: a check that stops the run on a broken property, the way a
// sanitizer stops it on a memory error (libFuzzer then saves the input that did it).

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition)                                                              \
  do {                                                                                     \
    if (!(condition)) {                                                                    \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (false)
