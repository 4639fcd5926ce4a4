#include "build_info.h"

// Written by `make stamp-commit`; absent from a plain `swift build`, and from git.
#if __has_include("commit.h")
#include "commit.h"
#endif

#ifndef RELAY_GIT_COMMIT
#define RELAY_GIT_COMMIT "unknown"
#endif

const char *relay_build_commit(void) { return RELAY_GIT_COMMIT; }
