//! The committed fixtures are exactly what the generator produces, and they behave as
//! documented: every bundle opens and passes all data checks; the version fixtures show the
//! forward-compatibility rules of spec section 13.

#[path = "../examples/make_fixtures.rs"]
mod make_fixtures;

use std::path::{Path, PathBuf};

use ternary_bundle::checks::check_all;
use ternary_bundle::{Bundle, Rule};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Every file under `dir`, relative path -> bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn regenerated_fixtures_are_byte_identical_to_the_committed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    make_fixtures::generate(tmp.path());
    for sub in ["bundles", "versions", "broken"] {
        let fresh = tree(&tmp.path().join(sub));
        let committed = tree(&fixtures().join(sub));
        let names = |t: &[(PathBuf, Vec<u8>)]| t.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&fresh),
            names(&committed),
            "fixture file list of {sub}/ differs; run `cargo run --example make_fixtures`"
        );
        for ((p, a), (_, b)) in fresh.iter().zip(&committed) {
            assert!(
                a == b,
                "fixtures/{sub}/{} differs from a fresh regeneration",
                p.display()
            );
        }
    }
}

#[test]
fn every_fixture_bundle_opens_and_passes_every_data_check() {
    for (name, params, validation) in make_fixtures::bundle_fixtures() {
        let b = Bundle::open(fixtures().join("bundles").join(name)).unwrap();
        assert_eq!(b.params(), &params, "{name}");
        assert_eq!(
            b.file(ternary_bundle::FileRole::Validation).is_some(),
            validation,
            "{name}"
        );
        check_all(&b).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn newer_minor_opens_and_reports_its_version() {
    let b = Bundle::open(fixtures().join("versions/newer-minor")).unwrap();
    assert_eq!(b.facts().version.to_string(), "1.7");
    check_all(&b).unwrap();
}

#[test]
fn unknown_major_is_refused_naming_both_versions() {
    let e = Bundle::open(fixtures().join("versions/unknown-major")).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::FormatVersion));
    let msg = e.to_string();
    assert!(
        msg.contains("2.0") && msg.contains("1.0") && msg.contains("manifest.json"),
        "{msg}"
    );
}
