use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("posts_v1_descriptor.bin"))
        .compile_protos(
            &["posts/v1/post.proto", "posts/v1/command.proto", "posts/v1/query.proto"],
            &["."],
        )?;
    Ok(())
}
