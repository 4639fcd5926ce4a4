#include <sqlite3.h>
#include "sqlite_setup.h"

/* With memory statistics on (SQLite's default), every SQLite allocation takes one process-wide mutex, and Debian's
 * SQLite is built without lookaside, so every statement allocates. The state store's writer and its readers then
 * wait on each other there: 60,000 futex calls a second in a batched drain. Nothing in the relay reads the
 * statistics. sqlite3_config is variadic (Swift cannot call it) and only works before SQLite's first use, hence a
 * constructor: it runs when the binary loads, before any command or test can open a database. */
static int setup_result = -1;

__attribute__((constructor)) static void relay_sqlite_setup(void) {
    setup_result = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

int relay_sqlite_setup_result(void) {
    return setup_result;
}
