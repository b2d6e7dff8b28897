//! `bundle export --format gguf` through the library: the TQ1_0 and TQ2_0 blocks against bytes
//! computed by hand from ggml's layout, the GGUF container read back by an independent parser
//! written here (header, metadata, tensor infos, alignment, sizes), every ternary tensor decoded
//! back and compared with the bundle's FP16 file (after undoing llama's RoPE permutation), the
//! refusals (rows or groups not a multiple of 256, an untied BitNet model, no tokenizer flag),
//! determinism, and that a failed export leaves nothing at the destination.
//! gguf-py's own reader, dequantizer and quantizer check the same files in
//! `scripts/gguf_check.py` (scripts/test.sh).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::decoder::{model_with, spec, spec256};
use half::f16;
use ternary_bundle::gguf::container::{pad, ALIGNMENT};
use ternary_bundle::gguf::export::{export_gguf, permuted_source_row, FloatType, GgufExport};
use ternary_bundle::gguf::ternary::{block_scale, pack_tq1_0, pack_tq2_0, TernaryType};
use ternary_bundle::model::decoder::{DecoderSpec, Family};
use ternary_bundle::read::checks;
use ternary_bundle::{
    write_bundle, Bundle, BundlePlan, Error, Granularity, QuantParams, WriteOptions,
};

// ---- blocks by hand ----

/// A block with trit `t` at each of `at`, zeros elsewhere.
fn block_with(at: &[(usize, i8)]) -> Vec<i8> {
    let mut b = vec![0i8; 256];
    for &(i, t) in at {
        b[i] = t;
    }
    b
}

fn alternating() -> Vec<i8> {
    (0..256).map(|i| if i % 2 == 0 { 1 } else { -1 }).collect()
}

#[test]
fn tq1_0_block_bytes_by_hand() {
    let one = f16::from_f32(1.0);
    // All +1: five codes 2 are 242 in base 3, ceil(242 × 256 / 243) = 255; qh holds four codes
    // 2 shifted one digit up, 240, ceil(240 × 256 / 243) = 253; d = 1.0 is 0x3C00.
    let b = pack_tq1_0(&[1; 256], one);
    assert!(b[..48].iter().all(|&x| x == 255));
    assert_eq!(&b[48..], &[253, 253, 253, 253, 0x00, 0x3C]);
    // All 0 (code 1): 121 -> 128; qh 40 × 3 = 120 -> 127; all -1 (code 0): 0.
    let b = pack_tq1_0(&[0; 256], f16::ZERO);
    assert!(b[..48].iter().all(|&x| x == 128));
    assert_eq!(&b[48..], &[127, 127, 127, 127, 0, 0]);
    assert!(pack_tq1_0(&[-1; 256], one)[..52].iter().all(|&x| x == 0));
    // Alternating +1, -1: byte j holds weights of j's parity (strides 32, 16 and 4 are even).
    let b = pack_tq1_0(&alternating(), one);
    for (j, &x) in b.iter().enumerate().take(48) {
        assert_eq!(x, if j % 2 == 0 { 255 } else { 0 }, "byte {j}");
    }
    assert_eq!(&b[48..52], &[253, 0, 253, 0]);
    // One trit each: weight 0 = +1 is byte 0's first digit, (2,1,1,1,1) = 202 -> 213; weight
    // 37 = -1 is byte 5's second digit, (1,0,1,1,1) = 94 -> 100; weight 200 = 160 + 8 + 16 × 2
    // is byte 40's third digit, (1,1,2,1,1) = 130 -> 137; weight 245 = 240 + 1 + 4 × 1 is
    // byte 49's second digit, (1,0,1,1) × 3 = 93 -> 98.
    let b = pack_tq1_0(
        &block_with(&[(0, 1), (37, -1), (200, 1), (245, -1)]),
        f16::from_f32(0.5),
    );
    let mut want = [128u8; 54];
    want[48..52].copy_from_slice(&[127; 4]);
    want[0] = 213;
    want[5] = 100;
    want[40] = 137;
    want[49] = 98;
    want[52..].copy_from_slice(&[0x00, 0x38]);
    assert_eq!(b, want);
}

#[test]
fn tq2_0_block_bytes_by_hand() {
    let one = f16::from_f32(1.0);
    // All +1: four codes 2 per byte, 0b10101010; all 0: 0b01010101; all -1: 0.
    let b = pack_tq2_0(&[1; 256], one);
    assert!(b[..64].iter().all(|&x| x == 0xAA));
    assert_eq!(&b[64..], &[0x00, 0x3C]);
    assert!(pack_tq2_0(&[0; 256], one)[..64].iter().all(|&x| x == 0x55));
    assert!(pack_tq2_0(&[-1; 256], one)[..64].iter().all(|&x| x == 0));
    // Alternating: byte j holds weights j, j+32, j+64, j+96 (of one group), all of j's parity.
    let b = pack_tq2_0(&alternating(), one);
    for (j, &x) in b.iter().enumerate().take(64) {
        assert_eq!(x, if j % 2 == 0 { 0xAA } else { 0 }, "byte {j}");
    }
    // Weight 0 = +1: byte 0 bits 0-1 = 2 (0x56); 37 = -1: byte 5 bits 2-3 = 0 (0x51); 200 = +1:
    // byte 32 + 8 bits 4-5 = 2 (0x65); 245 = -1: byte 32 + 21 bits 6-7 = 0 (0x15).
    let b = pack_tq2_0(
        &block_with(&[(0, 1), (37, -1), (200, 1), (245, -1)]),
        f16::from_f32(-2.0),
    );
    let mut want = [0x55u8; 66];
    want[0] = 0x56;
    want[5] = 0x51;
    want[40] = 0x65;
    want[53] = 0x15;
    want[64..].copy_from_slice(&[0x00, 0xC0]);
    assert_eq!(b, want);
}

#[test]
fn block_scale_is_the_blocks_absmax() {
    assert_eq!(block_scale(&[0; 256], 0.3), f16::ZERO);
    assert_eq!(
        block_scale(&block_with(&[(9, -1)]), 0.3),
        f16::from_f32(0.3)
    );
    assert_eq!(block_bytes(TernaryType::Tq1_0), 54);
    assert_eq!(block_bytes(TernaryType::Tq2_0), 66);
}

#[test]
fn rope_permutation_interleaves_the_halves_of_each_head() {
    // One head of 8 rows: output rows are source rows 0, 4, 1, 5, 2, 6, 3, 7.
    let rows: Vec<usize> = (0..8).map(|r| permuted_source_row(r, 8, 1)).collect();
    assert_eq!(rows, [0, 4, 1, 5, 2, 6, 3, 7]);
    // Two heads of 4: each head on its own.
    let rows: Vec<usize> = (0..8).map(|r| permuted_source_row(r, 8, 2)).collect();
    assert_eq!(rows, [0, 2, 1, 3, 4, 6, 5, 7]);
}

// ---- an independent reader of the container ----

#[derive(Debug, Clone, PartialEq)]
enum Kv {
    U32(u32),
    F32(f32),
    Str(String),
    Other,
}

#[derive(Debug)]
struct Info {
    ne: Vec<u64>,
    ty: u32,
    offset: u64,
}

#[derive(Debug)]
struct Parsed {
    version: u32,
    kvs: BTreeMap<String, Kv>,
    kv_order: Vec<String>,
    tensors: Vec<(String, Info)>,
    data_start: usize,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    fn value(&mut self, ty: u32) -> Kv {
        match ty {
            4 => Kv::U32(self.u32()),
            5 => {
                self.take(4);
                Kv::Other
            }
            6 => Kv::F32(f32::from_le_bytes(self.take(4).try_into().unwrap())),
            7 => {
                self.take(1);
                Kv::Other
            }
            8 => Kv::Str(self.string()),
            9 => {
                let (inner, n) = (self.u32(), self.u64());
                for _ in 0..n {
                    self.value(inner);
                }
                Kv::Other
            }
            other => panic!("value type {other} not expected"),
        }
    }
}

fn parse(bytes: &[u8]) -> Parsed {
    assert_eq!(&bytes[..4], b"GGUF");
    let mut c = Cursor { b: bytes, at: 4 };
    let version = c.u32();
    let (n_tensors, n_kv) = (c.u64(), c.u64());
    let mut kvs = BTreeMap::new();
    let mut kv_order = Vec::new();
    for _ in 0..n_kv {
        let key = c.string();
        let ty = c.u32();
        kv_order.push(key.clone());
        assert!(kvs.insert(key, c.value(ty)).is_none(), "duplicate key");
    }
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let name = c.string();
        let n_dims = c.u32();
        let ne = (0..n_dims).map(|_| c.u64()).collect();
        let ty = c.u32();
        let offset = c.u64();
        tensors.push((name, Info { ne, ty, offset }));
    }
    let data_start = pad(c.at as u64) as usize;
    assert!(bytes[c.at..data_start].iter().all(|&b| b == 0));
    Parsed {
        version,
        kvs,
        kv_order,
        tensors,
        data_start,
    }
}

/// Decodes one TQ1_0 or TQ2_0 block (ggml's dequantize_row_tq*_0) to f32.
fn decode_block(ty: u32, b: &[u8]) -> Vec<f32> {
    let mut codes = [0u8; 256];
    let d = match ty {
        34 => {
            let digit =
                |byte: u8, k: u32| ((u16::from(byte.wrapping_mul(3u8.pow(k))) * 3) >> 8) as u8;
            for j in 0..32 {
                for k in 0..5 {
                    codes[j + 32 * k] = digit(b[j], k as u32);
                }
            }
            for j in 0..16 {
                for k in 0..5 {
                    codes[160 + j + 16 * k] = digit(b[32 + j], k as u32);
                }
            }
            for j in 0..4 {
                for k in 0..4 {
                    codes[240 + j + 4 * k] = digit(b[48 + j], k as u32);
                }
            }
            f16::from_le_bytes([b[52], b[53]])
        }
        35 => {
            for (e, c) in codes.iter_mut().enumerate() {
                *c = (b[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            }
            f16::from_le_bytes([b[64], b[65]])
        }
        other => panic!("type {other}"),
    };
    codes
        .iter()
        .map(|&c| d.to_f32() * (f32::from(c) - 1.0))
        .collect()
}

// ---- bundles ----

fn bundle_of(tmp: &tempfile::TempDir, name: &str, s: &DecoderSpec, params: QuantParams) -> PathBuf {
    let dest = tmp.path().join(name);
    let plan = BundlePlan::of_decoder(s, params);
    // Row 0's first 256 weights of one down_proj far below the row's absmean: a block of zeros
    // (with channel or tensor scales), whose d is 0 as ggml's quantizer computes it.
    let source = model_with(s, |name, v| {
        if name == "model.layers.0.mlp.down_proj.weight" {
            v[..256].iter_mut().for_each(|x| *x *= 1e-3);
        }
    });
    write_bundle(&dest, &source, &plan, &WriteOptions::default()).unwrap();
    dest
}

fn options(ternary: TernaryType) -> GgufExport {
    GgufExport {
        ternary,
        float_type: FloatType::F32,
        no_tokenizer: true,
        context_length: 2048,
        allow_float_fallback: false,
        force: false,
    }
}

/// Bytes of one block, from the layouts of ggml-common.h (`block_tq1_0`, `block_tq2_0`).
fn block_bytes(ty: TernaryType) -> usize {
    match ty {
        TernaryType::Tq1_0 => 32 + 16 + 4 + 2,
        TernaryType::Tq2_0 => 64 + 2,
        TernaryType::I2S => unreachable!("I2_S has no blocks of its own scale"),
    }
}

fn gguf_name(name: &str) -> String {
    ternary_bundle::gguf::export::gguf_name(name).unwrap()
}

/// Reads back `file` and checks it against `bundle`: metadata, every tensor's dims, type,
/// offset and bytes (ternary decoded and compared with the FP16 file bit for bit, float
/// tensors with the stored F32 values). Returns the number of blocks whose d is 0.
fn check_file(bundle_dir: &Path, file: &Path, ty: TernaryType, s: &DecoderSpec) -> usize {
    let bytes = std::fs::read(file).unwrap();
    let p = parse(&bytes);
    assert_eq!(p.version, 3);
    let arch = s.family.name();
    assert_eq!(p.kv_order[0], "general.architecture");
    assert_eq!(p.kvs["general.architecture"], Kv::Str(arch.into()));
    assert_eq!(p.kvs["general.alignment"], Kv::U32(ALIGNMENT as u32));
    assert_eq!(p.kvs["general.file_type"], Kv::U32(ty.file_type()));
    assert_eq!(p.kvs["tokenizer.ggml.model"], Kv::Str("none".into()));
    let u = |k: &str| p.kvs[&format!("{arch}.{k}")].clone();
    assert_eq!(u("vocab_size"), Kv::U32(s.vocab_size as u32));
    assert_eq!(u("embedding_length"), Kv::U32(s.hidden_size as u32));
    assert_eq!(
        u("feed_forward_length"),
        Kv::U32(s.intermediate_size as u32)
    );
    assert_eq!(u("block_count"), Kv::U32(s.num_hidden_layers as u32));
    assert_eq!(
        u("attention.head_count"),
        Kv::U32(s.num_attention_heads as u32)
    );
    assert_eq!(
        u("attention.head_count_kv"),
        Kv::U32(s.num_key_value_heads as u32)
    );
    assert_eq!(u("rope.dimension_count"), Kv::U32(s.head_dim as u32));
    assert_eq!(u("context_length"), Kv::U32(2048));
    assert_eq!(u("rope.freq_base"), Kv::F32(s.rope_theta as f32));
    assert_eq!(
        u("attention.layer_norm_rms_epsilon"),
        Kv::F32(s.rms_norm_eps)
    );

    let bundle = Bundle::open(bundle_dir).unwrap();
    let names = s.tensors();
    assert_eq!(p.tensors.len(), names.len());
    let (mut end, mut zero_blocks) = (0u64, 0usize);
    for ((name, shape), (gname, info)) in names.iter().zip(&p.tensors) {
        assert_eq!(gname, &gguf_name(name));
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        assert_eq!(info.ne, ne, "{gname}");
        assert_eq!(info.offset % ALIGNMENT, 0, "{gname}");
        assert_eq!(info.offset, end, "{gname}: tensors follow each other");
        let at = p.data_start + info.offset as usize;
        let (rows, cols) = (shape[0], shape.iter().skip(1).product::<usize>().max(1));
        let permute = match (s.family, name.rsplit('.').nth(1)) {
            (Family::Llama, Some("q_proj")) => Some(s.num_attention_heads),
            (Family::Llama, Some("k_proj")) => Some(s.num_key_value_heads),
            _ => None,
        };
        let src = |r: usize| permute.map_or(r, |h| permuted_source_row(r, rows, h));
        let nbytes = if let Some(packed) = bundle.packed(name) {
            assert_eq!(info.ty, ty.ggml_type().id(), "{gname}");
            let fp16: Vec<u16> = bundle
                .fp16_bytes(name)
                .unwrap()
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let bb = block_bytes(ty);
            let per_row = packed.cols / 256 * bb;
            for r in 0..rows {
                for blk in 0..cols / 256 {
                    let o = at + r * per_row + blk * bb;
                    zero_blocks += usize::from(bytes[o + bb - 2..o + bb] == [0, 0]);
                    let got = decode_block(info.ty, &bytes[o..o + bb]);
                    for (i, g) in got.iter().enumerate() {
                        let want = f16::from_bits(fp16[src(r) * cols + blk * 256 + i]).to_f32();
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{gname} row {r} column {}",
                            blk * 256 + i
                        );
                    }
                }
            }
            (rows * per_row) as u64
        } else {
            assert_eq!(info.ty, 0, "{gname}: F32");
            let stored = ternary_bundle::model::reference::tensor_f32(
                &bundle,
                name,
                ternary_bundle::model::reference::WeightPath::Ternary,
            )
            .unwrap();
            for r in 0..rows.min(stored.len() / cols) {
                for c in 0..cols {
                    let o = at + 4 * (r * cols + c);
                    let got = f32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
                    assert_eq!(
                        got.to_bits(),
                        stored[src(r) * cols + c].to_bits(),
                        "{gname}"
                    );
                }
            }
            (stored.len() * 4) as u64
        };
        end = info.offset + pad(nbytes);
    }
    assert_eq!(bytes.len() as u64, p.data_start as u64 + end, "file size");
    zero_blocks
}

#[test]
fn both_types_both_families_decode_to_the_fp16_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, tied) in [
        (Family::Llama, true),
        (Family::Llama, false),
        (Family::Bitnet, true),
    ] {
        let s = spec256(family, tied);
        let dir = bundle_of(
            &tmp,
            &format!("{}-{tied}", family.name()),
            &s,
            QuantParams::default(),
        );
        let bundle = Bundle::open(&dir).unwrap();
        checks::check_all(&bundle).unwrap();
        for ty in [TernaryType::Tq1_0, TernaryType::Tq2_0] {
            let out = tmp
                .path()
                .join(format!("{}-{tied}-{}.gguf", family.name(), ty.name()));
            let summary = export_gguf(&bundle, &out, &options(ty)).unwrap();
            assert_eq!(summary.ternary_tensors, 14);
            assert_eq!(summary.bytes, std::fs::metadata(&out).unwrap().len());
            let bits = summary.ternary_bytes as f64 * 8.0 / summary.ternary_weights as f64;
            let want = block_bytes(ty) as f64 * 8.0 / 256.0;
            assert_eq!(bits, want);
            assert_eq!(
                summary.warnings.len(),
                usize::from(family == Family::Bitnet)
            );
            assert_eq!(check_file(&dir, &out, ty, &s), 1, "the one block of zeros");
        }
    }
}

#[test]
fn tensor_and_group_scales_of_whole_blocks_decode_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec256(Family::Llama, true);
    for (name, granularity) in [
        ("tensor", Granularity::Tensor),
        ("group256", Granularity::Group(256)),
        ("group512", Granularity::Group(512)),
    ] {
        let params = QuantParams {
            granularity,
            ..QuantParams::default()
        };
        let dir = bundle_of(&tmp, name, &s, params);
        let bundle = Bundle::open(&dir).unwrap();
        let out = tmp.path().join(format!("{name}.gguf"));
        export_gguf(&bundle, &out, &options(TernaryType::Tq2_0)).unwrap();
        check_file(&dir, &out, TernaryType::Tq2_0, &s);
    }
}

fn refusal(bundle: &Bundle, out: &Path, o: &GgufExport) -> String {
    let parent = out.parent().unwrap();
    let before = common::dir_entries(parent);
    let err = export_gguf(bundle, out, o).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(!out.exists());
    assert_eq!(
        common::dir_entries(parent),
        before,
        "nothing left beside --out"
    );
    err.to_string()
}

#[test]
fn rows_not_a_multiple_of_256_are_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec(Family::Llama, true); // hidden 24
    let dir = bundle_of(&tmp, "small", &s, QuantParams::default());
    let bundle = Bundle::open(&dir).unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let msg = refusal(
        &bundle,
        &out_dir.join("m.gguf"),
        &options(TernaryType::Tq1_0),
    );
    assert!(
        msg.contains("model.layers.0.self_attn.q_proj.weight"),
        "{msg}"
    );
    assert!(msg.contains("multiple of 256 columns"), "{msg}");
    assert!(msg.contains("found 24 columns"), "{msg}");
}

#[test]
fn groups_not_a_multiple_of_256_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec256(Family::Llama, true);
    let params = QuantParams {
        granularity: Granularity::Group(128),
        ..QuantParams::default()
    };
    let dir = bundle_of(&tmp, "g128", &s, params);
    let bundle = Bundle::open(&dir).unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let msg = refusal(
        &bundle,
        &out_dir.join("m.gguf"),
        &options(TernaryType::Tq2_0),
    );
    assert!(
        msg.contains("q_proj.weight") && msg.contains("group size 128"),
        "{msg}"
    );
}

#[test]
fn untied_bitnet_and_a_missing_tokenizer_flag_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let s = spec256(Family::Bitnet, false);
    let dir = bundle_of(&tmp, "bitnet-untied", &s, QuantParams::default());
    let bundle = Bundle::open(&dir).unwrap();
    let msg = refusal(
        &bundle,
        &out_dir.join("m.gguf"),
        &options(TernaryType::Tq1_0),
    );
    assert!(msg.contains("lm_head.weight"), "{msg}");

    let s = spec256(Family::Llama, true);
    let dir = bundle_of(&tmp, "llama", &s, QuantParams::default());
    let bundle = Bundle::open(&dir).unwrap();
    let o = GgufExport {
        no_tokenizer: false,
        ..options(TernaryType::Tq1_0)
    };
    let msg = refusal(&bundle, &out_dir.join("m.gguf"), &o);
    assert!(
        msg.contains("no tokenizer") && msg.contains("--no-tokenizer"),
        "{msg}"
    );
}

#[test]
fn exports_are_deterministic_and_an_existing_file_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec256(Family::Llama, false);
    let dir = bundle_of(&tmp, "llama", &s, QuantParams::default());
    let bundle = Bundle::open(&dir).unwrap();
    let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    let o = GgufExport {
        float_type: FloatType::F16,
        ..options(TernaryType::Tq1_0)
    };
    export_gguf(&bundle, &a, &o).unwrap();
    export_gguf(&bundle, &b, &o).unwrap();
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    // F16 float tensors: type 1.
    let p = parse(&bytes);
    let (_, norm) = p
        .tensors
        .iter()
        .find(|(n, _)| n == "output_norm.weight")
        .unwrap();
    assert_eq!(norm.ty, 1);

    let err = export_gguf(&bundle, &a, &options(TernaryType::Tq2_0)).unwrap_err();
    assert!(matches!(err, Error::DestinationExists { .. }), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), bytes, "untouched");
    let forced = GgufExport {
        force: true,
        ..options(TernaryType::Tq2_0)
    };
    export_gguf(&bundle, &a, &forced).unwrap();
    check_file(&dir, &a, TernaryType::Tq2_0, &s);
}

// ---- the command line ----

fn cli(args: &[&str]) -> std::process::Output {
    assert_cmd::Command::cargo_bin("bundle")
        .unwrap()
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_command_line_exports_and_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_of(
        &tmp,
        "bitnet",
        &spec256(Family::Bitnet, true),
        QuantParams::default(),
    );
    let d = dir.to_str().unwrap();
    let out = tmp.path().join("m.gguf");
    let o = out.to_str().unwrap();
    let base = ["export", d, "--format", "gguf", "--out", o];

    let r = cli(&[&base[..], &["--type", "tq2_0", "--no-tokenizer"]].concat());
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.contains("2.0625 bits per weight"), "{stdout}");
    assert!(String::from_utf8_lossy(&r.stderr).contains("relu²"));
    check_file(
        &dir,
        &out,
        TernaryType::Tq2_0,
        &spec256(Family::Bitnet, true),
    );
    std::fs::remove_file(&out).unwrap();

    for (args, says) in [
        (vec!["--no-tokenizer"], "--type"),
        (vec!["--type", "tq1_0"], "--no-tokenizer"),
        (
            vec!["--type", "tq1_0", "--no-tokenizer", "--dtype", "f32"],
            "--float-type",
        ),
    ] {
        let r = cli(&[&base[..], &args[..]].concat());
        assert_eq!(r.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&r.stderr).contains(says),
            "{args:?}"
        );
        assert!(!out.exists(), "{args:?}");
    }
    let st = tmp.path().join("m.safetensors");
    let r = cli(&[
        "export",
        d,
        "--out",
        st.to_str().unwrap(),
        "--type",
        "tq1_0",
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("are for --format gguf"));
    assert!(!st.exists());
}
