// Prints its environment as the process has it and as a program it starts gets it: the
// function's own variables and PATH, nothing the platform's start added.
const { execFileSync } = require("child_process");

const child = execFileSync("/usr/bin/env", { encoding: "utf8" }).split("\n").filter((line) => line);
console.log(JSON.stringify({
  process: Object.keys(process.env).sort(),
  child: child.map((line) => line.split("=")[0]).sort(),
}));
