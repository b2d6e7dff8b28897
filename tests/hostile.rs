//! Hostile inputs (spec section "Security considerations"): each case damages a valid bundle the
//! way an attacker or a broken tool would, and opening plus every data check must end in a clean,
//! typed error naming the rule, without a panic and with bounded memory. A counting global
//! allocator measures the peak heap of each case: it must stay within a few MB of the damaged
//! bundle's own size, whatever sizes and counts the files claim.
//!
//! Time is measured, not asserted here (no timed unit tests): each case prints
//! `hostile-case <seconds> <name>` to stderr, and `bash benches/hostile_timing.sh` runs the suite,
//! lists the slowest cases and fails if any takes a second or more.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::surgery::*;
use serde_json::json;
use ternary_bundle::read::checks::check_all;
use ternary_bundle::{write_bundle, Bundle, Rule, WriteOptions};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Serializes the cases (the allocator counters are global).
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn dir_size(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |es| {
        es.flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len() as usize)
            .sum()
    })
}

/// Builds the tiny bundle, applies `damage`, then opens and checks it; returns the error.
fn hostile(name: &str, damage: impl FnOnce(&Path)) -> ternary_bundle::Error {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let (src, plan) = common::tiny_model(11);
    write_bundle(&dir, &src, &plan, &WriteOptions::default()).unwrap();
    damage(&dir);
    let size = dir_size(&dir);
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let outcome = std::panic::catch_unwind(|| Bundle::open(&dir).and_then(|b| check_all(&b)));
    eprintln!("hostile-case {:.6} {name}", started.elapsed().as_secs_f64());
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let result = outcome.unwrap_or_else(|_| panic!("{name}: panicked"));
    let err = result.expect_err(name);
    // The file's own bytes, plus a fixed overhead that the limits bound: at most 65,536 parsed
    // header entries (about 150 bytes each) whatever count the header claims.
    assert!(
        peak < size + (12 << 20),
        "{name}: peak heap {peak} bytes for a bundle of {size} bytes"
    );
    let msg = err.to_string();
    assert!(
        !msg.contains('\u{1b}'),
        "{name}: raw escape in the message: {msg:?}"
    );
    err
}

fn expect(name: &str, rule: Rule, damage: impl FnOnce(&Path)) {
    let e = hostile(name, damage);
    assert_eq!(e.rule(), Some(rule), "{name}: {e}");
}

fn set_header_len(dir: &Path, file: &str, n: u64) {
    let mut b = std::fs::read(dir.join(file)).unwrap();
    b[..8].copy_from_slice(&n.to_le_bytes());
    std::fs::write(dir.join(file), b).unwrap();
}

/// Replaces the whole header of `file` with `json` (data kept) and rehashes.
fn replace_header(dir: &Path, file: &str, json: &str) {
    edit_st(dir, file, |st| st.set_header_text(json));
    rehash(dir);
}

#[test]
fn manifest_attacks() {
    expect("huge manifest", Rule::ManifestSize, |d| {
        let mut m = std::fs::read(d.join(MANIFEST)).unwrap();
        m.resize(17 << 20, b' ');
        std::fs::write(d.join(MANIFEST), m).unwrap();
    });
    expect("deeply nested", Rule::ManifestJson, |d| {
        edit_manifest_text(d, |t| {
            replace_once(
                t,
                "\"extensions\": {}",
                &format!(
                    "\"extensions\": {}{}",
                    "[".repeat(100_000),
                    "]".repeat(100_000)
                ),
            )
        })
    });
    expect("duplicate keys", Rule::ManifestJson, |d| {
        edit_manifest_text(d, |t| {
            replace_once(
                t,
                "\"format\": \"ternary-bundle\",",
                "\"format\": \"ternary-bundle\", \"format\": \"ternary-bundle\",",
            )
        })
    });
    expect("wrong types", Rule::ManifestSchema, |d| {
        edit_manifest(d, |m| m["model"]["input_dim"] = json!("seven"))
    });
    expect("NaN literal", Rule::ManifestJson, |d| {
        edit_manifest_text(d, |t| {
            replace_once(t, "\"epsilon\": 0.00001", "\"epsilon\": NaN")
        })
    });
    expect("Infinity literal", Rule::ManifestJson, |d| {
        edit_manifest_text(d, |t| {
            replace_once(t, "\"epsilon\": 0.00001", "\"epsilon\": Infinity")
        })
    });
    expect("empty manifest", Rule::ManifestJson, |d| {
        std::fs::write(d.join(MANIFEST), b"").unwrap()
    });
    expect("unknown encoding", Rule::Quantization, |d| {
        edit_manifest(d, |m| m["quantization"]["encoding"] = json!("trit9"))
    });
    let e = hostile("unknown major", |d| {
        edit_manifest(d, |m| m["format_version"] = json!("6.0"))
    });
    assert_eq!(e.rule(), Some(Rule::FormatVersion), "{e}");
    assert!(
        e.to_string().contains("format version 6.0") && e.to_string().contains("5.0"),
        "{e}"
    );
    expect("manifest shape rank 100", Rule::TensorList, |d| {
        edit_manifest(d, |m| {
            tensor_entry(m, "fc1.bias")["shape"] = json!(vec![1; 100])
        })
    });
    expect("manifest element count overflow", Rule::TensorList, |d| {
        edit_manifest(d, |m| {
            tensor_entry(m, "fc1.bias")["shape"] = json!([u64::MAX, u64::MAX])
        })
    });
    let e = hostile("name with terminal escapes", |d| {
        edit_manifest(d, |m| {
            tensor_entry(m, "fc1.bias")["name"] = json!("fc1\u{1b}[2J\u{7}.bias")
        })
    });
    assert_eq!(e.rule(), Some(Rule::Names), "{e}");
    assert!(e.to_string().contains("\\u{1b}"), "{e}");
}

#[test]
fn safetensors_attacks() {
    expect("header length beyond the limit", Rule::HeaderLength, |d| {
        set_header_len(d, TERNARY, 1 << 40);
        rehash(d);
    });
    expect(
        "header length within the limit, beyond the file",
        Rule::HeaderLength,
        |d| {
            let size = std::fs::metadata(d.join(TERNARY)).unwrap().len();
            set_header_len(d, TERNARY, size - 7);
            rehash(d);
        },
    );
    expect("header length u64::MAX", Rule::HeaderLength, |d| {
        set_header_len(d, FP16, u64::MAX);
        rehash(d);
    });
    expect("overlapping offsets", Rule::DataOffsets, |d| {
        replace_header(
            d,
            FP16,
            r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}}"#,
        )
    });
    expect(
        "reversed offsets (start > end)",
        Rule::TensorByteLength,
        |d| {
            replace_header(
                d,
                FP16,
                r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}}"#,
            )
        },
    );
    expect(
        "out-of-order offsets leaving a gap",
        Rule::DataOffsets,
        |d| {
            replace_header(
                d,
                FP16,
                r#"{"b":{"dtype":"U8","shape":[4],"data_offsets":[12,16]},"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#,
            )
        },
    );
    expect(
        "dtype and shape disagree with the byte range",
        Rule::TensorByteLength,
        |d| {
            replace_header(
                d,
                FP16,
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            )
        },
    );
    expect("element count overflows u64", Rule::TensorByteLength, |d| {
        replace_header(
            d,
            FP16,
            r#"{"a":{"dtype":"F64","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
        )
    });
    expect("rank 100", Rule::HeaderEntries, |d| {
        let dims = vec!["1"; 100].join(",");
        replace_header(
            d,
            FP16,
            &format!(r#"{{"a":{{"dtype":"U8","shape":[{dims}],"data_offsets":[0,1]}}}}"#),
        )
    });
    expect("1.5 million tensors", Rule::HeaderEntries, |d| {
        let mut h = String::from("{");
        for i in 0..1_500_000 {
            h.push_str(&format!(
                "\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}},"
            ));
        }
        h.pop();
        h.push('}');
        replace_header(d, FP16, &h)
    });
    expect("duplicate tensor names", Rule::HeaderJson, |d| {
        replace_header(
            d,
            FP16,
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        )
    });
    expect(
        "control character in a tensor name",
        Rule::HeaderEntries,
        |d| {
            replace_header(
                d,
                FP16,
                "{\"evil\\u001b[31m\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
            )
        },
    );
    expect("truncated by one byte", Rule::FileSize, |d| {
        let b = std::fs::read(d.join(TERNARY)).unwrap();
        std::fs::write(d.join(TERNARY), &b[..b.len() - 1]).unwrap();
    });
    expect("grown by trailing bytes", Rule::FileSize, |d| {
        let mut b = std::fs::read(d.join(FP16)).unwrap();
        b.extend_from_slice(b"trailing");
        std::fs::write(d.join(FP16), b).unwrap();
    });
    expect(
        "trailing bytes declared in the manifest",
        Rule::DataOffsets,
        |d| {
            let mut b = std::fs::read(d.join(FP16)).unwrap();
            b.extend_from_slice(b"trailing");
            std::fs::write(d.join(FP16), b).unwrap();
            rehash(d);
        },
    );
    expect("empty data file", Rule::FileSize, |d| {
        std::fs::write(d.join(TERNARY), b"").unwrap()
    });
    expect("empty data file declared empty", Rule::HeaderLength, |d| {
        std::fs::write(d.join(TERNARY), b"").unwrap();
        rehash(d);
    });
}

#[test]
fn filesystem_attacks() {
    expect("symlink inside the bundle", Rule::RegularFile, |d| {
        std::fs::rename(d.join(FP16), d.join("real.safetensors")).unwrap();
        std::os::unix::fs::symlink("real.safetensors", d.join(FP16)).unwrap();
    });
    expect("symlink outside the bundle", Rule::RegularFile, |d| {
        std::fs::remove_file(d.join(MANIFEST)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join(MANIFEST)).unwrap();
    });
    expect("directory where a file should be", Rule::RegularFile, |d| {
        std::fs::remove_file(d.join(TERNARY)).unwrap();
        std::fs::create_dir(d.join(TERNARY)).unwrap();
    });
    expect("missing file", Rule::RequiredFiles, |d| {
        std::fs::remove_file(d.join(FP16)).unwrap()
    });
}

#[test]
fn scale_attacks() {
    for (what, value) in [
        ("NaN", f32::NAN),
        ("Inf", f32::INFINITY),
        ("negative", -0.5),
        ("zero", 0.0),
        ("subnormal", 1e-40),
        ("above the F16 maximum", 70000.0),
    ] {
        expect(&format!("scale {what}"), Rule::ScaleValid, |d| {
            edit_tensor(d, TERNARY, "fc1.weight.scale", |b| {
                b[..4].copy_from_slice(&value.to_le_bytes())
            });
            rehash(d);
        });
    }
}

/// A valid bundle whose small tensors declare a model 100,000 wide, with a validation set of
/// 2,048 one-wide samples: the whole batch through the wide layer would be 2,048 x 100,000
/// activations (820 MB of f32, several times over in a forward pass) from a bundle of about
/// 2 MB. The writer (running the original model for `original_predictions`) and verify run the
/// model in chunks (`samples::MAX_BATCH_ELEMENTS` activations per matrix), so their peak heap
/// stays within a fixed multiple of that budget, and every check still runs and passes.
#[test]
fn verify_memory_is_bounded_on_a_wide_model_with_many_samples() {
    use ternary_bundle::format::manifest::{LayerSpec, ModelSpec};
    use ternary_bundle::model::chunks::MAX_BATCH_ELEMENTS;
    use ternary_bundle::source::MemorySource;
    use ternary_bundle::verify::{verify, Status, VerifyOptions};

    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wide");
    let wide = 100_000u64;
    let src = MemorySource::new("wide.safetensors")
        .with("up", vec![wide, 1], common::values(1, wide as usize))
        .with("down", vec![2, wide], common::values(2, 2 * wide as usize));
    let layer = |name: &str, inf, out, activation: &str| LayerSpec {
        name: name.into(),
        weight: name.into(),
        bias: None,
        in_features: inf,
        out_features: out,
        activation: activation.into(),
        rmsnorm: None,
    };
    let plan = ternary_bundle::BundlePlan {
        model: ModelSpec {
            decoder: None,
            input_dim: 1,
            layers: vec![
                layer("up", 1, wide, "relu"),
                layer("down", wide, 2, "identity"),
            ],
        },
        params: Default::default(),
        quantize: ["up".to_string(), "down".to_string()].into(),
        given: None,
    };
    let samples = 2048;
    let options = WriteOptions {
        validation: Some(ternary_bundle::source::ValidationSet {
            input_ids: None,
            origin: "wide-validation.safetensors".into(),
            inputs: common::values(3, samples),
            labels: (0..samples as i64).map(|i| i % 2).collect(),
            difficulty: None,
        }),
        ..WriteOptions::default()
    };
    let budget = (MAX_BATCH_ELEMENTS * 4) as usize; // one f32 activation matrix
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    write_bundle(&dir, &src, &plan, &options).unwrap();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let size = dir_size(&dir);
    eprintln!("wide model: writer peak heap {peak} bytes, bundle {size} bytes");
    assert!(
        peak < 4 * size + 6 * budget,
        "writer peak heap {peak} bytes for a bundle of {size} bytes (budget {budget} per matrix)"
    );

    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    // Random weights lose decisions to quantization: the retention bar is not the point here.
    let report = verify(
        &dir,
        &VerifyOptions {
            min_retention: 0.0,
            ..VerifyOptions::default()
        },
    );
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    for c in &report.checks {
        let expected = if c.name == "reference" || c.name == "signature" {
            Status::Skip
        } else {
            Status::Pass
        };
        assert_eq!(c.status, expected, "{}: {}", c.name, c.detail);
    }
    // The writer stored the original's distributions (format 5.0) and fidelity measured the
    // FP16 model against them at every sample, within the same bound.
    let fidelity = report.checks.iter().find(|c| c.name == "fidelity").unwrap();
    assert_eq!(fidelity.figures["samples"], samples, "{}", fidelity.detail);
    assert_eq!(fidelity.figures["original"], "stored");
    eprintln!("wide model: verify peak heap {peak} bytes, bundle {size} bytes, budget {budget}");
    assert!(
        peak < size + 6 * budget,
        "peak heap {peak} bytes for a bundle of {size} bytes (budget {budget} per matrix)"
    );
}

/// The most tensors a ternary file can hold: 16,384 quantized tensors are 32,768 header entries
/// (half the limit of 65,536) and as many manifest entries. Every lookup by name is indexed, so
/// opening, every data check and verify stay linear; the damaged scale of the last tensor is
/// still found. Times are printed for `benches/hostile_timing.sh` (a linear search per tensor
/// made this take seconds).
#[test]
fn many_tensors_are_checked_in_linear_time() {
    use ternary_bundle::format::manifest::{LayerSpec, ModelSpec};
    use ternary_bundle::source::MemorySource;
    use ternary_bundle::verify::{verify, Status, VerifyOptions};

    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("many");
    let n = 16_384;
    let names: Vec<String> = (0..n).map(|i| format!("t{i:05}")).collect();
    let mut src = MemorySource::new("many.safetensors");
    for (i, name) in names.iter().enumerate() {
        let v = if i % 2 == 0 { 0.5 } else { -0.25 };
        src.push(name.clone(), vec![1, 2], vec![v, 1.0]).unwrap();
    }
    let plan = ternary_bundle::BundlePlan {
        model: ModelSpec {
            decoder: None,
            input_dim: 2,
            layers: vec![LayerSpec {
                name: "l".into(),
                weight: names[0].clone(),
                bias: None,
                in_features: 2,
                out_features: 1,
                activation: "identity".into(),
                rmsnorm: None,
            }],
        },
        params: Default::default(),
        quantize: names.iter().cloned().collect(),
        given: None,
    };
    write_bundle(&dir, &src, &plan, &WriteOptions::default()).unwrap();
    let last = format!("{}.scale", names[n - 1]);
    edit_tensor(&dir, TERNARY, &last, |b| {
        b[..4].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    rehash(&dir);

    let started = std::time::Instant::now();
    let e = Bundle::open(&dir).and_then(|b| check_all(&b)).unwrap_err();
    eprintln!(
        "hostile-case {:.6} 16,384 quantized tensors: open and every data check",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(e.rule(), Some(Rule::ScaleValid), "{e}");
    assert!(e.to_string().contains(&names[n - 1]), "{e}");

    let started = std::time::Instant::now();
    let report = verify(&dir, &VerifyOptions::default());
    eprintln!(
        "hostile-case {:.6} 16,384 quantized tensors: the whole of verify",
        started.elapsed().as_secs_f64()
    );
    let scales = report.checks.iter().find(|c| c.name == "scales").unwrap();
    assert_eq!(scales.status, Status::Fail, "{}", scales.detail);
}

/// `bundle run` writes its output a chunk at a time: the heap peak of `run_to_file` is the
/// same for an output four times larger (134 MB, then 537 MB of logits), and stays far below
/// the output; `--top-k` writes the largest logits of each row, equal to those of the full
/// output.
#[test]
fn run_memory_does_not_grow_with_the_output() {
    use ternary_bundle::model::reference::WeightPath;
    use ternary_bundle::run::{run_to_file, RunInput};
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let (input, hidden, classes) = (8u64, 32u64, 8192u64);
    let src = ternary_bundle::source::MemorySource::new("wide-out.safetensors")
        .with(
            "fc1.weight",
            vec![hidden, input],
            common::values(1, (hidden * input) as usize),
        )
        .with("fc1.bias", vec![hidden], common::values(2, hidden as usize))
        .with(
            "fc2.weight",
            vec![classes, hidden],
            common::values(3, (classes * hidden) as usize),
        )
        .with("fc2.norm.weight", vec![hidden], vec![1.0; hidden as usize]);
    let plan = common::two_layer_plan(input, hidden, classes);
    write_bundle(&dir, &src, &plan, &WriteOptions::default()).unwrap();
    let bundle = Bundle::open(&dir).unwrap();
    let mut peaks = Vec::new();
    for rows in [4096usize, 16384] {
        let x = RunInput::Rows(common::values(4, rows * input as usize));
        let out = tmp.path().join(format!("y{rows}.safetensors"));
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let shape = run_to_file(&bundle, WeightPath::Fp16, &x, &out, false, None).unwrap();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        let size = std::fs::metadata(&out).unwrap().len();
        assert_eq!(size, shape.bytes);
        assert!(size as usize > rows * classes as usize * 4);
        eprintln!("run of {rows} rows: output {size} bytes, heap peak {peak} bytes");
        peaks.push((peak, size));
    }
    let ((small, _), (large, large_size)) = (peaks[0], peaks[1]);
    assert!(
        large < small + small / 4,
        "the heap grew with the output: {small} then {large} bytes"
    );
    assert!(
        (large as u64) < large_size / 3,
        "heap peak {large} bytes for an output of {large_size}"
    );

    // --top-k 5: the five largest logits of each row, largest first, and their indices,
    // equal to the full output's.
    let rows = 64usize;
    let x = RunInput::Rows(common::values(5, rows * input as usize));
    let full = ternary_bundle::run::run(&bundle, WeightPath::Ternary, &x).unwrap();
    let out = tmp.path().join("top.safetensors");
    run_to_file(&bundle, WeightPath::Ternary, &x, &out, false, Some(5)).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids: Vec<i64> = st
        .tensor("top_ids")
        .unwrap()
        .data()
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let values: Vec<f32> = st
        .tensor("top_logits")
        .unwrap()
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(st.tensor("top_ids").unwrap().shape(), [rows, 5]);
    for r in 0..rows {
        let row = &full.logits[r * classes as usize..(r + 1) * classes as usize];
        let mut order: Vec<usize> = (0..classes as usize).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        for j in 0..5 {
            assert_eq!(ids[r * 5 + j], order[j] as i64, "row {r}");
            assert_eq!(
                values[r * 5 + j].to_bits(),
                row[order[j]].to_bits(),
                "row {r}"
            );
        }
        assert_eq!(
            full.predictions[r], order[0],
            "row {r}: the prediction is the top logit"
        );
    }
    let e = run_to_file(
        &bundle,
        WeightPath::Ternary,
        &x,
        &tmp.path().join("k0.safetensors"),
        false,
        Some(0),
    )
    .unwrap_err();
    assert!(e.to_string().contains("--top-k 0"), "{e}");

    // An output larger than the free space of its file system: refused before any work, naming
    // the file and both sizes, and nothing is written.
    let st = rustix::fs::statvfs(tmp.path()).unwrap();
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let rows = (free / (classes * 4) + 1) as usize;
    let x = RunInput::Rows(vec![0.5; rows * input as usize]);
    let out = tmp.path().join("too-big.safetensors");
    let started = std::time::Instant::now();
    let e = run_to_file(&bundle, WeightPath::Fp16, &x, &out, false, None).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("too-big.safetensors") && msg.contains("free") && msg.contains("bytes"),
        "{msg}"
    );
    assert!(!out.exists());
    eprintln!(
        "an output of {rows} rows refused in {:.3} s: {msg}",
        started.elapsed().as_secs_f64()
    );
}
