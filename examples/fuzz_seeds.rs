//! Writes the seeds the fuzz targets start from (`fuzz/seeds/<target>/`):
//! a few valid inputs per target, from `casemesh::fuzzing::seeds`. Run it
//! again when an encoding changes:
//!
//! ```sh
//! cargo run --example fuzz_seeds -- fuzz/seeds
//! ```

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    let mut written = 0;
    for seed in casemesh::fuzzing::seeds()? {
        let folder = dir.join(seed.target);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join(&seed.name), &seed.bytes)?;
        written += 1;
    }
    println!("{written} seeds written under {}", dir.display());
    Ok(())
}
