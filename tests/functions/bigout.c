// Writes 3 MiB on stdout, more than the 1 MiB output limit, then exits normally.
#include <stdio.h>

int main(void) {
    for (int i = 0; i < 3 * 1024; i++) {
        for (int j = 0; j < 1023; j++)
            putchar('x');
        putchar('\n');
    }
    return 0;
}
