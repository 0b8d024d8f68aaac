<?php
// Counts its calls in a global and a file in its directory: every call must print "1 false".
$GLOBALS["count"] = ($GLOBALS["count"] ?? 0) + 1;
$hadFile = file_exists("state.txt");
file_put_contents("state.txt", "x", FILE_APPEND);
echo $GLOBALS["count"], " ", var_export($hadFile, true), "\n";
