// Keeps 1 MiB strings until the heap runs out: for the memory limit.
const blocks = [];
for (;;) blocks.push("x".repeat(1 << 20) + blocks.length);
