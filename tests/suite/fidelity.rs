//! The `fidelity` check of `bundle verify` (spec sections 9.1 and 16.3) on the trained fixture
//! `fixtures/lm` (a QAT-trained char-level Llama decoder) and on the decoder task checkpoint of
//! the test suite: a faithful handoff passes the KL gate with the expected figures, and each
//! change the spec names as leaving argmaxes alone but not the model (ten times the RoPE base,
//! 10^4 times the norm epsilon, a norm's weight times 4, 3 times the scales of 16 rows of one
//! projection, a layer removed, two attention heads swapped) fails it, although every integrity
//! check passes: each mutation is applied to both weight files consistently (the FP16 values
//! recomputed from the trits as section 8 defines them), to the manifest, and to every digest.
//! Also: `--reference` recomputes the stored distributions (and catches tampered ones), and the
//! top-K form brackets the full form's KL.
//!
//! The trained fixture's bundle is built once per test binary, from the first
//! [`LM_VALIDATION_BYTES`] characters of `fixtures/lm/validation.txt` (48 windows of 64, so that
//! each verify takes about a second; on all 312 windows the mutations measure mean KLs of rope
//! 0.088, eps 2.93, norm 0.86, o_proj 0.105, down_proj 0.128, layer removed 0.66, heads
//! swapped 1.66 nats, and on these 48 within 6 % of that), and copied for each mutation. Run
//! with `--nocapture` to see each figure.

use crate::common;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use common::decoder::{copy_task, plan, spec, task_model};
use common::surgery::{
    edit_manifest, edit_tensor, manifest, rehash, tensor_entry, FP16, TERNARY, VALIDATION,
};
use common::{f32_at, set_f32, set_u16};
use half::f16;
use serde_json::{json, Value};
use ternary_bundle::create::{CreateInputs, CreateRequest};
use ternary_bundle::model::decoder::Family;
use ternary_bundle::verify::{verify, Check, Status, VerifyOptions, VerifyReport, DEFAULT_MAX_KL};
use ternary_bundle::{write_bundle, Bundle, Granularity, WriteOptions, WriteReport};

// ---- the bundles ----

/// The trained fixture (a model directory).
fn lm_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/lm")
}

/// Characters of `validation.txt` the shared bundle is built from: 48 windows of 64.
const LM_VALIDATION_BYTES: usize = 48 * 64;
/// Tokens per validation sequence.
const SEQ_LEN: usize = 64;

/// A scratch directory that lives as long as the test binary, in cargo's temporary directory
/// for integration tests. A static is never dropped, so the directory outlives the run: those
/// of earlier runs (untouched for an hour) are removed when the next run starts.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let hour = std::time::Duration::from_secs(3600);
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let stale = e.file_name().to_string_lossy().starts_with("fidelity-")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > hour));
            if stale {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        tempfile::Builder::new()
            .prefix("fidelity-")
            .tempdir_in(root)
            .unwrap()
    })
    .path()
}

/// The first `bytes` characters of `validation.txt`, as a file.
fn validation_head(bytes: usize) -> PathBuf {
    let text = std::fs::read(lm_dir().join("validation.txt")).unwrap();
    let path = scratch().join(format!("validation-{bytes}.txt"));
    std::fs::write(&path, &text[..bytes]).unwrap();
    path
}

/// `bundle create --from fixtures/lm --original-forward ternary --validation-text TEXT
/// --seq-len 64 [--original-top-k K]` through the library, as the CLI calls it.
fn create_lm(
    dest: &Path,
    text: &Path,
    original_top_k: Option<u64>,
) -> ternary_bundle::Result<WriteReport> {
    let request = CreateRequest {
        from: lm_dir(),
        ternary_original: true,
        validation_text: Some((text.to_path_buf(), SEQ_LEN)),
        original_top_k,
        ..CreateRequest::default()
    };
    CreateInputs::open(&request)?.write(dest, false, None, &|_| {})
}

/// The trained fixture's bundle (full form), built once.
fn lm_bundle() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dest = scratch().join("lm");
        let t = Instant::now();
        create_lm(&dest, &validation_head(LM_VALIDATION_BYTES), None).unwrap();
        println!(
            "created the trained fixture's bundle in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        dest
    })
}

/// Bundles of the trained fixture on its first 24 validation windows, one per
/// `--original-top-k` (`None`: the writer's choice, the full form; `Some(8)`; `Some(0)`: no
/// distributions), each built once.
fn lm24(top_k: Option<u64>) -> &'static Path {
    static DIRS: [OnceLock<PathBuf>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    static TEXT: OnceLock<PathBuf> = OnceLock::new();
    let (slot, name) = match top_k {
        None => (0, "lm-24-full"),
        Some(8) => (1, "lm-24-top-8"),
        Some(0) => (2, "lm-24-none"),
        Some(k) => panic!("no shared bundle of top {k}"),
    };
    DIRS[slot].get_or_init(|| {
        let text = TEXT.get_or_init(|| validation_head(24 * SEQ_LEN));
        let dest = scratch().join(name);
        create_lm(&dest, text, top_k).unwrap();
        dest
    })
}

/// The copy-task decoder checkpoint of the test suite (Llama, tied, two layers), with 40
/// sequences of 12 tokens, built once.
fn task_bundle() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let s = spec(Family::Llama, true);
        let options = WriteOptions {
            validation: Some(copy_task(&s, 40, 12)),
            ..Default::default()
        };
        let dest = scratch().join("task");
        write_bundle(&dest, &task_model(&s), &plan(&s), &options).unwrap();
        dest
    })
}

/// A fresh copy of bundle `src` (a flat directory) named `name` in the scratch directory.
fn copy_of(src: &Path, name: &str) -> PathBuf {
    let dest = scratch().join(name);
    std::fs::create_dir(&dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
    dest
}

// ---- verifying ----

/// Every check but the gradient checks (which judge the FP16 model's backward pass, not its
/// distribution) and reference.
fn model_checks() -> VerifyOptions {
    VerifyOptions {
        skip: vec![Check::GradientCheck, Check::GradientFlow],
        ..VerifyOptions::default()
    }
}

/// The checks that judge the bytes, and agreement (the two paths are one model): a mutation
/// applied consistently keeps them all passing.
const INTEGRITY: [Check; 8] = [
    Check::Manifest,
    Check::Files,
    Check::Checksums,
    Check::Structure,
    Check::Encoding,
    Check::Scales,
    Check::Dequantization,
    Check::Agreement,
];

fn status(report: &VerifyReport, check: Check) -> Status {
    report.check(check).unwrap().status
}

/// The fidelity check's figures.
fn fidelity(report: &VerifyReport) -> &Value {
    &report.check(Check::Fidelity).unwrap().figures
}

/// Mean KL(original || FP16) of a report.
fn fp16_mean_kl(report: &VerifyReport) -> f64 {
    fidelity(report)["fp16"]["kl"]["mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("no FP16 mean KL in {:#}", fidelity(report)))
}

#[track_caller]
fn assert_integrity(report: &VerifyReport, what: &str) {
    for c in INTEGRITY {
        let r = report.check(c).unwrap();
        assert_eq!(r.status, Status::Pass, "{what}: {c}: {}", r.detail);
    }
}

// ---- the mutations, applied consistently to both weight files and every digest ----

/// A change to a bundle: its name and the surgery.
type Mutation = (&'static str, fn(&Path));

/// Sets `model.decoder.<key>` to `f(old value)`.
fn edit_decoder(dir: &Path, key: &str, f: impl FnOnce(f64) -> f64) {
    edit_manifest(dir, |m| {
        let d = &mut m["model"]["decoder"];
        d[key] = json!(f(d[key].as_f64().unwrap()));
    });
}

/// `rope_theta` times 10.
fn rope_theta_x10(dir: &Path) {
    edit_decoder(dir, "rope_theta", |v| v * 10.0);
}

/// `rms_norm_eps` times 10^4.
fn rms_norm_eps_x1e4(dir: &Path) {
    edit_decoder(dir, "rms_norm_eps", |v| v * 1e4);
}

/// Multiplies the F32 values of non-quantized tensor `name` by `factor` in
/// `ternary.safetensors`, and sets its FP16 values to f16(the new f32 value) (rule 5.3).
fn scale_passthrough(dir: &Path, name: &str, factor: f32) {
    let mut values = Vec::new();
    edit_tensor(dir, TERNARY, name, |b| {
        for i in 0..b.len() / 4 {
            let v = f32_at(b, i) * factor;
            set_f32(b, i, v);
            values.push(v);
        }
    });
    edit_tensor(dir, FP16, name, |b| {
        assert_eq!(b.len(), 2 * values.len());
        for (i, v) in values.iter().enumerate() {
            set_u16(b, i, f16::from_f32(*v).to_bits());
        }
    });
    rehash(dir);
}

/// Layer 0's `input_layernorm.weight` times 4.
fn input_layernorm_x4(dir: &Path) {
    scale_passthrough(dir, "model.layers.0.input_layernorm.weight", 4.0);
}

/// The shortest decimal of an f32 as a JSON number (how the manifest writes `scale_min` and
/// `scale_max`, section 14).
fn f32_json(v: f32) -> Value {
    json!(format!("{v}").parse::<f64>().unwrap())
}

/// Multiplies the per-row scales of `rows` of quantized tensor `name` (channel granularity) by
/// `factor` (in f32), rewrites those rows' FP16 values as f16(f32(t) × scale') from the trits
/// of the packed data (section 8, rule 5.2), updates `scale_min` / `scale_max` (rule 4.6) and
/// every digest.
fn scale_rows(dir: &Path, name: &str, rows: Range<usize>, factor: f32) {
    let (cols, trits) = {
        let b = Bundle::open(dir).unwrap();
        let p = b.packed(name).unwrap();
        assert_eq!(p.granularity, Granularity::Channel, "{name}");
        assert!(rows.end <= p.rows, "{name} has {} rows", p.rows);
        let trits: Vec<Vec<i8>> = rows
            .clone()
            .map(|r| {
                let mut t = vec![0i8; p.cols];
                p.encoding.unpack_row(p.row(r), &mut t).unwrap();
                t
            })
            .collect();
        (p.cols, trits)
    };
    let mut scales = Vec::new();
    edit_tensor(dir, TERNARY, &format!("{name}.scale"), |b| {
        for r in rows.clone() {
            set_f32(b, r, f32_at(b, r) * factor);
        }
        scales = (0..b.len() / 4).map(|i| f32_at(b, i)).collect();
    });
    edit_tensor(dir, FP16, name, |b| {
        for (r, t) in rows.clone().zip(&trits) {
            for (c, &t) in t.iter().enumerate() {
                let v = f16::from_f32(t as f32 * scales[r]);
                // t = 0 gives +0.0, never -0.0 (rule 5.2).
                assert!(t != 0 || v.to_bits() == 0);
                set_u16(b, r * cols + c, v.to_bits());
            }
        }
    });
    let min = scales.iter().copied().fold(f32::INFINITY, f32::min);
    let max = scales.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    edit_manifest(dir, |m| {
        let e = tensor_entry(m, name);
        e["scale_min"] = f32_json(min);
        e["scale_max"] = f32_json(max);
    });
    rehash(dir);
}

/// 16 rows of layer 1's `self_attn.o_proj` with 3 times their scales.
fn o_proj_rows_x3(dir: &Path) {
    scale_rows(dir, "model.layers.1.self_attn.o_proj.weight", 0..16, 3.0);
}

/// 16 rows of layer 0's `mlp.down_proj` with 3 times their scales.
fn down_proj_rows_x3(dir: &Path) {
    scale_rows(dir, "model.layers.0.mlp.down_proj.weight", 0..16, 3.0);
}

/// Rewrites safetensors file `file` of `dir` without the tensors `drop` selects, as a valid
/// file (the `safetensors` crate's layout: by alignment, then name), keeping its metadata.
fn drop_tensors(dir: &Path, file: &str, drop: impl Fn(&str) -> bool) {
    use safetensors::tensor::{Metadata, SafeTensors};
    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta): (usize, Metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let info: Option<HashMap<String, String>> = meta.metadata().clone();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| !drop(n)).collect();
    let out = safetensors::serialize(kept, info).unwrap();
    std::fs::write(&path, out).unwrap();
}

/// Removes the last layer: its tensors from both files, the manifest's tensor list and both
/// file lists; `num_hidden_layers` one less.
fn remove_last_layer(dir: &Path) {
    let layers = manifest(dir)["model"]["decoder"]["num_hidden_layers"]
        .as_u64()
        .unwrap();
    let prefix = format!("model.layers.{}.", layers - 1);
    let gone = |n: &str| n.starts_with(&prefix);
    drop_tensors(dir, TERNARY, gone);
    drop_tensors(dir, FP16, gone);
    edit_manifest(dir, |m| {
        m["model"]["decoder"]["num_hidden_layers"] = json!(layers - 1);
        let keep = |v: &mut Value| {
            let list = v.as_array_mut().unwrap();
            let before = list.len();
            list.retain(|t| !gone(t["name"].as_str().unwrap()));
            assert!(list.len() < before);
        };
        keep(&mut m["tensors"]);
        keep(&mut m["files"]["ternary"]["tensors"]);
        keep(&mut m["files"]["fp16"]["tensors"]);
    });
    rehash(dir);
}

/// Swaps the `len` rows starting at `a` and `b` of a row-major tensor of `row_bytes`-byte rows.
fn swap_rows(bytes: &mut [u8], row_bytes: usize, (a, b, len): (usize, usize, usize)) {
    assert!(a + len <= b, "disjoint, a first");
    let (lo, hi) = bytes.split_at_mut(b * row_bytes);
    lo[a * row_bytes..(a + len) * row_bytes].swap_with_slice(&mut hi[..len * row_bytes]);
}

/// Swaps query heads `h1` < `h2` of layer `layer`: their `head_dim` rows of `q_proj` in the
/// packed trits (rows are packed independently, section 5), in the per-row scales and in the
/// FP16 rows.
fn swap_query_heads(dir: &Path, layer: usize, h1: usize, h2: usize) {
    let name = format!("model.layers.{layer}.self_attn.q_proj.weight");
    let d = manifest(dir)["model"]["decoder"]["head_dim"]
        .as_u64()
        .unwrap() as usize;
    let (bytes_per_row, cols) = {
        let b = Bundle::open(dir).unwrap();
        let p = b.packed(&name).unwrap();
        assert_eq!(p.granularity, Granularity::Channel);
        (p.bytes_per_row(), p.cols)
    };
    let rows = (h1 * d, h2 * d, d);
    edit_tensor(dir, TERNARY, &name, |b| swap_rows(b, bytes_per_row, rows));
    edit_tensor(dir, TERNARY, &format!("{name}.scale"), |b| {
        swap_rows(b, 4, rows)
    });
    edit_tensor(dir, FP16, &name, |b| swap_rows(b, 2 * cols, rows));
    rehash(dir);
}

/// Heads 0 and 2 of layer 0 swapped (under GQA they read different KV heads).
fn heads_0_2_swapped(dir: &Path) {
    swap_query_heads(dir, 0, 0, 2);
}

/// The mutations of spec section 16.3, in its order.
const MUTATIONS: [Mutation; 7] = [
    ("rope_theta x10", rope_theta_x10),
    ("rms_norm_eps x1e4", rms_norm_eps_x1e4),
    ("layer 0 input_layernorm x4", input_layernorm_x4),
    ("16 rows of layer 1 o_proj scales x3", o_proj_rows_x3),
    ("16 rows of layer 0 down_proj scales x3", down_proj_rows_x3),
    ("last layer removed", remove_last_layer),
    ("layer 0 query heads 0 and 2 swapped", heads_0_2_swapped),
];

/// Applies `mutation` to a copy of `base`, verifies it (every check but the gradient checks):
/// the integrity checks pass; returns the report.
fn mutated(base: &Path, tag: &str, (what, mutation): Mutation) -> VerifyReport {
    let dir = copy_of(base, &format!("{tag}-{}", what.replace(' ', "-")));
    mutation(&dir);
    let t = Instant::now();
    let report = verify(&dir, &model_checks());
    assert_integrity(&report, what);
    println!(
        "{tag}: {what}: mean KL(original || FP16) {:.3e} nats (ternary {:.3e}), fidelity {:?}, retention {:?} ({}); verify {:.1} s",
        fp16_mean_kl(&report),
        fidelity(&report)["ternary"]["kl"]["mean"].as_f64().unwrap_or(f64::NAN),
        status(&report, Check::Fidelity),
        status(&report, Check::Retention),
        report.check(Check::Retention).unwrap().detail,
        t.elapsed().as_secs_f64(),
    );
    report
}

/// `mutation` of the trained fixture fails the KL gate (and only the model checks can see it).
#[track_caller]
fn lm_mutation_fails_the_gate(index: usize) {
    let (what, _) = MUTATIONS[index];
    let report = mutated(lm_bundle(), "lm", MUTATIONS[index]);
    let kl = fp16_mean_kl(&report);
    let f = report.check(Check::Fidelity).unwrap();
    assert_eq!(f.status, Status::Fail, "{what}: {}", f.detail);
    assert!(kl > DEFAULT_MAX_KL, "{what}: {kl}");
    assert!(!report.ok);
}

// ---- the trained fixture ----

#[test]
fn a_faithful_handoff_of_the_trained_model_passes_every_check() {
    let dir = lm_bundle();
    let m = manifest(dir);
    assert_eq!(m["format_version"], "5.0");
    assert_eq!(m["provenance"]["original"]["forward"], "ternary");
    let report = verify(dir, &VerifyOptions::default());
    for c in &report.checks {
        let expected = if c.name == Check::Reference || c.name == Check::Signature {
            Status::Skip
        } else {
            Status::Pass
        };
        assert_eq!(c.status, expected, "{}: {}", c.name, c.detail);
    }
    let f = fidelity(&report);
    println!(
        "trained fixture, faithful: {}",
        report.check(Check::Fidelity).unwrap().detail
    );
    assert_eq!(f["form"], "full");
    assert_eq!(f["top_k"], Value::Null);
    assert_eq!(f["max_kl"], DEFAULT_MAX_KL);
    assert_eq!(
        f["samples"],
        (LM_VALIDATION_BYTES / SEQ_LEN * (SEQ_LEN - 1)) as u64
    );
    // Only the F16 rounding of each scale separates the FP16 model from its QAT forward.
    let kl = fp16_mean_kl(&report);
    assert!(kl.abs() < 1e-4, "{kl}");
    assert!(f["fp16"]["kl"]["max"].as_f64().unwrap() < 1e-2, "{f:#}");
    // The ternary path is the original model up to summation order.
    assert!(
        f["ternary"]["kl"]["mean"].as_f64().unwrap().abs() < 1e-6,
        "{f:#}"
    );
    assert_eq!(f["fp16"]["kl_error_bound"], Value::Null);
    let ppl = |v: &Value| v["perplexity"].as_f64().unwrap_or_else(|| panic!("{f:#}"));
    let (o, fp, t) = (
        ppl(&f["original_model"]),
        ppl(&f["fp16"]),
        ppl(&f["ternary"]),
    );
    for p in [o, fp, t] {
        assert!((2.0..20.0).contains(&p), "perplexity {p}: {f:#}");
        assert!((p / o - 1.0).abs() < 0.01, "perplexities {o} {fp} {t}");
    }
    // Perplexity is exp(cross-entropy).
    let ce = f["original_model"]["cross_entropy"].as_f64().unwrap();
    assert!((ce.exp() - o).abs() < 1e-9 * o);
    assert!(f["fp16"]["same_top"].as_f64().unwrap() >= 0.995);
    // Every sample in the histogram.
    let counted: u64 = f["fp16"]["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(Value::from(counted), f["samples"]);
}

#[test]
fn rope_theta_x10_fails_the_kl_gate() {
    lm_mutation_fails_the_gate(0);
}

#[test]
fn rms_norm_eps_x1e4_fails_the_kl_gate() {
    lm_mutation_fails_the_gate(1);
}

#[test]
fn a_norm_weight_x4_fails_the_kl_gate() {
    lm_mutation_fails_the_gate(2);
}

#[test]
fn o_proj_scales_x3_on_16_rows_fail_the_kl_gate() {
    lm_mutation_fails_the_gate(3);
}

#[test]
fn down_proj_scales_x3_on_16_rows_fail_the_kl_gate() {
    lm_mutation_fails_the_gate(4);
}

#[test]
fn a_removed_layer_fails_the_kl_gate() {
    lm_mutation_fails_the_gate(5);
}

#[test]
fn swapped_attention_heads_fail_the_kl_gate() {
    lm_mutation_fails_the_gate(6);
}

// ---- the decoder task checkpoint ----

#[test]
fn the_task_checkpoints_mutations_are_measured() {
    let base = task_bundle();
    let clean = verify(base, &model_checks());
    assert_integrity(&clean, "task checkpoint");
    let f = report_fidelity(&clean);
    assert_eq!(f.status, Status::Pass, "{}", f.detail);
    assert_eq!(fidelity(&clean)["form"], "full");
    println!("task checkpoint, faithful: {}", f.detail);
    let mut figures = Vec::new();
    for m in &MUTATIONS[..5] {
        let report = mutated(base, "task", *m);
        figures.push((m.0, fp16_mean_kl(&report), status(&report, Check::Fidelity)));
    }
    for (what, kl, status) in &figures {
        println!("task checkpoint: {what}: mean KL {kl:.3e} nats, fidelity {status:?}");
    }
}

fn report_fidelity(report: &VerifyReport) -> &ternary_bundle::verify::CheckResult {
    report.check(Check::Fidelity).unwrap()
}

#[test]
fn the_gate_is_max_kl_and_zero_disables_it() {
    // The task checkpoint's norm mutation, gated below and above its mean KL, and not gated.
    let dir = copy_of(task_bundle(), "task-gate");
    input_layernorm_x4(&dir);
    let with_gate = |max_kl| {
        verify(
            &dir,
            &VerifyOptions {
                only: vec![Check::Fidelity],
                max_kl,
                ..VerifyOptions::default()
            },
        )
    };
    let kl = fp16_mean_kl(&with_gate(DEFAULT_MAX_KL));
    assert!(kl > 0.0);
    let strict = with_gate(kl * 0.99);
    assert_eq!(status(&strict, Check::Fidelity), Status::Fail);
    assert!(!strict.ok);
    assert_eq!(fidelity(&strict)["max_kl"], kl * 0.99);
    assert_eq!(status(&with_gate(kl * 1.01), Check::Fidelity), Status::Pass);
    let off = with_gate(0.0);
    let r = report_fidelity(&off);
    assert_eq!(r.status, Status::Pass);
    assert!(r.detail.contains("gate disabled"), "{}", r.detail);
    assert_eq!(fp16_mean_kl(&off), kl);
}

// ---- --reference ----

#[test]
fn reference_recomputes_the_stored_distributions() {
    let dir = lm24(None);
    let options = VerifyOptions {
        only: vec![Check::Reference],
        reference: Some(lm_dir()),
        ..VerifyOptions::default()
    };
    let report = verify(dir, &options);
    let r = report.check(Check::Reference).unwrap();
    assert_eq!(r.status, Status::Pass, "{}", r.detail);
    let stored = &r.figures["stored_distributions"];
    let max = stored["max_kl"]
        .as_f64()
        .unwrap_or_else(|| panic!("{:#}", r.figures));
    assert!(max <= 1e-4, "{max}");
    assert_eq!(r.figures["stored_predictions"]["differ"], 0);
    assert!(r.detail.contains("distributions"), "{}", r.detail);
}

#[test]
fn reference_catches_tampered_distributions() {
    // Swap two log-probabilities of row 0 that are not its maximum: still a distribution whose
    // largest value is at the prediction (rule 6.4 holds, every data check passes), but not
    // the one the checkpoint computes.
    let dir = copy_of(lm24(None), "lm-24-tampered");
    let classes = manifest(&dir)["model"]["decoder"]["vocab_size"]
        .as_u64()
        .unwrap() as usize;
    edit_tensor(&dir, VALIDATION, "original_log_probs", |b| {
        let row: Vec<f32> = (0..classes).map(|i| f32_at(b, i)).collect();
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
        // The second most probable class and the least probable one.
        let (a, z) = (order[1], order[classes - 1]);
        assert!(row[a] - row[z] > 1.0, "{row:?}");
        set_f32(b, a, row[z]);
        set_f32(b, z, row[a]);
    });
    rehash(&dir);
    let b = Bundle::open(&dir).unwrap();
    ternary_bundle::read::checks::check_all(&b).unwrap();
    drop(b);
    let options = VerifyOptions {
        only: vec![Check::Reference],
        reference: Some(lm_dir()),
        ..VerifyOptions::default()
    };
    let report = verify(&dir, &options);
    let r = report.check(Check::Reference).unwrap();
    assert_eq!(r.status, Status::Fail, "{}", r.detail);
    assert!(
        r.detail
            .contains("distributions differ from the stored ones"),
        "{}",
        r.detail
    );
    assert!(
        r.figures["stored_distributions"]["max_kl"]
            .as_f64()
            .unwrap()
            > 1e-4
    );
    // The predictions themselves are intact.
    assert_eq!(r.figures["stored_predictions"]["differ"], 0);
}

// ---- the top-K form ----

/// `dir` verified by the fidelity check alone.
fn fidelity_only(dir: &Path) -> VerifyReport {
    verify(
        dir,
        &VerifyOptions {
            only: vec![Check::Fidelity],
            ..VerifyOptions::default()
        },
    )
}

#[test]
fn the_top_k_form_brackets_the_full_forms_kl() {
    // Both forms of the trained fixture on 24 windows of its validation text, faithful and
    // with ten times the RoPE base.
    let (full, top) = (lm24(None), lm24(Some(8)));
    assert_eq!(manifest(top)["format_version"], "5.0");
    let full_rope = copy_of(full, "lm-24-full-rope");
    let top_rope = copy_of(top, "lm-24-top-8-rope");
    rope_theta_x10(&full_rope);
    rope_theta_x10(&top_rope);
    for (full, top, what) in [
        (full, top, "faithful"),
        (&full_rope, &top_rope, "rope_theta x10"),
    ] {
        let (rf, rt) = (fidelity_only(full), fidelity_only(top));
        let (ff, ft) = (fidelity(&rf), fidelity(&rt));
        assert_eq!(ft["form"], "top-k", "{ft:#}");
        assert_eq!(ft["top_k"], 8);
        assert_eq!(ff["form"], "full");
        for path in ["fp16", "ternary"] {
            let exact = ff[path]["kl"]["mean"].as_f64().unwrap();
            let lower = ft[path]["kl"]["mean"].as_f64().unwrap();
            let bound = &ft[path]["kl_error_bound"];
            let (bmean, bmax) = (
                bound["mean"].as_f64().unwrap(),
                bound["max"].as_f64().unwrap(),
            );
            assert!(bmean >= 0.0 && bmax >= bmean, "{what} {path}: {bound}");
            assert_eq!(ff[path]["kl_error_bound"], Value::Null);
            println!(
                "{what} {path}: full mean KL {exact:.4e}, top-8 {lower:.4e} + bound {bmean:.4e}"
            );
            // KL_K <= KL <= KL_K + bound, up to rounding.
            let tol = 1e-9 + 1e-6 * exact.abs();
            assert!(lower <= exact + tol, "{what} {path}: {lower} > {exact}");
            assert!(
                exact <= lower + bmean + tol,
                "{what} {path}: {exact} > {lower} + {bmean}"
            );
            // The labels' cross-entropy is exact in both forms.
            for model in [path, "original_model"] {
                let (a, b) = (
                    ff[model]["cross_entropy"].as_f64().unwrap(),
                    ft[model]["cross_entropy"].as_f64().unwrap(),
                );
                assert!((a - b).abs() < 1e-6, "{what} {model}: {a} vs {b}");
            }
        }
        if what == "faithful" {
            assert_eq!(status(&rf, Check::Fidelity), Status::Pass);
            assert_eq!(status(&rt, Check::Fidelity), Status::Pass);
        }
    }
}

/// Verifies `dir` with the reference check alone, against the trained fixture.
fn reference_only(dir: &Path) -> VerifyReport {
    verify(
        dir,
        &VerifyOptions {
            only: vec![Check::Reference],
            reference: Some(lm_dir()),
            ..VerifyOptions::default()
        },
    )
}

#[test]
fn reference_checks_the_top_k_form_and_catches_tampered_ids() {
    let top = lm24(Some(8));
    let r = reference_only(top);
    let c = r.check(Check::Reference).unwrap();
    assert_eq!(c.status, Status::Pass, "{}", c.detail);
    assert!(
        c.figures["stored_distributions"]["max_kl"]
            .as_f64()
            .unwrap()
            <= 1e-4
    );
    // Row 5's second and third ids swapped: the log-probabilities stay non-increasing (rule
    // 6.4 holds) but name the wrong classes.
    let dir = copy_of(top, "lm-24-top-8-tampered-ids");
    edit_tensor(&dir, VALIDATION, "original_top_ids", |b| {
        let (i, j) = (5 * 8 + 1, 5 * 8 + 2);
        let (a, c) = (b[8 * i..8 * i + 8].to_vec(), b[8 * j..8 * j + 8].to_vec());
        b[8 * i..8 * i + 8].copy_from_slice(&c);
        b[8 * j..8 * j + 8].copy_from_slice(&a);
    });
    rehash(&dir);
    ternary_bundle::read::checks::check_all(&Bundle::open(&dir).unwrap()).unwrap();
    let r = reference_only(&dir);
    let c = r.check(Check::Reference).unwrap();
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert!(
        c.detail
            .contains("distributions differ from the stored ones"),
        "{}",
        c.detail
    );
}

#[test]
fn reference_catches_tampered_label_log_probabilities() {
    // The stored log-probability of every label 1 nat lower: rule 6.4 still holds (finite,
    // <= 0), the original model's reported perplexity is e times what it was, and the
    // checkpoint computes otherwise.
    let top = lm24(Some(8));
    let dir = copy_of(top, "lm-24-top-8-tampered-labels");
    edit_tensor(&dir, VALIDATION, "original_label_log_probs", |b| {
        for i in 0..b.len() / 4 {
            set_f32(b, i, f32_at(b, i) - 1.0);
        }
    });
    rehash(&dir);
    ternary_bundle::read::checks::check_all(&Bundle::open(&dir).unwrap()).unwrap();
    let r = reference_only(&dir);
    let c = r.check(Check::Reference).unwrap();
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert!(
        c.detail.contains("original_label_log_probs"),
        "{}",
        c.detail
    );
    // The untouched top-K bundle passes the same comparison.
    let r = reference_only(top);
    let c = r.check(Check::Reference).unwrap();
    assert_eq!(c.status, Status::Pass, "{}", c.detail);
}

#[test]
fn without_stored_distributions_fidelity_needs_the_reference() {
    // --original-top-k 0: format 4.0 (the original is the ternary forward), predictions only.
    let none = lm24(Some(0));
    assert_eq!(manifest(none)["format_version"], "4.0");
    let only = |reference: Option<PathBuf>| VerifyOptions {
        only: vec![Check::Fidelity],
        reference,
        ..VerifyOptions::default()
    };
    let r = verify(none, &only(None));
    let f = report_fidelity(&r);
    assert_eq!(f.status, Status::Skip, "{}", f.detail);
    assert!(
        f.detail.contains("no original distributions"),
        "{}",
        f.detail
    );
    // With the checkpoint, the distributions are recomputed: the figures of the bundle that
    // stores them.
    let r = verify(none, &only(Some(lm_dir())));
    let f = report_fidelity(&r);
    assert_eq!(f.status, Status::Pass, "{}", f.detail);
    assert_eq!(f.figures["original"], "reference", "{:#}", f.figures);
    let stored = fidelity_only(lm24(None));
    let (a, b) = (fp16_mean_kl(&r), fp16_mean_kl(&stored));
    assert!((a - b).abs() < 1e-6, "recomputed {a}, stored {b}");
    let ce = |r: &VerifyReport| {
        fidelity(r)["original_model"]["cross_entropy"]
            .as_f64()
            .unwrap()
    };
    assert!((ce(&r) - ce(&stored)).abs() < 1e-6);
}
