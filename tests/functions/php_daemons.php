<?php
// Leaves daemons behind, as daemons.py: 20 double-forked, setsid sleepers and one busy loop, each
// named by the marker in its input; the call itself ends at once. None may outlive the call.
$marker = trim(stream_get_contents(STDIN)) ?: "minifaas-hostile-marker";
for ($i = 0; $i < 21; $i++) {
    $pid = pcntl_fork();
    if ($pid === 0) {
        if (pcntl_fork() === 0) {
            pcntl_exec("/bin/sh", ["-c", $i === 0 ? "while :; do :; done" : "sleep 120", $marker]);
        }
        exit(0);
    }
    pcntl_waitpid($pid, $status);
}
echo "left daemons\n";
