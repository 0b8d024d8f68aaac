<?php
// Prepended (auto_prepend_file) to a php started ahead of its call by reference/worker/warm/runtimes.py: it holds
// the function's script back until the worker says go, so php's start-up is off the request path.
// The go pipe's fd comes as the made-up ini setting minifaas.go_fd, invisible to the script.
$minifaas_go = fopen("php://fd/" . get_cfg_var("minifaas.go_fd"), "r");
if ($minifaas_go === false || fread($minifaas_go, 1) !== "g") {
    exit(0);
}
fclose($minifaas_go);
unset($minifaas_go);
