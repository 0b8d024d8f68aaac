<?php
// A fork storm, as forkbomb.py: as many sleeping children as it can get, then how many, and wait.
$marker = trim(stream_get_contents(STDIN)) ?: "minifaas-hostile-marker";
$made = 0;
for ($i = 0; $i < 2000; $i++) {
    $pid = pcntl_fork();
    if ($pid < 0) {
        break;
    }
    if ($pid === 0) {
        pcntl_exec("/bin/sh", ["-c", "sleep 120; :", $marker]);
        exit(1);
    }
    $made++;
}
echo $made, "\n";
sleep(120);
