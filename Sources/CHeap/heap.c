#include <malloc.h>
#include "heap.h"

int relay_heap_trim(void) {
    return malloc_trim(0);
}
