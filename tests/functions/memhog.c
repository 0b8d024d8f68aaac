// Allocates (and touches) memory 1 MiB at a time until malloc fails: for the memory limit.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    for (size_t mib = 0;; mib++) {
        char *p = malloc(1 << 20);
        if (!p) {
            fprintf(stderr, "out of memory after %zu MiB\n", mib);
            return 1;
        }
        memset(p, 1, 1 << 20);
    }
}
