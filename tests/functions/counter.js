// Counts its calls in a global and a file in its directory: every call must print "1 false".
const fs = require("fs");
globalThis.count = (globalThis.count || 0) + 1;
const hadFile = fs.existsSync("state.txt");
fs.appendFileSync("state.txt", "x");
console.log(globalThis.count, hadFile);
