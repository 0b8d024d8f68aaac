// Busy-loops on the CPU for the number of milliseconds given as input (default 20).
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

int main(void) {
    char buf[64] = {0};
    fread(buf, 1, sizeof buf - 1, stdin);
    double ms = atof(buf) > 0 ? atof(buf) : 20;
    double start = now_ms();
    volatile unsigned long spins = 0;
    while (now_ms() - start < ms)
        spins++;
    printf("spun %.1f ms (%lu loops)\n", now_ms() - start, (unsigned long)spins);
    return 0;
}
