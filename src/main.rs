fn main() {
    println!("wanda-ipfs {}", env!("CARGO_PKG_VERSION"));
}
