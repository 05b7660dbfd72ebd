//! Compiles the review API (`proto/tierline/review/v1/review.proto`) with tonic, plus a descriptor set for
//! gRPC server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("review_descriptor.bin"))
        .compile_protos(&["proto/tierline/review/v1/review.proto"], &["proto"])?;
    Ok(())
}
