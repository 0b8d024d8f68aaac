<?php
// An attacker after the operator's terminal, as terminal.py: opens /dev/tty (the controlling
// terminal of its session, if any) and says its process group. The
// calls' PHP has no posix extension: the group comes from /proc/self/stat (field 5, the pgid).
$stat = file_get_contents("/proc/self/stat");
$fields = explode(" ", substr($stat, strrpos($stat, ")") + 2));
$got = ["tty" => null, "pid" => getmypid(), "pgid" => (int) $fields[2]];
$tty = @fopen("/dev/tty", "r+");
if ($tty !== false) {
    $got["tty"] = "/dev/tty";
    fclose($tty);
} else {
    $got["tty_error"] = error_get_last()["message"] ?? "refused";
}
echo json_encode($got), "\n";
