//! The `zfabric` command line.

fn main() {
    println!("zfabric");
}
