//! Crash safety of writing (spec section "Atomic writing and concurrent readers"): `bundle
//! create` killed with SIGKILL at many points leaves the previous bundle intact or the new one
//! complete, never a mix; killed writers' staging directories are removed by the next write; and
//! readers running while `create --force` replaces the bundle see the old or the new bundle.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ternary_bundle::checks::{check_all, check_digests};
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
    let (mut saw_old, mut saw_new) = (0, 0);
    for k in 0..kills {
        let mut child = create(&dest, 2).spawn().unwrap();
        std::thread::sleep(full * k / kills);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
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
        saw_old > 0,
        "no kill landed before the swap: the test did not exercise partial writes"
    );
    eprintln!("{kills} kills: {saw_old} left the old bundle, {saw_new} the new one");
    // Staging directories of killed writers are clearly named, and the next write removes them.
    assert!(create(&dest, 3).status().unwrap().success());
    let leftovers: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging directories left behind: {leftovers:?}"
    );
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
    while Instant::now() < deadline {
        let b = Bundle::open(&dest).unwrap_or_else(|e| panic!("read {reads}: {e}"));
        // Digests of every file and tensor match one manifest: no file from the other bundle.
        check_digests(&b).unwrap_or_else(|e| panic!("read {reads}: a mix of two bundles: {e}"));
        reads += 1;
    }
    let writes = writer.join().unwrap();
    assert!(writes >= 2 && reads >= 2, "{writes} writes, {reads} reads");
    eprintln!("{reads} consistent reads during {writes} forced replacements");
}
