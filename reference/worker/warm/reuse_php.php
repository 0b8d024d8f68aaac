<?php
// A resident php for one function deployed with reuse=true, run by reference/worker/warm/reuse.py
// inside the function's sandbox, as its uid: it includes the function's script at global scope
// once per call, in the same interpreter, so its globals and statics are there at the next call.
// A function or class the script declares must be declared once (guard it with function_exists
// or class_exists): php cannot declare one twice. exit() or a fatal error ends this interpreter
// (the worker starts another at the next call).
//
// argv: the script, the go pipe's fd, the done pipe's fd. "ready\n" on the done pipe once
// started; then, for each byte read from the go pipe, one call with the stdin, stdout and
// stderr the worker prepared (fds 0, 1, 2, offsets at 0), answered "<exit status> 0\n".
// Everything of ours is in functions and constants named minifaas_*.

function minifaas_pipes()
{
    static $pipes = null;
    if ($pipes === null) {
        $argv = $_SERVER["argv"];
        $pipes = [fopen("php://fd/" . (int) $argv[2], "rb"), fopen("php://fd/" . (int) $argv[3], "wb")];
    }
    return $pipes;
}

function minifaas_next_call()
{
    [$go, $done] = minifaas_pipes();
    $byte = fread($go, 1);
    if ($byte === false || strlen($byte) !== 1) {
        return false;
    }
    $GLOBALS["argv"] = $_SERVER["argv"] = [MINIFAAS_SCRIPT];
    $GLOBALS["argc"] = $_SERVER["argc"] = 1;
    return true;
}

function minifaas_call_done()
{
    while (ob_get_level() > 0) {
        ob_end_flush();
    }
    flush();
    [$go, $done] = minifaas_pipes();
    fwrite($done, "0 0\n");
    fflush($done);
}

// The same environment as a fresh call's (warm_php.php's minifaas_own_environment).
$minifaas_keep = explode(",", (string) getenv("MINIFAAS_ENV"));
foreach (getenv("MINIFAAS_ENV") === false ? [] : array_keys(getenv()) as $minifaas_key) {
    if ($minifaas_key !== "PATH" && !in_array($minifaas_key, $minifaas_keep, true)) {
        putenv($minifaas_key);
        unset($_SERVER[$minifaas_key], $_ENV[$minifaas_key]);
    }
}
unset($minifaas_keep);
define("MINIFAAS_SCRIPT", $_SERVER["argv"][1]);
foreach (["SCRIPT_FILENAME", "SCRIPT_NAME", "PHP_SELF", "PATH_TRANSLATED"] as $minifaas_key) {
    $_SERVER[$minifaas_key] = MINIFAAS_SCRIPT;
}
unset($minifaas_key);
[$minifaas_go, $minifaas_done] = minifaas_pipes();
fwrite($minifaas_done, "ready\n");
fflush($minifaas_done);
unset($minifaas_go, $minifaas_done);
while (minifaas_next_call()) {
    include MINIFAAS_SCRIPT;
    minifaas_call_done();
}
exit(0);
