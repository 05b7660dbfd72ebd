//! Compiles the wire contract (`proto/tierline/v1/wire.proto`) with prost.

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto");
    prost_build::compile_protos(&["proto/tierline/v1/wire.proto"], &["proto"])
}
