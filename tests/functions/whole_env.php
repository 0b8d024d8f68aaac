<?php
// Prints its environment as the process has it (getenv(), $_ENV, the variables among $_SERVER's
// keys) and as a program it starts gets it: the function's own variables and PATH, nothing the
// platform's start added.
$proc = proc_open(["/usr/bin/env"], [1 => ["pipe", "w"]], $pipes);
$child = array_filter(explode("\n", stream_get_contents($pipes[1])));
proc_close($proc);
$names = function ($lines) {
    $out = array_map(fn($line) => explode("=", $line, 2)[0], array_values($lines));
    sort($out);
    return $out;
};
$process = array_keys(getenv());
sort($process);
$env = array_keys($_ENV);
sort($env);
$server = array_values(array_intersect(array_keys($_SERVER), ["PWD", "MINIFAAS_ENV", "PATH", "GREETING", "API_TOKEN"]));
sort($server);
echo json_encode(["process" => $process, "child" => $names($child), "env" => $env, "server" => $server]), "\n";
