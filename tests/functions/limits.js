// Prints the rlimits this call runs under, as the kernel has them.
process.stdout.write(require("fs").readFileSync("/proc/self/limits", "utf8"));
