//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`), shared with the corpus replay test
//! (`tests/suite/fuzz_replay.rs`) so that every input found by the fuzzer is replayed on stable Rust.
//!
//! Each takes arbitrary bytes and must return normally: a typed error is fine, a panic, an
//! out-of-bounds read or an over-allocation is a bug.

use std::path::Path;

use crate::format::encoding::Encoding;
use crate::format::manifest::Manifest;
use crate::read::checks;
use crate::read::Bundle;

/// The manifest parser on arbitrary bytes.
pub fn manifest(data: &[u8]) {
    let _ = Manifest::parse(Path::new("fuzz/manifest.json"), data);
}

/// A model directory's `config.json` parser on arbitrary bytes, and the tensor list of every
/// config it accepts: each tensor's element count must be a number (the accepted sizes are
/// checked for overflow).
pub fn decoder_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = crate::model::decoder::DecoderSpec::from_hf_config(&text) {
        for (name, shape) in spec.tensors() {
            let elements = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            assert!(
                elements.is_some(),
                "{name} {shape:?}: accepted sizes overflow"
            );
        }
    }
}

/// Splits `data` into up to four length-prefixed parts (u32 little-endian length, then bytes);
/// the last part takes whatever remains.
pub fn split_parts(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 3 {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let n = (u32::from_le_bytes(*len) as usize).min(tail.len());
        parts.push(&tail[..n]);
        rest = &tail[n..];
    }
    parts.push(rest);
    parts
}

/// Joins parts in the format [`split_parts`] reads (for building seed inputs).
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

/// Opens the bundle whose manifest, ternary, fp16 and optional (non-empty) validation file are
/// split from `data` by [`split_parts`].
pub fn open_parts(data: &[u8]) -> crate::Result<Bundle> {
    let parts = split_parts(data);
    let get = |i: usize| parts.get(i).copied().unwrap_or_default().to_vec();
    let validation = parts.get(3).filter(|v| !v.is_empty()).map(|v| v.to_vec());
    Bundle::from_bytes(Path::new("fuzz"), parts[0], get(1), get(2), validation)
}

/// A whole bundle from memory ([`open_parts`]); when it opens, every data check runs too.
pub fn bundle(data: &[u8]) {
    if let Ok(b) = open_parts(data) {
        let _ = checks::check_all(&b);
        let _ = crate::read::inspect::inspect(&b);
    }
}

/// The trit codecs: validate and decode arbitrary bytes as rows, and round-trip arbitrary trits.
pub fn codecs(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let encoding = if head & 1 == 0 {
        Encoding::Trit5
    } else {
        Encoding::Trit2
    };
    let cols = (head >> 1) as usize + 1;
    let bpr = encoding.bytes_per_row(cols as u64) as usize;
    let mut trits = vec![0i8; cols];
    let mut floats = vec![0f32; cols];
    for row in rest.chunks(bpr) {
        let valid = encoding.validate_row(row, cols).is_ok();
        if row.len() == bpr {
            encoding
                .unpack_row(row, &mut trits)
                .expect("a row of bytes_per_row bytes unpacks");
            encoding
                .unpack_row_f32(row, &mut floats)
                .expect("a row of bytes_per_row bytes unpacks");
            let mut again = vec![0u8; bpr];
            encoding
                .pack_row(&trits, &mut again)
                .expect("unpacked trits pack");
            // Canonical encoding: a row is valid exactly when re-packing reproduces it.
            assert_eq!(
                valid,
                again == row,
                "validate_row disagrees with re-packing"
            );
        } else {
            assert!(!valid, "a short row cannot be valid");
        }
    }
    // Round trip of arbitrary trits.
    let trits: Vec<i8> = rest.iter().map(|&b| (b % 3) as i8 - 1).collect();
    let mut packed = vec![0u8; encoding.bytes_per_row(trits.len() as u64) as usize];
    encoding.pack_row(&trits, &mut packed).expect("trits pack");
    encoding
        .validate_row(&packed, trits.len())
        .expect("packed trits are canonical");
    let mut back = vec![0i8; trits.len()];
    encoding
        .unpack_row(&packed, &mut back)
        .expect("packed trits unpack");
    assert_eq!(back, trits, "round trip");
}

/// Reads a fuzz input front to back; past its end every read gives zero, so every input,
/// however short, describes a complete model.
struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A value for a weight or a scale: mostly a small multiple of 1/32, with the codes from
    /// 244 up giving the edge cases (signed zero, NaN, infinities, subnormals, the F16 limits).
    /// Past the end of the input, a deterministic pseudo-random fill (`position`) instead of
    /// zeros, so that short inputs still have informative weights.
    fn value(&mut self, position: usize) -> f32 {
        let code = match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => (position.wrapping_mul(2_654_435_761) >> 7) as u8 % 240,
        };
        const SPECIAL: [f32; 12] = [
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
            6e-8,
            65504.0,
            65520.0,
            1e30,
            -1e30,
            f32::MIN_POSITIVE,
            0.5,
        ];
        match code.checked_sub(244) {
            Some(i) => SPECIAL[i as usize],
            None => (code as f32 - 122.0) / 32.0,
        }
    }
}

/// The scratch bundle of [`verify_numeric`], removed when dropped (also on a panic, so that a
/// crashing input does not poison the next run).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Structure-aware: `data` describes a small model (encoding, granularity, group size,
/// activation, 1–3 layers of widths 1–12 with or without bias and RMSNorm, quantized or not,
/// epsilon, threshold, optional fixed scales and validation set, then the values), which the
/// real writer turns into a bundle under `scratch`; the rest of `data` is a list of edits
/// (file, offset, byte) applied to the data buffers of the two safetensors files, packed
/// trits, scales and F16 values alike. Then the whole of `bundle verify` runs on it.
///
/// Two properties are asserted, not just the absence of panics: a bundle the writer produced
/// passes every integrity check (manifest to dequantization), and a bundle with any byte
/// changed fails the checksums check.
///
/// Returns `None` when the writer refused the model (a typed error), otherwise whether any
/// byte was changed before verify ran.
pub fn verify_numeric(scratch: &Path, data: &[u8]) -> Option<bool> {
    use crate::verify::{verify, VerifyOptions};
    use crate::write::bundle::write_bundle;

    let mut c = Cursor { data };
    let flags = c.byte();
    let (plan, shapes) = fuzzed_plan(&mut c, flags);
    let (source, options) = fuzzed_values(&mut c, flags, &plan, &shapes);
    let dir = Scratch(scratch.join("bundle"));
    let _ = std::fs::remove_dir_all(&dir.0);
    write_bundle(&dir.0, &source, &plan, &options).ok()?;
    let changed = apply_edits(&dir.0, c.data);
    let report = verify(
        &dir.0,
        &VerifyOptions {
            samples: 8,
            ..VerifyOptions::default()
        },
    );
    assert_integrity(&report, changed);
    Some(changed)
}

/// A tensor of the fuzzed model: name, shape, quantized.
type FuzzedTensor = (String, Vec<u64>, bool);

/// The settings and the model (1 to 3 layers of widths 1 to 12) the input describes.
fn fuzzed_plan(
    c: &mut Cursor<'_>,
    flags: u8,
) -> (crate::write::plan::BundlePlan, Vec<FuzzedTensor>) {
    use crate::format::activation::Activation;
    use crate::format::manifest::{LayerSpec, ModelSpec, RmsNormSpec};
    use crate::format::quantization::{Granularity, QuantParams};

    let group = 1 + u64::from(c.byte() % 16);
    let params = QuantParams {
        encoding: if flags & 1 == 0 {
            Encoding::Trit5
        } else {
            Encoding::Trit2
        },
        granularity: match (flags >> 1) & 3 {
            0 => Granularity::Tensor,
            1 => Granularity::Channel,
            _ => Granularity::Group(group),
        },
        epsilon: [1e-5, 1e-3, 0.5, 1e-30][usize::from(c.byte() % 4)],
        sparsity_threshold: [0.5, 0.0, 0.25, 0.999][usize::from(c.byte() % 4)],
    };
    let activation = Activation::ALL[usize::from(flags >> 5) % Activation::ALL.len()];
    let input_dim = 1 + u64::from(c.byte() % 12);
    let layer_count = 1 + c.byte() % 3;
    let mut layers = Vec::new();
    let mut shapes: Vec<FuzzedTensor> = Vec::new();
    let mut width = input_dim;
    for i in 0..layer_count {
        let out = 1 + u64::from(c.byte() % 12);
        let layer_flags = c.byte();
        let name = format!("l{i}");
        let weight = format!("{name}.weight");
        shapes.push((weight.clone(), vec![out, width], layer_flags & 4 == 0));
        let bias = (layer_flags & 1 != 0).then(|| format!("{name}.bias"));
        if let Some(b) = &bias {
            shapes.push((b.clone(), vec![out], false));
        }
        let rmsnorm = (layer_flags & 2 != 0).then(|| RmsNormSpec {
            weight: format!("{name}.norm"),
            eps: 1e-6,
        });
        if let Some(n) = &rmsnorm {
            shapes.push((n.weight.clone(), vec![width], false));
        }
        let last = i + 1 == layer_count;
        layers.push(LayerSpec {
            name,
            weight,
            bias,
            in_features: width,
            out_features: out,
            activation: if last { "identity" } else { activation.name() }.into(),
            rmsnorm,
        });
        width = out;
    }
    let quantize = shapes.iter().filter(|s| s.2).map(|s| s.0.clone()).collect();
    let plan = crate::write::plan::BundlePlan {
        model: ModelSpec {
            input_dim,
            layers,
            decoder: None,
        },
        params,
        quantize,
        given: None,
    };
    (plan, shapes)
}

/// The tensors' values, and optionally fixed scales and a validation set, from the input.
fn fuzzed_values(
    c: &mut Cursor<'_>,
    flags: u8,
    plan: &crate::write::plan::BundlePlan,
    shapes: &[FuzzedTensor],
) -> (
    crate::source::MemorySource,
    crate::write::bundle::WriteOptions,
) {
    use crate::source::{MemorySource, ValidationSet};
    use crate::write::bundle::WriteOptions;

    let mut source = MemorySource::new("fuzz.safetensors");
    let mut position = 0;
    for (name, shape, _) in shapes {
        let n = shape.iter().product::<u64>() as usize;
        let values = (0..n).map(|k| c.value(position + k)).collect();
        position += n;
        // The shape and the value count agree by construction.
        let _ = source.push(name.clone(), shape.clone(), values);
    }
    let mut options = WriteOptions::default();
    if flags & 16 != 0 {
        for (name, shape, _) in shapes.iter().filter(|s| s.2) {
            let n: u64 = plan
                .params
                .granularity
                .scale_shape(shape[0], shape[1])
                .iter()
                .product();
            let scales = (0..n as usize)
                .map(|k| c.value(position + k).abs())
                .collect();
            position += n as usize;
            options.fixed_scales.insert(name.clone(), scales);
        }
    }
    if flags & 8 != 0 {
        let n = 1 + usize::from(c.byte() % 4);
        let d = plan.model.input_dim as usize;
        options.validation = Some(ValidationSet {
            input_ids: None,
            origin: "fuzz-validation.safetensors".into(),
            inputs: (0..n * d).map(|k| c.value(position + k)).collect(),
            labels: (0..n).map(|_| i64::from(c.byte() % 14)).collect(),
            difficulty: None,
        });
    }
    (source, options)
}

/// Applies the rest of the input as edits, 4 bytes each (file, offset low, offset high, byte),
/// within the data buffers of the bundle in `dir`; returns whether a byte changed.
fn apply_edits(dir: &Path, edits: &[u8]) -> bool {
    let mut changed = false;
    for name in ["ternary.safetensors", "fp16.safetensors"] {
        let path = dir.join(name);
        let Ok(mut bytes) = std::fs::read(&path) else {
            continue;
        };
        let Some(start) = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(|b| u64::from_le_bytes(b) as usize + 8)
        else {
            continue;
        };
        let before = bytes.clone();
        for edit in edits.chunks_exact(4) {
            if (edit[0] & 1 == 0) == (name == "ternary.safetensors") && bytes.len() > start {
                let at = start
                    + usize::from(u16::from_le_bytes([edit[1], edit[2]])) % (bytes.len() - start);
                bytes[at] = edit[3];
            }
        }
        if bytes != before && std::fs::write(&path, &bytes).is_ok() {
            changed = true;
        }
    }
    changed
}

/// The properties: an edited bundle fails checksums; the writer's own bundle passes every
/// integrity check.
fn assert_integrity(report: &crate::verify::VerifyReport, changed: bool) {
    use crate::verify::{Check, Status};
    let status = |check: Check| report.check(check).map(|r| (r.status, r.detail.clone()));
    if changed {
        let (s, detail) = status(Check::Checksums).unwrap_or((Status::Skip, String::new()));
        assert_eq!(
            s,
            Status::Fail,
            "an edited bundle passed checksums: {detail}"
        );
    } else {
        for &check in Check::ALL.iter().filter(|c| c.is_integrity()) {
            let (s, detail) = status(check).unwrap_or((Status::Skip, String::new()));
            assert_eq!(
                s,
                Status::Pass,
                "the writer produced a bundle failing {check}: {detail}"
            );
        }
    }
}

/// The GGUF reader (rules 8.4, 8.5) on arbitrary bytes. When the header parses, every tensor's
/// data lie within `data` (the reader's promise, asserted by slicing) and have the size of its
/// type, and every ternary tensor's blocks are decoded. When the file names an architecture,
/// the bytes also go to a scratch file that the import opens as `bundle create --from` does
/// (`GgufModel`): its granularity, record and tokenizer, and every tensor's given trits and
/// values, whose counts must match the tensor's shape.
pub fn gguf(data: &[u8]) {
    use crate::gguf::import::{tokenizer_assets, GgufModel};
    use crate::gguf::read::Header;
    use crate::gguf::ternary::{unpack_i2s, unpack_tq1_0, unpack_tq2_0};
    use crate::gguf::types::{GgmlType, I2S_TRAILER, TQ_BLOCK};
    use crate::source::TensorSource;

    let Ok(h) = Header::parse(Path::new("fuzz.gguf"), data) else {
        return;
    };
    for t in &h.tensors {
        let start = (h.data_start + t.offset) as usize;
        let bytes = &data[start..start + t.nbytes as usize];
        let n = t.elements();
        let size = match t.ggml_type {
            GgmlType::F32 => n * 4,
            GgmlType::F16 | GgmlType::Bf16 => n * 2,
            GgmlType::Tq1_0 => n / TQ_BLOCK * 54,
            GgmlType::Tq2_0 => n / TQ_BLOCK * 66,
            GgmlType::I2S => n / 4 + I2S_TRAILER,
        };
        assert_eq!(t.nbytes, size, "{} {:?} {:?}", t.name, t.ggml_type, t.ne);
        match t.ggml_type {
            GgmlType::Tq1_0 => bytes.chunks_exact(54).for_each(|b| {
                let _ = unpack_tq1_0(b);
            }),
            GgmlType::Tq2_0 => bytes.chunks_exact(66).for_each(|b| {
                let _ = unpack_tq2_0(b);
            }),
            GgmlType::I2S => {
                let _ = unpack_i2s(bytes, n as usize);
            }
            _ => {}
        }
    }
    if h.get("general.architecture").is_none() {
        return;
    }

    /// The scratch file, removed when dropped (also on a panic).
    struct ScratchFile(std::path::PathBuf);
    impl Drop for ScratchFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    // On tmpfs when there is one; one file per process and thread (the replay test runs
    // targets in parallel).
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let file = ScratchFile(dir.join(format!(
        "ternary-bundle-fuzz-gguf-{}-{:?}.gguf",
        std::process::id(),
        std::thread::current().id()
    )));
    if std::fs::write(&file.0, data).is_err() {
        return;
    }
    let Ok(model) = GgufModel::open(&file.0) else {
        return;
    };
    let _ = model.granularity();
    let _ = model.record();
    let _ = tokenizer_assets(&model, &mut Vec::new());
    let quantized = model.quantized();
    for t in model.tensors() {
        let n: u64 = t.shape.iter().product();
        if quantized.contains(&t.name) {
            // What load_f32 gives for it, without decoding the blocks twice.
            if let Ok(Some(g)) = model.given(&t.name) {
                assert_eq!(g.trits.len() as u64, n, "{}: trits", t.name);
                assert!(g.trits.iter().all(|x| (-1..=1).contains(x)), "{}", t.name);
                let cols = t.shape[1..].iter().product::<u64>();
                if let Ok(values) = g.values(t.shape[0], cols) {
                    assert_eq!(values.len() as u64, n, "{}: values", t.name);
                }
            }
        } else if let Ok(values) = model.load_f32(&t.name) {
            assert_eq!(values.len() as u64, n, "{}: values", t.name);
        }
    }
}

/// `model.sig` (rule 9.1) and the statement it signs (rule 9.2) on arbitrary bytes. A signature
/// file that parses re-serializes ([`SignatureFile::to_bytes`]) to bytes that parse to the
/// same value; its payload then goes to the statement parser. The bytes themselves go to the
/// statement parser too, so that the fuzzer reaches it without having to find valid base64 of
/// valid JSON first. Every statement that parses is checked: its names are relative paths
/// inside the directory ([`valid_name`]), listed once, its digests 64 lowercase hex digits, and
/// it writes ([`Statement::to_payload`]) a payload that parses back to the same statement and
/// writes the same bytes again.
///
/// Returns the statement of the signature file's payload, when both parsed.
///
/// [`SignatureFile::to_bytes`]: crate::signing::envelope::SignatureFile::to_bytes
/// [`valid_name`]: crate::signing::envelope::valid_name
/// [`Statement::to_payload`]: crate::signing::envelope::Statement::to_payload
pub fn signature(data: &[u8]) -> Option<crate::signing::envelope::Statement> {
    use crate::signing::envelope::{SignatureFile, Statement};

    let path = Path::new("fuzz/model.sig");
    let _ = Statement::parse(path, data).map(|s| check_statement(path, &s));
    let file = SignatureFile::parse(path, data).ok()?;
    let bytes = file.to_bytes();
    let again = SignatureFile::parse(path, &bytes)
        .unwrap_or_else(|e| panic!("a parsed signature file re-serializes to an invalid one: {e}"));
    assert_eq!(again, file, "signature file round trip");
    assert_eq!(again.to_bytes(), bytes, "signature file bytes round trip");
    let statement = Statement::parse(path, &file.payload).ok()?;
    check_statement(path, &statement);
    Some(statement)
}

/// The properties of a statement that parsed (see [`signature`]).
fn check_statement(path: &Path, s: &crate::signing::envelope::Statement) {
    use crate::signing::envelope::{subject_digest, valid_name, Statement, MAX_RESOURCES};
    use std::collections::BTreeSet;

    assert!(s.resources.len() <= MAX_RESOURCES, "too many resources");
    for p in &s.ignore_paths {
        assert!(valid_name(p), "ignore path {p:?} accepted");
    }
    let mut names = BTreeSet::new();
    for r in &s.resources {
        assert!(valid_name(&r.name), "resource name {:?} accepted", r.name);
        assert!(names.insert(r.name.as_str()), "{:?} listed twice", r.name);
        assert!(
            r.digest.len() == 64
                && r.digest
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "digest {:?} accepted",
            r.digest
        );
    }
    assert!(subject_digest(&s.resources).is_some());
    let payload = s.to_payload();
    let back = Statement::parse(path, &payload)
        .unwrap_or_else(|e| panic!("a parsed statement writes an invalid payload: {e}"));
    assert_eq!(&back, s, "statement round trip");
    assert_eq!(back.to_payload(), payload, "statement payload round trip");
}
