// A resident node for one function deployed with reuse=true, run by reference/worker/warm/reuse.py
// inside the function's sandbox, as its uid: it loads the function's script again as the main
// module for each call, in the same interpreter, so globalThis and the module cache are there at
// the next call. A call ends when node's event loop is empty ('beforeExit'), as a plain
// `node code.js` would end; process.exit() or an uncaught error ends this interpreter (the
// worker starts another at the next call).
//
// argv: the script, the go pipe's fd, the done pipe's fd. "ready\n" on the done pipe once
// started; then, for each byte read from the go pipe, one call with the stdin, stdout and
// stderr the worker prepared (fds 0, 1, 2, offsets at 0), answered "<exit status> 0\n".
"use strict";
const fs = require("fs");
const path = require("path");
const Module = require("module");

// The same environment as a fresh call's (warm_node.js).
if (process.env.MINIFAAS_ENV !== undefined) {
  const keep = new Set(process.env.MINIFAAS_ENV.split(",").concat(["PATH"]));
  Object.keys(process.env).filter((name) => !keep.has(name)).forEach((name) => delete process.env[name]);
}
const [script, goArg, doneArg] = process.argv.slice(2);
const go = Number(goArg);
const done = Number(doneArg);
const source = fs.readFileSync(script, "utf8");
const node = process.argv[0];
const byte = Buffer.alloc(1);

// process.stdin is made at its first use and then kept: a new one for each call.
let stdin = null;
Object.defineProperty(process, "stdin", {
  configurable: true,
  enumerable: true,
  get() {
    if (stdin === null) {
      stdin = new fs.ReadStream(null, { fd: 0, autoClose: false });
      stdin.fd = 0;
    }
    return stdin;
  },
});

function nextCall() {
  let n = 0;
  try {
    n = fs.readSync(go, byte, 0, 1, null);
  } catch (err) {
    n = 0;
  }
  if (n !== 1) {
    process.reallyExit(0); // the worker went away or closed this resident
  }
  stdin = null;
  process.exitCode = undefined;
  process.argv = [node, script];
  const main = new Module(script, null);
  main.filename = script;
  main.id = ".";
  main.paths = Module._nodeModulePaths(path.dirname(script));
  process.mainModule = main;
  main._compile(source, script);
  main.loaded = true;
}

process.on("beforeExit", () => {
  const code = Number(process.exitCode || 0) & 0xff;
  fs.writeSync(done, `${code} 0\n`);
  // Not now: node exits after 'beforeExit' unless its loop has work again; an immediate is work.
  setImmediate(nextCall);
});

fs.writeSync(done, "ready\n");
nextCall();
