// Reports what the platform's WASI gives a C program, one "name value" line per fact
// (tests/test_wasi.py reads them). Each fact is one system interface call or a few.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <wasi/api.h>

static double seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    printf("argc %d\n", argc);
    printf("argv0 %s\n", argv[0]);
    printf("realtime %.0f\n", seconds(CLOCK_REALTIME));

    double before = seconds(CLOCK_MONOTONIC);
    struct timespec nap = {0, 30 * 1000 * 1000};
    nanosleep(&nap, NULL);
    printf("slept_ms %.0f\n", (seconds(CLOCK_MONOTONIC) - before) * 1000);

    unsigned char a[16], b[16];
    getentropy(a, sizeof a);
    getentropy(b, sizeof b);
    printf("random ");
    for (int i = 0; i < 16; i++) printf("%02x", a[i]);
    printf(" %s\n", memcmp(a, b, sizeof a) ? "differ" : "same");

    FILE *f = fopen("/etc/passwd", "r");
    printf("fopen %s\n", f ? "opened" : strerror(errno));

    char buf[1000];
    size_t total = 0, n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) total += n;
    printf("stdin_bytes %zu\n", total);

    size_t written = 0;
    __wasi_ciovec_t outside = {(const uint8_t *)0xFFFFFFF0u, 64};
    printf("bad_pointer %d\n", __wasi_fd_write(1, &outside, 1, &written));
    __wasi_ciovec_t fine = {(const uint8_t *)"x", 1};
    printf("other_fd %d\n", __wasi_fd_write(7, &fine, 1, &written));
    fflush(stdout);
    fprintf(stderr, "to stderr\n");
    return 0;
}
