<?php
// Tries to leave something for its next call: a file in /tmp and in /dev/shm, a static, a class,
// a constant, a background process. Prints what it found of the previous call's, then the pid
// of the process it left running (which must be gone when the call has ended).
function minifaas_test_counter() { static $n = 0; return ++$n; }
$found = [];
foreach (["/tmp/left", "/dev/shm/left"] as $path) {
    if (file_exists($path)) { $found[] = $path; }
    file_put_contents($path, "x");
}
if (defined("LEFT_CONSTANT")) { $found[] = "constant"; }
define("LEFT_CONSTANT", 1);
if (minifaas_test_counter() !== 1) { $found[] = "static"; }
if (ini_get("precision") !== "14") { $found[] = "ini"; }
ini_set("precision", "3");
$pid = pcntl_fork();
if ($pid === 0) {
    exec("sleep 30");   // a grandchild holding on
    exit(0);
}
echo $found ? implode(",", $found) : "fresh", " ", $pid, "\n";
