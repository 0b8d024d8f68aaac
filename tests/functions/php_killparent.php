<?php
// Kills its parent: in a warm php that is the fork server, which must be replaced, not trusted.
// Through FFI (loaded in the warm php), not `kill` in a shell, so no process of the call's own
// outlives it to blur what the test sees.
$stat = file_get_contents("/proc/self/stat");
$ppid = (int) explode(" ", substr($stat, strrpos($stat, ")") + 2))[1];
FFI::cdef("int kill(int pid, int sig);")->kill($ppid, 9);
usleep(200000);
echo "still here\n";
