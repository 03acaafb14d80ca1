//! Writes the seed inputs of the fuzz targets into a directory, one
//! subdirectory per target (`decode`, `rewrite`, `encap`, `capture_file`),
//! one file per seed: `cargo run -p vigil-sensor --features fuzzing
//! --example fuzz_seeds -- DIR`. `scripts/fuzz.sh` starts every run from
//! them.

use std::path::{Path, PathBuf};

use vigil_sensor::fuzzing::{encap_seeds, seeds};
use vigil_sensor::synth::{BulkConfig, FrameSize};

fn write(dir: &Path, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), s)?;
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args_os().nth(1).unwrap_or_else(|| "seeds".into()));
    let frames = seeds();
    write(&dir.join("decode"), &frames)?;
    write(&dir.join("rewrite"), &frames)?;
    write(&dir.join("encap"), &encap_seeds())?;
    // Small captures: plain traffic in 64-byte and IMIX frames.
    let captures: Vec<Vec<u8>> = [FrameSize::Fixed(64), FrameSize::Imix]
        .into_iter()
        .map(|frame| {
            BulkConfig {
                packets: 20,
                flows: 4,
                frame,
                ..BulkConfig::default()
            }
            .to_pcap_bytes()
        })
        .collect();
    write(&dir.join("capture_file"), &captures)
}
