//! Exhaustive corruption detection on the smallest fixture: every byte of every file (the
//! manifest included, through its own digest, rule 7.3) is damaged in turn, and `verify` must
//! fail naming the damaged file. The full sweep over every bit is an ignored test
//! (`cargo test --release --test suite corruption:: -- --ignored`).

use std::path::Path;

use ternary_bundle::verify::{verify, Check, VerifyOptions};

const FIXTURE: &str = "fixtures/bundles/tiny-trit5-tensor";
const FILES: [&str; 3] = ["manifest.json", "ternary.safetensors", "fp16.safetensors"];

fn copy_fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}

/// Applies `damage(byte)` to each byte of each data file in turn; returns the flips checked.
fn sweep(masks: &[u8]) -> usize {
    let tmp = copy_fixture();
    let options = VerifyOptions {
        only: vec![Check::Files, Check::Checksums, Check::Structure],
        ..Default::default()
    };
    let mut checked = 0;
    for file in FILES {
        let path = tmp.path().join(file);
        let original = std::fs::read(&path).unwrap();
        for i in 0..original.len() {
            for &mask in masks {
                let mut damaged = original.clone();
                damaged[i] ^= mask;
                std::fs::write(&path, &damaged).unwrap();
                let report = verify(tmp.path(), &options);
                assert!(!report.ok, "{file}: byte {i} ^ {mask:#04x} went undetected");
                let failed: Vec<_> = report
                    .checks
                    .iter()
                    .filter(|c| c.status == ternary_bundle::verify::Status::Fail)
                    .collect();
                assert!(
                    failed.iter().any(|c| c.detail.contains(file)),
                    "{file}: byte {i} ^ {mask:#04x}: no failure names the file: {:?}",
                    failed.iter().map(|c| &c.detail).collect::<Vec<_>>()
                );
                checked += 1;
            }
        }
        std::fs::write(&path, &original).unwrap();
    }
    checked
}

#[test]
fn every_damaged_byte_of_every_file_is_detected() {
    let n = sweep(&[0xFF]);
    assert!(n > 1000, "{n} flips");
    eprintln!("{n} damaged bytes, all detected");
}

#[test]
#[ignore = "full bit sweep: about 8x the byte sweep; run with --ignored"]
fn every_flipped_bit_of_every_file_is_detected() {
    let n = sweep(&[1, 2, 4, 8, 16, 32, 64, 128]);
    eprintln!("{n} flipped bits, all detected");
}

#[test]
fn damaged_bundles_make_the_binary_exit_1_naming_the_file() {
    let tmp = copy_fixture();
    for file in FILES {
        let path = tmp.path().join(file);
        let original = std::fs::read(&path).unwrap();
        // A sample of positions: every 61st byte, and the first, tenth and last.
        let mut positions: Vec<usize> = (0..original.len()).step_by(61).collect();
        positions.extend([9, original.len() - 1]);
        for i in positions {
            let mut damaged = original.clone();
            damaged[i] ^= 0x10;
            std::fs::write(&path, &damaged).unwrap();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_bundle"))
                .arg("verify")
                .arg(tmp.path())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{file}: byte {i}");
            // A FAIL line names the file (the files check's PASS line lists every file).
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout
                    .lines()
                    .any(|l| l.contains(" FAIL ") && l.contains(file)),
                "{file}: byte {i}: no FAIL line names the file:\n{stdout}"
            );
        }
        std::fs::write(&path, &original).unwrap();
    }
}
