"""C, Rust and Go: WASI command modules in wasmtime, with the deadline watch and our WASI host."""
