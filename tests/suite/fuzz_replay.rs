//! Replays every fuzz input on stable Rust: each file under `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through the same entry point as the fuzz target and must
//! return without panicking (a typed error is fine).

use std::path::{Path, PathBuf};

use ternary_bundle::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for root in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(root).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn replay(target: &str, run: impl Fn(&[u8])) -> usize {
    let inputs = inputs(target);
    assert!(
        !inputs.is_empty(),
        "no corpus for fuzz target {target}: run fuzz/make_seeds.sh"
    );
    for (path, data) in &inputs {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(data)));
        assert!(
            r.is_ok(),
            "fuzz target {target} panicked on {}",
            path.display()
        );
    }
    inputs.len()
}

#[test]
fn manifest_corpus_replays() {
    replay("manifest", fuzzing::manifest);
}

#[test]
fn decoder_config_corpus_replays() {
    replay("decoder_config", fuzzing::decoder_config);
}

#[test]
fn bundle_corpus_replays() {
    replay("bundle", fuzzing::bundle);
}

#[test]
fn codecs_corpus_replays() {
    replay("codecs", fuzzing::codecs);
}

#[test]
fn gguf_corpus_replays() {
    replay("gguf", fuzzing::gguf);
}

#[test]
fn signature_corpus_replays() {
    replay("signature", |d| {
        fuzzing::signature(d);
    });
}

#[test]
fn signature_seeds_reach_the_statement() {
    // The real signatures (the model_signing tool's, P-256 and P-384, and one of `bundle sign`)
    // must parse through to their statement, or the fuzzer would only ever test the first parse
    // error; the broken ones must not.
    let seed = |name: &str| std::fs::read(fuzz_dir().join("corpus/signature").join(name)).unwrap();
    for (name, files) in [
        ("model-signing-p256", 10),
        ("model-signing-p384", 10),
        ("model-signing-p256-canonical-layout", 10),
        ("bundle-sign-tiny-validation", 4),
    ] {
        let s = fuzzing::signature(&seed(name)).unwrap_or_else(|| panic!("seed {name}"));
        assert_eq!(s.resources.len(), files, "seed {name}");
    }
    for name in [
        "broken-truncated",
        "broken-two-signatures",
        "broken-no-signature",
        "broken-urlsafe-sig",
        "broken-subject-digest",
        "statement-model-signing-p256",
    ] {
        assert_eq!(fuzzing::signature(&seed(name)), None, "seed {name}");
    }
}

#[test]
fn verify_numeric_corpus_replays() {
    let scratch = tempfile::tempdir().unwrap();
    replay("verify_numeric", |d| {
        fuzzing::verify_numeric(scratch.path(), d);
    });
}

#[test]
fn verify_numeric_seeds_reach_verify() {
    // The seeds must describe models the writer accepts, or the fuzzer would spend its time on
    // writer errors; the edited seed must change bytes (and so must fail the checksums check,
    // which the entry point asserts).
    let scratch = tempfile::tempdir().unwrap();
    for (seed, edited) in [
        ("trit5-channel-two-layers", false),
        ("trit5-channel-two-layers-edited", true),
        ("trit2-group-validation", false),
        ("tensor-fixed-scale", false),
    ] {
        let data = std::fs::read(fuzz_dir().join("corpus/verify_numeric").join(seed)).unwrap();
        assert_eq!(
            fuzzing::verify_numeric(scratch.path(), &data),
            Some(edited),
            "seed {seed}"
        );
    }
}

/// Opens a committed `bundle` seed the way the fuzz entry point splits it.
fn open_seed(name: &str) -> ternary_bundle::Bundle {
    let seed = std::fs::read(fuzz_dir().join("corpus/bundle").join(name)).unwrap();
    fuzzing::open_parts(&seed).unwrap_or_else(|e| panic!("seed {name}: {e}"))
}

#[test]
fn seed_bundles_reach_the_data_checks() {
    // The entry point must actually open valid bundles, or the fuzzer would only ever test the
    // first parse error.
    let b = open_seed("bundles-tiny-validation");
    assert!(b.file(ternary_bundle::FileRole::Validation).is_some());
    ternary_bundle::read::checks::check_all(&b).unwrap();
    // And the in-memory reader agrees with the file reader on a broken bundle's rule.
    let e = ternary_bundle::read::checks::check_all(&open_seed("broken-nan-scale")).unwrap_err();
    assert_eq!(e.rule(), Some(ternary_bundle::Rule::ScaleValid));
}
