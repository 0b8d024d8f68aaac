// Sleeps for the number of milliseconds on stdin, then says so: a sleep is not a busy loop, and
// must still end at the function's time limit.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void) {
    char buf[32] = {0};
    fread(buf, 1, sizeof buf - 1, stdin);
    long ms = atol(buf);
    struct timespec nap = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&nap, NULL);
    printf("awake after %ld ms\n", ms);
    return 0;
}
