<?php
// An attacker in PHP: given other functions' pids, files and a loopback port (JSON on stdin),
// tries to read those processes, write those files and connect to the port.
$task = json_decode(file_get_contents("php://stdin") ?: "{}", true) ?: [];
$got = ["read" => [], "write" => [], "connect" => []];
foreach ($task["pids"] ?? [] as $pid) {
    foreach (["cmdline", "environ"] as $name) {
        if (@file_get_contents("/proc/$pid/$name") !== false) { $got["read"][] = "$pid/$name"; }
    }
}
foreach ($task["paths"] ?? [] as $path) {
    if (@file_put_contents($path, "\n<?php echo 'HIJACKED';\n", FILE_APPEND) !== false) { $got["write"][] = $path; }
}
foreach ($task["ports"] ?? [] as $port) {
    $s = @fsockopen("127.0.0.1", $port, $errno, $errstr, 2);
    if ($s !== false) { $got["connect"][] = $port; fclose($s); }
}
echo json_encode($got), "\n";
