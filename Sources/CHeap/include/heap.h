#ifndef RELAY_HEAP_H
#define RELAY_HEAP_H

/// Returns the heap's free memory to the system (glibc's malloc_trim, which Swift's Glibc module does not export).
/// 1 if memory was released, else 0.
int relay_heap_trim(void);

#endif
