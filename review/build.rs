//! Compiles the client side of the review API from the cloud crate's
//! `proto/tierline/review/v1/review.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../cloud/proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &["../cloud/proto/tierline/review/v1/review.proto"],
            &["../cloud/proto"],
        )?;
    Ok(())
}
