//! The committed fixtures are exactly what the generator produces, and they behave as
//! documented: every bundle opens and passes all data checks; the version fixtures show the
//! forward-compatibility rules of spec section 13.

#[path = "../../examples/make_fixtures.rs"]
mod make_fixtures;

use std::path::{Path, PathBuf};

use ternary_bundle::read::checks::check_all;
use ternary_bundle::{Bundle, Rule};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Every file under `dir`, relative path -> bytes, except the frozen fixtures (never
/// regenerated: `make_fixtures::FROZEN`).
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let root = dir.parent().unwrap();
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if make_fixtures::FROZEN
                .iter()
                .any(|f| p.strip_prefix(root).is_ok_and(|r| r == Path::new(f)))
            {
                continue;
            }
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
fn the_decoder_fixture_is_format_3_and_passes_every_data_check() {
    let b = Bundle::open(
        fixtures()
            .join("bundles")
            .join(make_fixtures::DECODER_FIXTURE),
    )
    .unwrap();
    assert_eq!(b.facts().version.to_string(), "3.0");
    let d = b.decoder().unwrap();
    assert_eq!((d.vocab_size, d.num_hidden_layers), (11, 1));
    let v = b.validation().unwrap();
    assert_eq!((v.samples, v.tokens), (3, 5));
    check_all(&b).unwrap();
}

#[test]
fn the_given_fixture_is_format_4_and_passes_every_data_check() {
    // Spec section 13: fixtures/bundles/tiny-given MUST open and pass every data check.
    let b = Bundle::open(
        fixtures()
            .join("bundles")
            .join(make_fixtures::GIVEN_FIXTURE),
    )
    .unwrap();
    assert_eq!(b.facts().version.to_string(), "4.0");
    let m = b.manifest();
    assert_eq!(m.quantization.method, "given");
    assert_eq!(m.quantization.epsilon, None);
    assert_eq!(m.quantization.granularity, "channel");
    assert_eq!(m.provenance.original.as_ref().unwrap().forward, "dense");
    assert_eq!(b.assets().len(), 1);
    assert_eq!(
        b.assets()[0].bytes(),
        make_fixtures::TINY_TOKENIZER.as_bytes()
    );
    // fc2's one given scale, repeated per row.
    let fc2 = b.packed("fc2.weight").unwrap();
    assert_eq!(fc2.scales(), vec![0.375; 10]);
    assert!(b.validation().unwrap().original_predictions.is_some());
    check_all(&b).unwrap();
}

#[test]
fn the_distribution_fixtures_are_format_5_and_pass_every_data_check() {
    // Spec section 13: fixtures/bundles/tiny-distributions (full form) and
    // tiny-decoder-top-k (top 3) MUST open and pass every data check (rule 6.4 among them).
    use ternary_bundle::read::DistributionView;
    let [chain, decoder] = make_fixtures::DISTRIBUTION_FIXTURES;
    let b = Bundle::open(fixtures().join("bundles").join(chain)).unwrap();
    assert_eq!(b.facts().version.to_string(), "5.0");
    let v = b.validation().unwrap();
    match v.distributions {
        Some(DistributionView::Full { log_probs }) => {
            assert_eq!(log_probs.len(), v.samples * b.classes() as usize * 4)
        }
        other => panic!("{chain}: expected the full form, found {other:?}"),
    }
    check_all(&b).unwrap();
    let b = Bundle::open(fixtures().join("bundles").join(decoder)).unwrap();
    assert_eq!(b.facts().version.to_string(), "5.0");
    let v = b.validation().unwrap();
    match v.distributions {
        Some(DistributionView::TopK { k, ids, .. }) => {
            assert_eq!(k, 3);
            assert_eq!(ids.len(), v.samples * (v.tokens - 1) * 3 * 8);
        }
        other => panic!("{decoder}: expected the top-3 form, found {other:?}"),
    }
    check_all(&b).unwrap();
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
        msg.contains("6.0") && msg.contains("5.0") && msg.contains("manifest.json"),
        "{msg}"
    );
}

/// The frozen 1.0 fixture is what the 1.0 writer wrote: a validation set without original
/// predictions. A 2.0 reader opens it and it passes every data check.
#[test]
fn a_bundle_written_by_the_1_0_writer_opens_and_passes_every_data_check() {
    let dir = fixtures().join("versions/written-by-1.0");
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.facts().version.to_string(), "1.0");
    let v = b.file(ternary_bundle::FileRole::Validation).unwrap();
    let names: Vec<&str> = v.header().entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["labels", "inputs", "difficulty"]);
    check_all(&b).unwrap();
    // The digests pin it: its bytes are the 1.0 writer's, never regenerated.
    let digest = ternary_bundle::format::checksum::sha256_hex(
        &std::fs::read(dir.join("manifest.json")).unwrap(),
    );
    assert_eq!(
        digest,
        "08ecc2e31af3e4e7ac804aca81da993aebaae33617668339c03fc8dff74bc4cb"
    );
}

/// The regenerated tiny-validation bundle carries the original predictions, so it is 2.0.
#[test]
fn bundles_with_a_validation_set_are_format_2_0_and_the_others_1_0() {
    for (name, _, validation) in make_fixtures::bundle_fixtures() {
        let b = Bundle::open(fixtures().join("bundles").join(name)).unwrap();
        let expected = if validation { "2.0" } else { "1.0" };
        assert_eq!(b.facts().version.to_string(), expected, "{name}");
        let has = b
            .file(ternary_bundle::FileRole::Validation)
            .is_some_and(|v| v.header().get("original_predictions").is_some());
        assert_eq!(has, validation, "{name}");
    }
}
