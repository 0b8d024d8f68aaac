<?php
// Never ends: for the timeout.
for (;;) {}
