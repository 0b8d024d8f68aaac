// Preloaded (node -r) into a node started ahead of its call by reference/worker/warm/runtimes.py: it holds the
// function's script back until the worker says go, so node's start-up is off the request path.
// The worker appends the go pipe's fd to argv; it is taken off here, so the script sees the
// argv of a plain `node code.js`.
"use strict";
const fs = require("fs");
// Keep PATH and the function's own variables, which the worker names in MINIFAAS_ENV; drop the
// rest, which the start added (bwrap's PWD). `delete` unsets them in the process too.
if (process.env.MINIFAAS_ENV !== undefined) {
  const keep = new Set(process.env.MINIFAAS_ENV.split(",").concat(["PATH"]));
  for (const name of Object.keys(process.env).filter((name) => !keep.has(name))) {
    delete process.env[name];
  }
}
const fd = Number(process.argv.pop());
const go = Buffer.alloc(1);
let n = 0;
try {
  n = fs.readSync(fd, go, 0, 1, null);
} catch (err) {
  n = 0;
}
if (n !== 1) {
  process.exit(0); // the worker went away or dropped this spare: the script never runs
}
fs.closeSync(fd);
