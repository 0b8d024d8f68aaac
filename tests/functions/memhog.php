<?php
// Keeps 1 MiB strings until memory_limit is hit: for the memory limit.
$blocks = [];
for (;;) {
    $blocks[] = str_repeat("x", 1 << 20) . count($blocks);
}
