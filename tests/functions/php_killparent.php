<?php
// Kills its parent: in a warm php that is the fork server, which must be replaced, not trusted.
$stat = file_get_contents("/proc/self/stat");
$ppid = (int) explode(" ", substr($stat, strrpos($stat, ")") + 2))[1];
exec("kill -9 " . $ppid);
usleep(200000);
echo "still here\n";
