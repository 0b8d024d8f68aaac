// Allocates (and touches) memory 1 MiB at a time until malloc fails: for the memory limit.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    // The blocks are chained so that the compiler cannot drop the allocations as unused.
    char **head = NULL;
    for (size_t mib = 0;; mib++) {
        char **block = malloc(1 << 20);
        if (!block) {
            fprintf(stderr, "out of memory after %zu MiB (%p)\n", mib, (void *)head);
            return 1;
        }
        memset(block, 1, 1 << 20);
        *block = (char *)head;
        head = block;
    }
}
