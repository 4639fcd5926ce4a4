#include "build_info.h"

#ifndef RELAY_GIT_COMMIT
#define RELAY_GIT_COMMIT "unknown"
#endif

const char *relay_build_commit(void) { return RELAY_GIT_COMMIT; }
