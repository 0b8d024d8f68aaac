// Over its memory_mb in children while the main process waits (memhold.py's node twin): three
// node children of 60 MB each and a main process that waits for a minute.
const { spawn } = require("child_process");

const fill = "const b = Buffer.alloc(60 << 20, 1); setTimeout(() => b.length, 60000);";
for (let i = 0; i < 3; i++) {
  spawn(process.execPath, ["-e", fill], { stdio: "ignore" });
}
console.log("waiting");
setTimeout(() => {}, 60000);
