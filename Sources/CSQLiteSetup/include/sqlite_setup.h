#ifndef RELAY_SQLITE_SETUP_H
#define RELAY_SQLITE_SETUP_H

/// What turning off SQLite's memory statistics returned when the binary loaded: 0 (SQLITE_OK), or SQLite's error
/// code. SQLite reads its process-wide settings only before its first use, so they are made before any code runs.
int relay_sqlite_setup_result(void);

#endif
