#ifndef RELAY_BUILD_INFO_H
#define RELAY_BUILD_INFO_H

/// The git commit this binary was built from, as `make release` stamps it, else "unknown".
const char *relay_build_commit(void);

#endif
