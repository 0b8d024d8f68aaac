<?php
// Says hello from PHP, then echoes its input if there is any.
$input = trim(file_get_contents("php://stdin"));
echo "Hello from PHP!\n";
if ($input !== "") {
    echo $input, "\n";
}
