// Prints its environment as JSON: it must be (almost) empty.
console.log(JSON.stringify(process.env));
