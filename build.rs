//! Compiles Weir's wire schemas in `proto/` with prost-build, fed by protox so
//! that a fresh machine needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/weir.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // Payloads stay zero-copy `Bytes`; maps are BTreeMaps so iteration
    // order is deterministic (the simulator replays runs exactly).
    prost_build::Config::new()
        .bytes(["."])
        .btree_map(["."])
        .compile_fds(fds)?;
    Ok(())
}
