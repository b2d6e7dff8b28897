//! Fuzz target `verify_numeric`: small models of fuzzed shapes, values and scales written by the
//! real writer, then edited byte by byte, through the whole of `bundle verify` (see
//! `ternary_bundle::fuzzing::verify_numeric`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch directory per fuzzing process, on tmpfs when there is one (the writer fsyncs).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = root.join(format!("bundle-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ternary_bundle::fuzzing::verify_numeric(scratch(), data);
});
