//! Compiles Weir's wire schemas in `proto/` with prost-build, fed by protox so
//! that a fresh machine needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/weir.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
