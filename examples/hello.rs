// Says hello from Rust, then echoes its input if there is any.
use std::io::{self, Read};

fn main() {
    let mut input = String::new();
    io::stdin().read_to_string(&mut input).unwrap_or(0);
    println!("Hello from Rust!");
    if !input.is_empty() {
        println!("{}", input);
    }
}
