use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // The vendored google/api protos are imported for the `google.api.http`
    // annotations only: no Rust code is generated for them, but the descriptor
    // set carries them (protoc --include_imports), so the gateway reads the
    // HTTP routes from it.
    println!("cargo:rerun-if-changed=google/api");
    // Naming one path turns off cargo's default of re-running on any change
    // in the package, so the compiled protos are named too.
    println!("cargo:rerun-if-changed=posts");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("posts_v1_descriptor.bin"))
        .compile_protos(
            &["posts/v1/post.proto", "posts/v1/command.proto", "posts/v1/query.proto"],
            &["."],
        )?;
    Ok(())
}
