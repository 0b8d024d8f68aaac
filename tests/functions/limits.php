<?php
// Prints the rlimits this call runs under, as the kernel has them.
echo file_get_contents("/proc/self/limits");
