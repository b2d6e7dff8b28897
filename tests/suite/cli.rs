//! The `bundle` binary end to end: every command, every exit code, every broken fixture.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

fn bundle() -> Command {
    let mut c = Command::cargo_bin("bundle").unwrap();
    c.env_remove("NO_COLOR");
    c
}

fn run(args: &[&str]) -> Output {
    bundle().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn help_documents_commands_and_exit_codes() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for word in [
        "create",
        "demo",
        "inspect",
        "export",
        "requantize",
        "Exit codes",
        "usage error",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let out = run(&["create", "--help"]);
    assert!(text(&out.stdout).contains("--granularity"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["--no-such-flag"],
        vec!["create", "--out", "x"],
        vec!["create", "--demo"],
        vec!["create", "--demo", "--from", "a.safetensors", "--out", "x"],
        vec!["create", "--demo", "--out", "x", "--granularity", "group"],
        vec!["inspect"],
        vec!["export", "x"],
        vec!["nonsense"],
    ] {
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn create_from_a_python_written_checkpoint_then_inspect_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("b");
    let out = run(&[
        "create",
        "--from",
        s(&fixture("source/tiny.safetensors")),
        "--out",
        s(&dest),
        "--validation",
        s(&fixture("source/validation.safetensors")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for word in [
        "net.0.weight",
        "net.2.bias",
        "compression vs FP32",
        "bits per ternary weight",
        "sparsity",
    ] {
        assert!(
            stdout.contains(word),
            "create summary lacks {word}:\n{stdout}"
        );
    }

    // inspect --json: one object with the documented fields.
    let out = run(&["inspect", s(&dest), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The validation set carries the original predictions and distributions: format 5.0.
    assert_eq!(v["format_version"], "5.0");
    assert_eq!(v["model"]["input_dim"], 16);
    assert_eq!(v["model"]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(v["totals"]["parameters"], 24 * 16 + 24 + 10 * 24 + 10);
    assert_eq!(v["validation_samples"], 32);
    let tensors = v["tensors"].as_array().unwrap();
    let w = tensors
        .iter()
        .find(|t| t["name"] == "net.0.weight")
        .unwrap();
    assert_eq!(w["storage"], "trit5");
    assert!(w["sparsity"].as_f64().unwrap() > 0.0);
    let b = tensors.iter().find(|t| t["name"] == "net.0.bias").unwrap();
    assert_eq!(b["storage"], "F32");

    let out = run(&["inspect", s(&dest), "--tensors"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("scale range"));

    // export f16 is the FP16 file's data; export f32 is t * scale.
    let f16 = tmp.path().join("m16.safetensors");
    let out = run(&["export", s(&dest), "--out", s(&f16)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let a = safetensors::SafeTensors::deserialize(&std::fs::read(&f16).unwrap())
        .unwrap()
        .tensor("net.0.weight")
        .unwrap()
        .data()
        .to_vec();
    let fp16 = std::fs::read(dest.join("fp16.safetensors")).unwrap();
    let b = safetensors::SafeTensors::deserialize(&fp16)
        .unwrap()
        .tensor("net.0.weight")
        .unwrap()
        .data()
        .to_vec();
    assert_eq!(a, b);
    let out = run(&["export", s(&dest), "--out", s(&f16)]);
    assert_eq!(out.status.code(), Some(1), "existing output needs --force");
    assert!(text(&out.stderr).contains("already exists"));

    let f32_path = tmp.path().join("m32.safetensors");
    let out = run(&["export", s(&dest), "--out", s(&f32_path), "--dtype", "f32"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bytes = std::fs::read(&f32_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("net.0.weight").unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::F32);
    let b = ternary_bundle::Bundle::open(&dest).unwrap();
    let p = b.packed("net.0.weight").unwrap();
    let scales = p.scales();
    let mut trits = vec![0i8; p.cols];
    for (r, &scale) in scales.iter().enumerate() {
        p.encoding.unpack_row(p.row(r), &mut trits).unwrap();
        for (c, &t) in trits.iter().enumerate() {
            let i = (r * p.cols + c) * 4;
            let v = f32::from_le_bytes(w.data()[i..i + 4].try_into().unwrap());
            assert_eq!(v.to_bits(), (t as f32 * scale).to_bits());
        }
    }

    // requantize the exported dequantized weights with the stored scales: no trit changes.
    let again = tmp.path().join("again");
    let out = run(&[
        "requantize",
        s(&dest),
        "--from",
        s(&f32_path),
        "--out",
        s(&again),
        "--keep-scales",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("net.0.weight") && stdout.contains("0.00%"),
        "{stdout}"
    );
    let new = ternary_bundle::Bundle::open(&again).unwrap();
    assert_eq!(
        new.packed("net.2.weight").unwrap().packed,
        b.packed("net.2.weight").unwrap().packed
    );
    assert!(
        new.file(ternary_bundle::FileRole::Validation).is_some(),
        "validation set carried over"
    );
    // Its original predictions are those of the weights it quantized (the exported ones), not
    // the first bundle's: the reference check reproduces them from the export for the new
    // bundle, and not for the first.
    let reference = |dir: &std::path::Path| {
        let out = run(&[
            "verify",
            s(dir),
            "--only",
            "reference",
            "--reference",
            s(&f32_path),
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = v["checks"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(r["name"], "reference");
        r
    };
    let r = reference(&again);
    assert_eq!(r["status"], "pass", "{r}");
    assert_eq!(r["figures"]["stored_predictions"]["differ"], 0, "{r}");
    assert_eq!(r["figures"]["matches_provenance"], true, "{r}");
    let r = reference(&dest);
    assert_eq!(r["status"], "fail", "{r}");
    assert_eq!(r["figures"]["matches_provenance"], false, "{r}");
}

#[test]
fn create_from_a_directory_or_a_non_checkpoint_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let text_file = tmp.path().join("notes.txt");
    std::fs::write(&text_file, "not a checkpoint").unwrap();
    for (from, words) in [
        (
            tmp.path().to_path_buf(),
            "not a model directory: no config.json",
        ),
        (text_file, "not a safetensors checkpoint"),
    ] {
        let out = run(&[
            "create",
            "--from",
            s(&from),
            "--out",
            s(&tmp.path().join("b")),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(words) && err.contains(s(&from)), "{err}");
        assert!(
            !err.contains("bundle file"),
            "a checkpoint is not a bundle file: {err}"
        );
    }
    assert!(!tmp.path().join("b").exists(), "nothing written");
}

#[test]
fn create_refuses_an_existing_destination_and_replaces_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("b");
    let src = fixture("source/tiny.safetensors");
    assert_eq!(
        run(&["create", "--from", s(&src), "--out", s(&dest)])
            .status
            .code(),
        Some(0)
    );
    let out = run(&[
        "create",
        "--from",
        s(&src),
        "--out",
        s(&dest),
        "--encoding",
        "trit2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        "create",
        "--from",
        s(&src),
        "--out",
        s(&dest),
        "--encoding",
        "trit2",
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        ternary_bundle::Bundle::open(&dest)
            .unwrap()
            .params()
            .encoding,
        ternary_bundle::Encoding::Trit2
    );
    // --force never replaces something that is not a bundle.
    let other = tmp.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "precious").unwrap();
    let out = run(&["create", "--from", s(&src), "--out", s(&other), "--force"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(other.join("keep.txt")).unwrap(),
        "precious"
    );
    // Not even when a symlink named manifest.json makes it look like one.
    std::os::unix::fs::symlink(dest.join("manifest.json"), other.join("manifest.json")).unwrap();
    let out = run(&["create", "--from", s(&src), "--out", s(&other), "--force"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(other.join("keep.txt")).unwrap(),
        "precious"
    );
}

#[test]
fn create_options_reach_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("b");
    let out = run(&[
        "create",
        "--from",
        s(&fixture("source/tiny.safetensors")),
        "--out",
        s(&dest),
        "--granularity",
        "group",
        "--group-size",
        "8",
        "--sparsity-threshold",
        "0.7",
        "--epsilon",
        "0.001",
        "--quantize",
        "net.0.*",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let b = ternary_bundle::Bundle::open(&dest).unwrap();
    let q = &b.manifest().quantization;
    assert_eq!(
        (
            q.granularity.as_str(),
            q.group_size,
            q.sparsity_threshold,
            q.epsilon
        ),
        ("group", Some(8), Some(0.7), Some(0.001))
    );
    let quantized: Vec<&str> = b
        .manifest()
        .tensors
        .iter()
        .filter(|t| t.quantized)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(quantized, vec!["net.0.bias", "net.0.weight"]);
    // Provenance records the digest of the checkpoint that was quantized.
    let checkpoint = std::fs::read(fixture("source/tiny.safetensors")).unwrap();
    assert_eq!(
        b.manifest().provenance.source_sha256.as_deref(),
        Some(ternary_bundle::format::checksum::sha256_hex(&checkpoint).as_str())
    );
    let out = run(&[
        "create",
        "--from",
        s(&fixture("source/tiny.safetensors")),
        "--out",
        s(&tmp.path().join("c")),
        "--quantize",
        "nothing.*",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("matches no tensor"));
}

#[test]
fn demo_builds_inspects_and_checks_the_demo_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = run(&["demo", s(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for word in [
        "512 -> 4096 -> 4096 -> 1536 -> 100",
        "PASS",
        "dequantization",
        "compression vs FP32",
    ] {
        assert!(stdout.contains(word), "demo output lacks {word}:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"));
    // Running it again replaces the earlier demo bundle.
    assert_eq!(run(&["demo", s(&dir)]).status.code(), Some(0));
}

#[test]
fn every_broken_fixture_fails_with_its_file_and_rule() {
    let table: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(fixture("broken/expected.json")).unwrap()).unwrap();
    assert!(table.len() >= 10);
    let tmp = tempfile::tempdir().unwrap();
    for b in table {
        let name = b["name"].as_str().unwrap();
        let dir = fixture("broken").join(name);
        let out = run(&[
            "export",
            s(&dir),
            "--out",
            s(&tmp.path().join(format!("{name}.safetensors"))),
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(b["file"].as_str().unwrap()),
            "{name}: error does not name the file: {stderr}"
        );
        assert!(
            stderr.contains(&format!("rule {}", b["rule"].as_str().unwrap())),
            "{name}: error does not cite rule {}: {stderr}",
            b["rule"]
        );
        if let Some(t) = b["tensor"].as_str() {
            assert!(
                stderr.contains(&format!("\"{t}\"")),
                "{name}: error does not name tensor {t}: {stderr}"
            );
        }
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{name}: one line: {stderr}"
        );
        assert!(
            !tmp.path().join(format!("{name}.safetensors")).exists(),
            "{name}: nothing exported"
        );
    }
}

#[test]
fn inspect_reads_headers_only_and_fails_on_structure() {
    // Data damage is invisible to inspect (it reads no tensor data)...
    assert_eq!(
        run(&["inspect", s(&fixture("broken/bad-digest"))])
            .status
            .code(),
        Some(0)
    );
    // ...structural damage is not.
    for (name, rule) in [
        ("truncated-file", "3.1"),
        ("unknown-major", "2.4"),
        ("missing-file", "1.2"),
        ("shape-mismatch", "5.1"),
    ] {
        let out = run(&["inspect", s(&fixture("broken").join(name))]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            text(&out.stderr).contains(&format!("rule {rule}")),
            "{name}: {}",
            text(&out.stderr)
        );
    }
    let out = run(&["inspect", s(&fixture("versions/newer-minor"))]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("newer minor"));
}

#[test]
fn names_with_terminal_escapes_never_reach_the_terminal_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("evil.safetensors");
    let name = "evil\u{1b}[2J.weight";
    let mut tensors = std::collections::HashMap::new();
    let data = vec![0u8; 16];
    tensors.insert(
        name.to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &data).unwrap(),
    );
    safetensors::serialize_to_file(tensors, None, &ckpt).unwrap();
    let out = run(&[
        "create",
        "--from",
        s(&ckpt),
        "--out",
        s(&tmp.path().join("b")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains('\u{1b}'),
        "raw escape in error: {stderr:?}"
    );
    assert!(stderr.contains("\\u{1b}"), "{stderr}");
}

#[test]
fn verify_passes_good_bundles_and_fails_broken_ones_with_exit_codes() {
    // Without original predictions the retention gate is skipped, with its reason.
    for dir in [
        "bundles/tiny-trit5-channel",
        "bundles/tiny-trit2-group5",
        "versions/newer-minor",
        "versions/written-by-1.0",
    ] {
        let out = run(&["verify", s(&fixture(dir))]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{dir}: {stdout}");
        assert!(
            stdout.contains("OK: 10 passed, 0 failed, 4 skipped")
                && stdout.contains("retention       SKIP  not run: no original predictions")
                && stdout.contains(
                    "retention: unknown (the retention check did not run: no original predictions"
                ),
            "{dir}: {stdout}"
        );
    }
    // The tiny fixture model's weights are not quantization-aware: its FP16 model keeps half of
    // the original's decisions on the validation set. The gate fails at the handoff's 0.995 and
    // passes when the bar is lowered to what it keeps.
    let validation = fixture("bundles/tiny-validation");
    let out = run(&["verify", s(&validation)]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("retention       FAIL  the FP16 model keeps 50.00% of the original model's decisions (minimum 99.50%) on 32 validation inputs")
            && stdout.contains("FAILED: 10 passed, 1 failed, 3 skipped")
            && stdout.contains("fidelity        SKIP  not run: no original distributions: the validation set stores the original model's predictions only (format 2.0")
            && stdout.contains("accuracy on the validation labels: original 15.62%, FP16 18.75%, ternary 18.75%")
            && stdout.contains("retention (decisions of the original model the FP16 model keeps): 50.00%"),
        "{stdout}"
    );
    let out = run(&["verify", s(&validation), "--min-retention", "0.5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("OK: 11 passed, 0 failed, 3 skipped"));
    // The same model with its original distributions (format 5.0): what quantizing it after
    // training did to its distribution fails the KL gate; --max-kl 0 disables it.
    let distributions = fixture("bundles/tiny-distributions");
    let out = run(&["verify", s(&distributions), "--min-retention", "0.5"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("fidelity        FAIL  KL(original || FP16) mean ")
            && stdout.contains("nats (maximum 0.05)")
            && stdout.contains("FAILED: 11 passed, 1 failed, 2 skipped"),
        "{stdout}"
    );
    let out = run(&[
        "verify",
        s(&distributions),
        "--min-retention",
        "0.5",
        "--max-kl",
        "0",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("(gate disabled)") && stdout.contains("OK: 12 passed, 0 failed, 2 skipped"),
        "{stdout}"
    );
    let table: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(fixture("broken/expected.json")).unwrap()).unwrap();
    for b in table {
        let name = b["name"].as_str().unwrap();
        let out = run(&["verify", s(&fixture("broken").join(name))]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
        let fail = stdout
            .lines()
            .find(|l| l.contains(" FAIL "))
            .unwrap_or_else(|| panic!("{name}: no FAIL line: {stdout}"));
        assert!(fail.contains(b["file"].as_str().unwrap()), "{name}: {fail}");
        assert!(
            fail.contains(&format!("rule {}", b["rule"].as_str().unwrap()))
                || b["rule"] == "7.2" && fail.contains("rule 7."),
            "{name}: {fail}"
        );
    }
    // Usage errors.
    assert_eq!(run(&["verify"]).status.code(), Some(2));
    assert_eq!(
        run(&[
            "verify",
            s(&fixture("bundles/tiny-trit5-channel")),
            "--min-agreement"
        ])
        .status
        .code(),
        Some(2)
    );
    let out = run(&[
        "verify",
        s(&fixture("bundles/tiny-trit5-channel")),
        "--only",
        "nonsense",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown check"));
}

#[test]
fn verify_json_and_junit_reports_are_machine_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let junit = tmp.path().join("verify.xml");
    let out = run(&[
        "verify",
        s(&fixture("bundles/tiny-distributions")),
        "--min-retention",
        "0.5",
        // A dense original quantized after training: its KL is large; 0 disables the gate.
        "--max-kl",
        "0",
        "--json",
        "--junit",
        s(&junit),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let checks = v["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ternary_bundle::verify::Check::ALL
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
    );
    // Reference needs --reference; signature a --trusted-key (the fixture is not signed).
    assert!(checks
        .iter()
        .all(|c| c["status"] == "pass" || c["name"] == "reference" || c["name"] == "signature"));
    let m = &v["metrics"];
    assert_eq!(m["phase4_to_5/dequantization_accuracy_retention"], 0.5);
    assert_eq!(m["ternary_fp16_agreement"], 1.0);
    assert_eq!(m["accuracy_original"], 5.0 / 32.0);
    assert_eq!(m["accuracy_fp16"], 6.0 / 32.0);
    assert_eq!(m["accuracy_ternary"], 6.0 / 32.0);
    assert_eq!(v["null_reasons"], serde_json::json!({}));
    assert_eq!(m["phase4_to_5/gradient_flow_test_passed"], true);
    assert!(m["phase4_to_5/quantized_model_size_mb"].as_f64().unwrap() > 0.0);
    assert!(m["gradient_check_max_relative_error"].as_f64().unwrap() < 1e-4);
    let agreement = checks.iter().find(|c| c["name"] == "agreement").unwrap();
    assert_eq!(agreement["figures"]["inputs"], "validation");
    assert_eq!(agreement["figures"]["samples"], 32);

    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), ternary_bundle::verify::Check::ALL.len());
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("failure"))
            .count(),
        0
    );
    // reference (no --reference) and signature (no --trusted-key)
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("skipped"))
            .count(),
        2
    );

    // A failing run: JSON says which check, JUnit has a <failure>, exit code 1.
    let junit = tmp.path().join("fail.xml");
    let out = run(&[
        "verify",
        s(&fixture("broken/fp16-not-dequantized")),
        "--json",
        "--junit",
        s(&junit),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let failed: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["dequantization"]);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert_eq!(
        failure.parent().unwrap().attribute("name"),
        Some("dequantization")
    );
    assert!(failure.attribute("message").unwrap().contains("rule 5.2"));
}

#[test]
fn a_closed_stdout_ends_quietly_and_a_full_one_is_an_error() {
    // `bundle inspect DIR --tensors | head -c1`: the reader goes away; no panic, exit 0.
    let exe = assert_cmd::cargo::cargo_bin("bundle");
    let dir = fixture("bundles/tiny-decoder");
    for _ in 0..3 {
        let mut child = std::process::Command::new(&exe)
            .args(["inspect", dir.to_str().unwrap(), "--tensors"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(0), "{err}");
    }
    // A write that fails otherwise (a full device) is reported, exit 1.
    let full = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(&exe)
        .args(["inspect", dir.to_str().unwrap()])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("writing to standard output"));
}
