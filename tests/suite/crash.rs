//! Crash safety of writing (spec section "Atomic writing and concurrent readers"): `bundle
//! create` killed with SIGKILL at many points leaves the previous bundle intact or the new one
//! complete, never a mix; killed writers' staging directories are removed by the next write; and
//! readers running while `create --force` replaces the bundle see the old or the new bundle.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ternary_bundle::read::checks::{check_all, check_digests};
use ternary_bundle::verify::{verify, Check, VerifyOptions};
use ternary_bundle::Bundle;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bundle"))
}

fn create(dest: &Path, seed: u64) -> Command {
    let mut c = Command::new(bin());
    // A demo-style model of 4.8 M parameters: big enough that a write takes a while to kill
    // in, small enough to repeat many times.
    c.args([
        "create",
        "--demo",
        "--demo-widths",
        "256,2048,2048,64",
        "--force",
        "--seed",
        &seed.to_string(),
        "--out",
    ])
    .arg(dest)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

fn manifest_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("manifest.json")).unwrap()
}

#[test]
fn sigkill_at_any_point_leaves_the_old_or_the_new_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("b");
    assert!(create(&dest, 1).status().unwrap().success());
    let old = manifest_bytes(&dest);
    // How long a full write takes here, to spread the kills over it.
    let t = Instant::now();
    let reference = tmp.path().join("reference");
    assert!(create(&reference, 2).status().unwrap().success());
    let new = manifest_bytes(&reference);
    let full = t.elapsed();
    let kills = 24u32;
    let (mut saw_old, mut saw_new, mut mid_write) = (0, 0, 0);
    for k in 0..kills {
        // Start clean, so that a staging directory found after this kill is this kill's.
        for n in entries(tmp.path()) {
            if n.starts_with(".b.tmp-") {
                std::fs::remove_dir_all(tmp.path().join(n)).unwrap();
            }
        }
        let mut child = create(&dest, 2).spawn().unwrap();
        std::thread::sleep(full * k / kills);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if entries(tmp.path()).iter().any(|n| n.starts_with(".b.tmp-")) {
            mid_write += 1; // a staging directory was left: the kill landed mid-write
        }
        let now = manifest_bytes(&dest);
        let b = Bundle::open(&dest)
            .unwrap_or_else(|e| panic!("kill {k}: the destination does not open: {e}"));
        if now == old {
            saw_old += 1;
            check_digests(&b)
                .unwrap_or_else(|e| panic!("kill {k}: the old bundle was damaged: {e}"));
        } else {
            assert_eq!(now, new, "kill {k}: neither the old nor the new manifest");
            saw_new += 1;
            check_all(&b).unwrap_or_else(|e| panic!("kill {k}: the new bundle is incomplete: {e}"));
        }
        // Restore the old bundle when the new one landed, so every kill replaces something.
        if now == new {
            assert!(create(&dest, 1).status().unwrap().success());
        }
    }
    assert!(
        mid_write > 0,
        "no kill landed in the middle of a write: the test did not exercise partial writes"
    );
    eprintln!(
        "{kills} kills: {saw_old} left the old bundle ({mid_write} kills mid-write), \
         {saw_new} the new one"
    );
    // Staging directories of killed writers are clearly named, and the next write removes them.
    assert!(create(&dest, 3).status().unwrap().success());
    assert_eq!(entries(tmp.path()), ["b", "reference"], "left behind");
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn sigkill_during_a_first_write_leaves_nothing_or_the_complete_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let t = Instant::now();
    assert!(create(&reference, 2).status().unwrap().success());
    let full = t.elapsed();
    let new = manifest_bytes(&reference);
    let kills = 12u32;
    let (mut absent, mut complete, mut mid_write) = (0, 0, 0);
    for k in 0..kills {
        let dest = tmp.path().join(format!("first-{k}"));
        let mut child = create(&dest, 2).spawn().unwrap();
        // Spread over twice a full write, so that the last kills come after publication.
        std::thread::sleep(full * 2 * k / kills);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if !dest.exists() {
            absent += 1;
        } else {
            // Present means published: complete, and the bundle that was being written.
            assert_eq!(manifest_bytes(&dest), new, "kill {k}: another manifest");
            let b = Bundle::open(&dest).unwrap_or_else(|e| panic!("kill {k}: {e}"));
            check_all(&b).unwrap_or_else(|e| panic!("kill {k}: incomplete bundle: {e}"));
            complete += 1;
        }
        // A staging directory left behind proves the kill landed in the middle of the write.
        let staging = format!(".first-{k}.tmp-");
        if entries(tmp.path()).iter().any(|n| n.starts_with(&staging)) {
            mid_write += 1;
        }
        // Whatever a killed writer left is a staging directory named after the destination.
        for name in entries(tmp.path()) {
            assert!(
                name == "reference"
                    || name.starts_with("first-")
                    || (name.starts_with(".first-") && name.contains(".tmp-")),
                "kill {k}: unexpected entry {name:?}"
            );
        }
    }
    assert!(
        mid_write > 0,
        "no kill landed in the middle of a write (no staging directory was left)"
    );
    eprintln!(
        "{kills} kills of a first write: {absent} left nothing ({mid_write} of them mid-write), \
         {complete} the bundle"
    );
    // The next write to each destination removes the killed writers' staging directories.
    for k in 0..kills {
        assert!(create(&tmp.path().join(format!("first-{k}")), 3)
            .status()
            .unwrap()
            .success());
    }
    let mut expected: Vec<String> = (0..kills).map(|k| format!("first-{k}")).collect();
    expected.push("reference".into());
    expected.sort();
    assert_eq!(entries(tmp.path()), expected, "left behind");
}

#[test]
fn readers_during_forced_replacement_see_old_or_new_never_a_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("b");
    assert!(create(&dest, 1).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(4);
    let writer = {
        let dest = dest.clone();
        std::thread::spawn(move || {
            let mut writes = 0u64;
            while Instant::now() < deadline {
                assert!(create(&dest, 1 + writes % 2).status().unwrap().success());
                writes += 1;
            }
            writes
        })
    };
    let mut reads = 0u64;
    let integrity = VerifyOptions {
        only: vec![Check::Files, Check::Checksums, Check::Structure],
        ..Default::default()
    };
    while Instant::now() < deadline {
        if reads % 2 == 0 {
            let b = Bundle::open(&dest).unwrap_or_else(|e| panic!("read {reads}: {e}"));
            // Digests of every file and tensor match one manifest: no file from the other
            // bundle.
            check_digests(&b).unwrap_or_else(|e| panic!("read {reads}: a mix of two bundles: {e}"));
        } else {
            // And `verify` itself, as a CI gate would run it during the replacement.
            let report = verify(&dest, &integrity);
            assert!(
                report.ok,
                "read {reads}: verify failed during a replacement: {:?}",
                report
                    .checks
                    .iter()
                    .map(|c| format!("{} {:?} {}", c.name, c.status, c.detail))
                    .collect::<Vec<_>>()
            );
        }
        reads += 1;
    }
    let writes = writer.join().unwrap();
    assert!(writes >= 2 && reads >= 2, "{writes} writes, {reads} reads");
    eprintln!("{reads} consistent reads during {writes} forced replacements");
}
