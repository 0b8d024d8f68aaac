// Writes a little on both streams, then exits with status 3.
#include <stdio.h>

int main(void) {
    printf("partial output\n");
    fprintf(stderr, "something went wrong\n");
    return 3;
}
