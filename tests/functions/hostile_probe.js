// An attacker in node: given other functions' pids, files and a loopback port (JSON on stdin),
// tries to signal and read those processes, write those files and connect to the port.
"use strict";
const fs = require("fs");
const net = require("net");
const task = JSON.parse(fs.readFileSync(0, "utf8") || "{}");
const got = { signal: [], read: [], write: [], connect: [] };
for (const pid of task.pids || []) {
  for (const name of ["cmdline", "environ"]) {
    try { fs.readFileSync(`/proc/${pid}/${name}`); got.read.push(`${pid}/${name}`); } catch (e) {}
  }
  try { process.kill(pid, "SIGKILL"); got.signal.push(pid); } catch (e) {}
}
for (const path of task.paths || []) {
  try { fs.appendFileSync(path, "\nconsole.log('HIJACKED');\n"); got.write.push(path); } catch (e) {}
}
let pending = (task.ports || []).length;
const done = () => console.log(JSON.stringify(got));
if (!pending) done();
for (const port of task.ports || []) {
  const s = net.connect({ host: "127.0.0.1", port });
  s.setTimeout(2000);
  const end = (ok) => { if (ok) got.connect.push(port); s.destroy(); if (--pending === 0) done(); };
  s.on("connect", () => end(true));
  s.on("error", () => end(false));
  s.on("timeout", () => end(false));
}
