// Adds the numbers in its JSON input: {"a": 2, "b": 3} or [1, 2, 3].
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const data = JSON.parse(input || "[]");
  const numbers = Array.isArray(data) ? data : Object.values(data);
  const sum = numbers.reduce((total, n) => total + Number(n), 0);
  console.log(JSON.stringify({ sum }));
});
