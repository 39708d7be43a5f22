//! Tessera token server binary.
fn main() {}
