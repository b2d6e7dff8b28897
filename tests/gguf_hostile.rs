//! Hostile GGUF input (spec section 18.6, rules 8.4 to 8.6).
//!
//! The reader (`gguf::read`): every malformed header, key-value, tensor table or data range
//! is refused with a clean error naming the rule and, where there is one, the key or tensor,
//! in bounded time and memory (a counting allocator measures the peak heap of each parse).
//!
//! The import (`bundle create --from FILE.gguf`): files derived from valid exports whose
//! blocks, scales, keys, hyperparameters or tensors do not make the model are refused with
//! exit code 1, a message naming the file and the tensor or key, and nothing left at `--out`
//! or beside it.
//!
//! The last section holds what the import does not yet do (each test fails until it does).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::decoder::{model_with, spec};
use half::f16;
use ternary_bundle::gguf::container::{file_bytes, pad, Array, TensorInfo, Value};
use ternary_bundle::gguf::export::{
    export_gguf, scale_key, FloatType, GgufExport, GRANULARITY_KEY, GROUP_SIZE_KEY,
    SCALE_KEY_PREFIX,
};
use ternary_bundle::gguf::read::{GgufFile, Header, MAX_ARRAY_ELEMENTS, MAX_KVS, MAX_TENSORS};
use ternary_bundle::gguf::ternary::TernaryType;
use ternary_bundle::gguf::ternary::{pack_i2s, pack_tq1_0, pack_tq2_0, unpack_tq1_0, unpack_tq2_0};
use ternary_bundle::gguf::types::type_name;
use ternary_bundle::model::decoder::{DecoderSpec, Family};
use ternary_bundle::WriteOptions;
use ternary_bundle::{write_bundle, Bundle, BundlePlan, Granularity, QuantParams, Rule};

// ---- a counting allocator: the heap a parse takes ----

/// Counts, per thread, the bytes live on the heap and their peak, so that a test bounds what
/// one parse allocates (the other test threads do not disturb its count).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counting touches only
// const-initialized thread-locals without destructors (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`: its result, the most heap it held at once (bytes, on this thread), its time.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let started = Instant::now();
    let out = f();
    let elapsed = started.elapsed();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize, elapsed)
}

// ---- the reader on bytes ----

const HOSTILE: &str = "hostile.gguf";

/// The most a refusal may take: the parse of a small file is microseconds; this leaves room
/// for a loaded machine, not for work proportional to a count the file claims.
const FAST: Duration = Duration::from_millis(250);

/// `bytes` must be refused by the reader: a rule violation naming the file, within [`FAST`]
/// and 64 KiB + 4 × the file's size of heap. The rule and the message.
fn refused(bytes: &[u8]) -> (Rule, String) {
    let (r, peak, elapsed) = measured(|| Header::parse(Path::new(HOSTILE), bytes));
    let e = r.expect_err("a hostile file was accepted");
    let msg = e.to_string();
    let rule = e
        .rule()
        .unwrap_or_else(|| panic!("not a rule violation: {msg}"));
    assert!(
        msg.starts_with(HOSTILE),
        "the message names the file: {msg}"
    );
    assert!(
        peak <= 65_536 + 4 * bytes.len(),
        "{peak} bytes of heap to refuse a file of {} bytes: {msg}",
        bytes.len()
    );
    assert!(elapsed < FAST, "{elapsed:?} to refuse: {msg}");
    (rule, msg)
}

/// [`refused`] with rule `rule` and a message containing each of `says`.
fn refused_with(bytes: &[u8], rule: Rule, says: &[&str]) -> String {
    let (got, msg) = refused(bytes);
    assert_eq!(got, rule, "{msg}");
    for s in says {
        assert!(msg.contains(s), "expected {s:?} in: {msg}");
    }
    msg
}

/// A GGUF file written field by field, so that any field can hold anything.
struct Raw(Vec<u8>);

impl Raw {
    /// Magic, version 3 and the two counts.
    fn new(n_tensors: u64, n_kvs: u64) -> Raw {
        Raw(Vec::new())
            .bytes(b"GGUF")
            .u32(3)
            .u64(n_tensors)
            .u64(n_kvs)
    }

    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }

    fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }

    fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }

    /// A length-prefixed string of raw bytes.
    fn str(self, s: &[u8]) -> Raw {
        self.u64(s.len() as u64).bytes(s)
    }

    /// A key-value: key, value type, then `payload` as it is.
    fn kv(self, key: &[u8], ty: u32, payload: &[u8]) -> Raw {
        self.str(key).u32(ty).bytes(payload)
    }

    /// A tensor info.
    fn info(self, name: &[u8], ne: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(ne.len() as u32);
        for &d in ne {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }

    /// Padded to the alignment (32), then `data` zero bytes.
    fn data(self, data: usize) -> Vec<u8> {
        let mut b = self.0;
        b.resize(pad(b.len() as u64) as usize + data, 0);
        b
    }

    /// As it is (no padding, no data).
    fn done(self) -> Vec<u8> {
        self.0
    }
}

/// A valid file from the writer: a key of every value type (arrays of every element type) and
/// a tensor of every type the reader takes, with valid blocks.
fn written_file() -> Vec<u8> {
    let kvs: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str("llama".into())),
        ("t.u8".into(), Value::U8(1)),
        ("t.i8".into(), Value::I8(-1)),
        ("t.u16".into(), Value::U16(2)),
        ("t.i16".into(), Value::I16(-2)),
        ("t.u32".into(), Value::U32(3)),
        ("t.i32".into(), Value::I32(-3)),
        ("t.f32".into(), Value::F32(0.5)),
        ("t.bool".into(), Value::Bool(true)),
        ("t.u64".into(), Value::U64(1 << 40)),
        ("t.i64".into(), Value::I64(-(1 << 40))),
        ("t.f64".into(), Value::F64(0.25)),
        ("a.u8".into(), Value::Array(Array::U8(vec![1, 2]))),
        ("a.i8".into(), Value::Array(Array::I8(vec![-1]))),
        ("a.u16".into(), Value::Array(Array::U16(vec![7]))),
        ("a.i16".into(), Value::Array(Array::I16(vec![-7]))),
        ("a.u32".into(), Value::Array(Array::U32(vec![9, 10]))),
        ("a.i32".into(), Value::Array(Array::I32(vec![-9]))),
        ("a.f32".into(), Value::Array(Array::F32(vec![1.5, -2.0]))),
        (
            "a.bool".into(),
            Value::Array(Array::Bool(vec![true, false])),
        ),
        (
            "a.str".into(),
            Value::Array(Array::Str(vec!["x".into(), "".into(), "yz".into()])),
        ),
        ("a.u64".into(), Value::Array(Array::U64(vec![u64::MAX]))),
        ("a.i64".into(), Value::Array(Array::I64(vec![i64::MIN]))),
        ("a.f64".into(), Value::Array(Array::F64(vec![]))),
    ];
    let trits: Vec<i8> = (0..256).map(|i| (i % 3) as i8 - 1).collect();
    let tq1 = pack_tq1_0(&trits, f16::from_f32(0.5)).to_vec();
    let tq2 = [pack_tq2_0(&trits, f16::from_f32(0.25)); 2].concat();
    let i2s = pack_i2s(&trits[..128], 0.125);
    let tensors: Vec<(TensorInfo, Vec<u8>)> = vec![
        (TensorInfo::new("f32", &[3], 0, 12), vec![1; 12]),
        (TensorInfo::new("f16", &[2, 2], 1, 8), vec![2; 8]),
        (TensorInfo::new("bf16", &[5], 30, 10), vec![3; 10]),
        (TensorInfo::new("tq1", &[256, 1], 34, 54), tq1),
        (TensorInfo::new("tq2", &[256, 2], 35, 132), tq2),
        (TensorInfo::new("i2s", &[128, 1], 36, 64), i2s),
    ];
    assemble(&Parts { kvs, tensors })
}

#[test]
fn the_written_file_parses_and_every_prefix_of_it_is_refused() {
    let good = written_file();
    let h = Header::parse(Path::new("good.gguf"), &good).unwrap();
    assert_eq!(h.tensors.len(), 6);
    assert_eq!(h.kvs.len(), 24);
    let last = h.tensors.last().unwrap();
    let end = (h.data_start + last.offset + last.nbytes) as usize;
    // Every cut before the end of the last tensor's data: a clean container error; once the
    // header is whole, naming the tensor whose data are cut.
    for cut in 0..end {
        let (rule, msg) = refused(&good[..cut]);
        assert_eq!(rule, Rule::GgufContainer, "cut at {cut}: {msg}");
        if cut >= h.data_start as usize {
            assert!(msg.contains("tensor \""), "cut at {cut}: {msg}");
        }
    }
}

#[test]
fn every_prefix_of_an_exported_file_is_refused() {
    let b = bases();
    for (name, good) in [("fallback", &b.fallback_tq2), ("i2s", &b.bitnet_i2s)] {
        let h = Header::parse(Path::new("good.gguf"), good).unwrap();
        let last = h.tensors.iter().max_by_key(|t| t.offset).unwrap();
        let end = (h.data_start + last.offset + last.nbytes) as usize;
        let started = Instant::now();
        for cut in 0..end {
            let (rule, msg) = refused(&good[..cut]);
            assert_eq!(rule, Rule::GgufContainer, "{name}: cut at {cut}: {msg}");
            if cut >= h.data_start as usize {
                assert!(msg.contains("tensor \""), "{name}: cut at {cut}: {msg}");
            }
        }
        eprintln!("{name}: {end} prefixes refused in {:?}", started.elapsed());
    }
    // The same through a file (the memory map): an empty file, a cut magic, a cut header, cut
    // data.
    let tmp = tempfile::tempdir().unwrap();
    let good = &b.fallback_tq2;
    let h = Header::parse(Path::new("good.gguf"), good).unwrap();
    for cut in [0, 3, 30, h.data_start as usize - 1, good.len() - 33] {
        let path = tmp.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&path, &good[..cut]).unwrap();
        let e = GgufFile::open(&path).unwrap_err();
        assert_eq!(e.rule(), Some(Rule::GgufContainer), "cut at {cut}: {e}");
        assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
    }
}

#[test]
fn tensor_data_past_the_end_of_the_file_are_refused() {
    // One F32 tensor of 4 values (16 bytes) at `offset`, with `data` bytes after the header.
    let file =
        |ne: &[u64], offset: u64, data: usize| Raw::new(1, 0).info(b"w", ne, 0, offset).data(data);
    Header::parse(Path::new("ok.gguf"), &file(&[4], 0, 16)).unwrap();
    for (ne, offset, data, why) in [
        (&[4u64][..], 0, 15, "one byte short"),
        (&[4], 32, 16, "offset past the data"),
        (&[4], 1 << 40, 64, "offset 2^40"),
        (&[4], u64::MAX - 31, 64, "offset + size overflows"),
        (&[1 << 30], 0, 64, "4 GiB of data claimed"),
        (&[1 << 20, 1 << 20], 0, 64, "2^40 values claimed"),
    ] {
        let msg = refused_with(
            &file(ne, offset, data),
            Rule::GgufContainer,
            &["tensor \"w\""],
        );
        assert!(msg.contains("past the end"), "{why}: {msg}");
    }
    // No data section at all, with a tensor declared.
    refused_with(
        &Raw::new(1, 0).info(b"w", &[4], 0, 0).done(),
        Rule::GgufContainer,
        &["the data section"],
    );
}

#[test]
fn ternary_rows_that_blocks_do_not_divide_are_refused() {
    for (ty, ne, says) in [
        (34u32, &[96u64, 2][..], "256"),
        (34, &[384, 1], "256"),
        (35, &[300, 1], "256"),
        (35, &[128, 4], "256"),
        (36, &[64, 4], "128"),
        (36, &[200, 1], "128"),
        // Not a matrix.
        (34, &[256], "matrix"),
        (35, &[256, 1, 1], "matrix"),
        (36, &[128, 2, 2, 2], "matrix"),
    ] {
        let bytes = Raw::new(1, 0)
            .info(b"blk.0.attn_q.weight", ne, ty, 0)
            .data(4096);
        refused_with(
            &bytes,
            Rule::GgufTensor,
            &["tensor \"blk.0.attn_q.weight\"", type_name(ty), says],
        );
    }
}

#[test]
fn a_billion_tensors_or_keys_fail_fast_without_allocating() {
    for (n_tensors, n_kvs, says) in [
        (1_000_000_000u64, 0u64, "tensors"),
        (0, 1_000_000_000, "key-values"),
        (u64::MAX, u64::MAX, "tensors"),
        (MAX_TENSORS + 1, 0, "tensors"),
        (0, MAX_KVS + 1, "key-values"),
    ] {
        let bytes = Raw::new(n_tensors, n_kvs).data(64);
        let started = Instant::now();
        refused_with(
            &bytes,
            Rule::GgufContainer,
            &[says, &n_tensors.max(n_kvs).to_string()],
        );
        eprintln!(
            "{n_tensors} tensors, {n_kvs} keys: refused in {:?}",
            started.elapsed()
        );
    }
    // As many as the limits allow, in a file of 24 bytes: refused at the first item that is not
    // there, having allocated nothing in proportion to the count.
    for (n_tensors, n_kvs) in [(MAX_TENSORS, 0), (0, MAX_KVS), (MAX_TENSORS, MAX_KVS)] {
        let bytes = Raw::new(n_tensors, n_kvs).done();
        refused_with(&bytes, Rule::GgufContainer, &["bytes left"]);
    }
}

#[test]
fn strings_longer_than_the_file_are_refused() {
    // A key's length: past the key limit, and within it but past the file.
    refused_with(
        &Raw::new(0, 1).u64(1 << 60).data(64),
        Rule::GgufContainer,
        &[
            "a key of at most 65535 bytes",
            "a length of 1152921504606846976",
        ],
    );
    refused_with(
        &Raw::new(0, 1).u64(60_000).data(64),
        Rule::GgufContainer,
        &["60000 bytes of a key", "bytes left"],
    );
    // A string value: named by its key.
    for len in [1u64 << 40, u64::MAX, 100] {
        let bytes = Raw::new(0, 1)
            .kv(b"general.name", 8, &len.to_le_bytes())
            .bytes(b"abc")
            .data(0);
        refused_with(
            &bytes,
            Rule::GgufContainer,
            &["key \"general.name\"", "bytes left"],
        );
    }
    // A string in an array.
    let payload = [
        &8u32.to_le_bytes()[..],
        &2u64.to_le_bytes(),
        &1u64.to_le_bytes(),
        b"a",
        &(1u64 << 50).to_le_bytes(),
    ]
    .concat();
    refused_with(
        &Raw::new(0, 1)
            .kv(b"tokenizer.ggml.tokens", 9, &payload)
            .data(32),
        Rule::GgufContainer,
        &["key \"tokenizer.ggml.tokens\"", "bytes left"],
    );
    // A tensor name: past ggml's limit, and within it but past the file.
    refused_with(
        &Raw::new(1, 0).u64(1 << 62).data(64),
        Rule::GgufContainer,
        &["the name of tensor 0 of at most 63 bytes"],
    );
    refused_with(
        &Raw::new(1, 0).u64(63).bytes(b"abc").done(),
        Rule::GgufContainer,
        &["the name of tensor 0", "bytes left"],
    );
}

/// An array value of element type `ty` claiming `n` elements, then `after` bytes.
fn array_file(key: &[u8], ty: u32, n: u64, after: usize) -> Vec<u8> {
    let payload = [ty.to_le_bytes().to_vec(), n.to_le_bytes().to_vec()].concat();
    Raw::new(0, 1).kv(key, 9, &payload).data(after)
}

#[test]
fn huge_arrays_are_refused_before_allocating() {
    // 10^12 elements of every element type, in a file of about 100 bytes: over the limit on
    // all elements, refused before anything is read or allocated, naming the key.
    for ty in [0u32, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12] {
        refused_with(
            &array_file(b"tokenizer.ggml.scores", ty, 1_000_000_000_000, 64),
            Rule::GgufContainer,
            &[
                "key \"tokenizer.ggml.scores\"",
                "1000000000000",
                &MAX_ARRAY_ELEMENTS.to_string(),
            ],
        );
    }
    // Within the limit, but more than the file holds (strings take at least their 8-byte
    // length): refused before the elements are allocated.
    for ty in [0u32, 4, 7, 8, 12] {
        refused_with(
            &array_file(b"tokenizer.ggml.tokens", ty, MAX_ARRAY_ELEMENTS, 64),
            Rule::GgufContainer,
            &["key \"tokenizer.ggml.tokens\"", "within the file"],
        );
    }
    // The limit holds for all arrays together: two arrays of 2^23 + 1 bytes each, both in the
    // file.
    let half = MAX_ARRAY_ELEMENTS / 2 + 1;
    let payload = |n: u64| {
        [
            0u32.to_le_bytes().to_vec(),
            n.to_le_bytes().to_vec(),
            vec![7; n as usize],
        ]
        .concat()
    };
    let bytes = Raw::new(0, 2)
        .kv(b"a", 9, &payload(half))
        .kv(b"b", 9, &payload(half))
        .data(0);
    let (r, peak, elapsed) = measured(|| Header::parse(Path::new(HOSTILE), &bytes));
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("key \"b\"") && msg.contains("array elements in all"),
        "{msg}"
    );
    assert!(peak <= 2 * bytes.len(), "{peak} bytes: {msg}");
    eprintln!("two arrays of {half} bytes: refused in {elapsed:?}, {peak} bytes of heap");
}

#[test]
fn unknown_value_types_are_refused_naming_the_key() {
    for ty in [13u32, 100, u32::MAX] {
        refused_with(
            &Raw::new(0, 1).kv(b"general.x", ty, &[0; 8]).data(32),
            Rule::GgufContainer,
            &[
                "key \"general.x\"",
                "a value type from 0 to 12",
                &format!("type {ty}"),
            ],
        );
        // As an array's element type.
        refused_with(
            &array_file(b"general.y", ty, 1, 32),
            Rule::GgufContainer,
            &["key \"general.y\"", &format!("type {ty}")],
        );
    }
}

#[test]
fn unknown_and_quantized_tensor_types_are_refused_naming_the_tensor_and_type() {
    // 12 is Q4_K: a type ggml knows, that a bundle does not take (it would re-quantize).
    let q4k = Raw::new(1, 0)
        .info(b"blk.0.ffn_down.weight", &[256, 4], 12, 0)
        .data(4096);
    refused_with(
        &q4k,
        Rule::GgufTensor,
        &["tensor \"blk.0.ffn_down.weight\"", "Q4_K", "(12)"],
    );
    // Every other type the reader does not take, known to ggml or not.
    let mut ids: Vec<u32> = (2..=29).chain(31..=33).chain(37..=40).collect();
    ids.extend([41, 1000, u32::MAX]);
    for id in ids {
        let bytes = Raw::new(1, 0).info(b"w", &[256, 4], id, 0).data(4096);
        let name = type_name(id);
        refused_with(
            &bytes,
            Rule::GgufTensor,
            &["tensor \"w\"", &format!("type {name} ({id})")],
        );
        if id > 40 {
            assert_eq!(name, "unknown");
        }
    }
}

#[test]
fn duplicate_tensor_names_and_keys_are_refused() {
    let bytes = Raw::new(2, 0)
        .info(b"blk.0.attn_q.weight", &[4], 0, 0)
        .info(b"blk.0.attn_q.weight", &[4], 0, 32)
        .data(64);
    refused_with(
        &bytes,
        Rule::GgufContainer,
        &["tensor \"blk.0.attn_q.weight\"", "unique tensor names"],
    );
    let u32_kv = |r: Raw, key: &[u8], v: u32| r.kv(key, 4, &v.to_le_bytes());
    let bytes = u32_kv(
        u32_kv(Raw::new(0, 2), b"llama.block_count", 1),
        b"llama.block_count",
        2,
    )
    .data(0);
    refused_with(
        &bytes,
        Rule::GgufContainer,
        &["unique keys", "key \"llama.block_count\" twice"],
    );
    // The same key with another type.
    let bytes = u32_kv(Raw::new(0, 2), b"general.alignment", 32)
        .kv(
            b"general.alignment",
            8,
            &[&1u64.to_le_bytes()[..], b"x"].concat(),
        )
        .data(0);
    refused_with(
        &bytes,
        Rule::GgufContainer,
        &["key \"general.alignment\" twice"],
    );
}

#[test]
fn overlapping_tensor_data_are_refused_naming_both() {
    for (a, b) in [(0u64, 0u64), (0, 32), (32, 0), (64, 32), (32, 64)] {
        // "a" has 64 bytes at offset a, "b" 64 at offset b.
        let bytes = Raw::new(2, 0)
            .info(b"a", &[16], 0, a)
            .info(b"b", &[16], 0, b)
            .data(256);
        let msg = refused_with(&bytes, Rule::GgufContainer, &["overlap"]);
        assert!(
            msg.contains("tensor \"a\"") || msg.contains("tensor \"b\""),
            "{msg}"
        );
        assert!(msg.contains("\"a\"") && msg.contains("\"b\""), "{msg}");
    }
    // Adjacent is fine.
    let bytes = Raw::new(2, 0)
        .info(b"a", &[16], 0, 0)
        .info(b"b", &[4], 0, 64)
        .data(96);
    Header::parse(Path::new("ok.gguf"), &bytes).unwrap();
}

#[test]
fn misaligned_offsets_and_bad_alignments_are_refused() {
    for offset in [1u64, 16, 31, 33] {
        let bytes = Raw::new(1, 0).info(b"w", &[4], 0, offset).data(128);
        refused_with(
            &bytes,
            Rule::GgufContainer,
            &[
                "tensor \"w\"",
                "multiple of the alignment 32",
                &format!("offset {offset}"),
            ],
        );
    }
    // general.alignment 64: offset 32 is misaligned, 64 is not.
    let with_alignment = |offset: u64| {
        Raw::new(1, 1)
            .kv(b"general.alignment", 4, &64u32.to_le_bytes())
            .info(b"w", &[4], 0, offset)
            .data(256)
    };
    refused_with(
        &with_alignment(32),
        Rule::GgufContainer,
        &["tensor \"w\"", "the alignment 64"],
    );
    Header::parse(Path::new("ok.gguf"), &with_alignment(64)).unwrap();
    // An alignment that is not a power of two, or not a UINT32.
    for (ty, payload) in [
        (4u32, 0u32.to_le_bytes().to_vec()),
        (4, 48u32.to_le_bytes().to_vec()),
        (4, u32::MAX.to_le_bytes().to_vec()),
        (10, 32u64.to_le_bytes().to_vec()),
        (5, 32i32.to_le_bytes().to_vec()),
    ] {
        let bytes = Raw::new(0, 1)
            .kv(b"general.alignment", ty, &payload)
            .data(0);
        refused_with(&bytes, Rule::GgufContainer, &["general.alignment"]);
    }
    // The largest alignment, 2^31, with a tensor: its data section lies past the file.
    let bytes = Raw::new(1, 1)
        .kv(b"general.alignment", 4, &(1u32 << 31).to_le_bytes())
        .info(b"w", &[4], 0, 0)
        .data(64);
    refused_with(&bytes, Rule::GgufContainer, &["the data section"]);
}

#[test]
fn arrays_of_arrays_bad_bools_and_invalid_utf8_are_refused() {
    // An array of arrays (of one UINT8 each).
    let nested = [
        &9u32.to_le_bytes()[..],
        &1u64.to_le_bytes(),
        &0u32.to_le_bytes(),
        &1u64.to_le_bytes(),
        &[5],
    ]
    .concat();
    refused_with(
        &Raw::new(0, 1).kv(b"general.nested", 9, &nested).data(0),
        Rule::GgufContainer,
        &["key \"general.nested\"", "an array of arrays"],
    );
    // A BOOL of 2 and of 255, alone and in an array.
    for b in [2u8, 255] {
        refused_with(
            &Raw::new(0, 1).kv(b"general.flag", 7, &[b]).data(0),
            Rule::GgufContainer,
            &[
                "key \"general.flag\"",
                "a BOOL of 0 or 1",
                &format!("found {b}"),
            ],
        );
        let payload = [&7u32.to_le_bytes()[..], &3u64.to_le_bytes(), &[1, 0, b]].concat();
        refused_with(
            &Raw::new(0, 1).kv(b"general.flags", 9, &payload).data(0),
            Rule::GgufContainer,
            &["key \"general.flags\"", "a BOOL of 0 or 1"],
        );
    }
    // Invalid UTF-8: a key (a lone continuation byte, an overlong encoding, a surrogate), a
    // string value, a string in an array, a tensor name.
    for key in [&b"general.\x80"[..], b"\xC0\xAF", b"\xED\xA0\x80", b"\xFF"] {
        refused_with(
            &Raw::new(0, 1).kv(key, 4, &[0; 4]).data(0),
            Rule::GgufContainer,
            &["a key in UTF-8", "invalid UTF-8"],
        );
    }
    let bad = [&2u64.to_le_bytes()[..], b"\xFF\xFE"].concat();
    refused_with(
        &Raw::new(0, 1).kv(b"general.name", 8, &bad).data(0),
        Rule::GgufContainer,
        &["key \"general.name\"", "UTF-8"],
    );
    let in_array = [&8u32.to_le_bytes()[..], &1u64.to_le_bytes(), &bad].concat();
    refused_with(
        &Raw::new(0, 1)
            .kv(b"tokenizer.ggml.tokens", 9, &in_array)
            .data(0),
        Rule::GgufContainer,
        &["key \"tokenizer.ggml.tokens\"", "UTF-8"],
    );
    refused_with(
        &Raw::new(1, 0).info(b"blk.\xFF", &[4], 0, 0).data(32),
        Rule::GgufContainer,
        &["the name of tensor 0 in UTF-8"],
    );
}

#[test]
fn bad_magic_versions_names_and_dimensions_are_refused() {
    refused_with(
        &Raw(b"GGML".to_vec()).u32(3).u64(0).u64(0).done(),
        Rule::GgufContainer,
        &["magic"],
    );
    refused_with(b"GGU", Rule::GgufContainer, &["the magic"]);
    for v in [0u32, 1, 4, u32::MAX] {
        let bytes = Raw(b"GGUF".to_vec()).u32(v).u64(0).u64(0).done();
        refused_with(&bytes, Rule::GgufContainer, &[&format!("version {v}")]);
    }
    refused_with(
        &Raw::new(0, 1).kv(b"", 4, &[0; 4]).data(0),
        Rule::GgufContainer,
        &["a non-empty key"],
    );
    refused_with(
        &Raw::new(1, 0).info(b"", &[4], 0, 0).data(32),
        Rule::GgufContainer,
        &["a non-empty tensor name"],
    );
    refused_with(
        &Raw::new(1, 0).info(&[b'x'; 64], &[4], 0, 0).data(32),
        Rule::GgufContainer,
        &["at most 63 bytes"],
    );
    for ne in [
        &[][..],
        &[1, 1, 1, 1, 1],
        &[0],
        &[4, 0],
        &[u64::MAX, 2],
        &[1 << 32, 1 << 32],
        &[1 << 21, 1 << 20],
    ] {
        let bytes = Raw::new(1, 0).info(b"w", ne, 0, 0).data(64);
        refused_with(&bytes, Rule::GgufContainer, &["tensor \"w\""]);
    }
    // A dimension count far past the limit: refused before reading any dimension.
    let bytes = Raw::new(1, 0).str(b"w").u32(u32::MAX).data(0);
    refused_with(
        &bytes,
        Rule::GgufContainer,
        &["tensor \"w\"", "1 to 4 dimensions"],
    );
}

// ---- files derived from valid exports, through `bundle create --from` ----

/// The file's key-values and tensors (info and bytes), to edit and write back.
#[derive(Clone)]
struct Parts {
    kvs: Vec<(String, Value)>,
    tensors: Vec<(TensorInfo, Vec<u8>)>,
}

fn parts(bytes: &[u8]) -> Parts {
    let h = Header::parse(Path::new("base.gguf"), bytes).unwrap();
    let tensors = h
        .tensors
        .iter()
        .map(|t| {
            let at = (h.data_start + t.offset) as usize;
            (
                TensorInfo::new(&t.name, &t.ne, t.ggml_type.id(), t.nbytes),
                bytes[at..at + t.nbytes as usize].to_vec(),
            )
        })
        .collect();
    Parts {
        kvs: h.kvs,
        tensors,
    }
}

/// The file of `p` as the writer lays it out (each tensor's size is its bytes').
fn assemble(p: &Parts) -> Vec<u8> {
    let parts: Vec<(TensorInfo, &[u8])> = p
        .tensors
        .iter()
        .map(|(i, d)| (i.clone(), d.as_slice()))
        .collect();
    file_bytes(&p.kvs, &parts)
}

impl Parts {
    fn data(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self.tensor(name).1
    }

    fn data_of(&self, name: &str) -> &[u8] {
        &self
            .tensors
            .iter()
            .find(|(i, _)| i.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .1
    }

    fn tensor(&mut self, name: &str) -> &mut (TensorInfo, Vec<u8>) {
        self.tensors
            .iter_mut()
            .find(|(i, _)| i.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    fn get(&self, key: &str) -> &Value {
        &self
            .kvs
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no key {key}"))
            .1
    }

    fn set(&mut self, key: &str, v: Value) {
        match self.kvs.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = v,
            None => self.kvs.push((key.into(), v)),
        }
    }

    fn remove(&mut self, key: &str) {
        let before = self.kvs.len();
        self.kvs.retain(|(k, _)| k != key);
        assert_eq!(self.kvs.len() + 1, before, "no key {key}");
    }

    /// Without the bundle's keys (`bundle.granularity`, `bundle.group_size`, `bundle.scale.*`):
    /// a file as another tool writes it, whose scales come from its blocks.
    fn without_bundle_keys(mut self) -> Parts {
        self.kvs.retain(|(k, _)| !k.starts_with("bundle."));
        self
    }

    fn scales(&self, tensor: &str) -> Vec<f32> {
        match self.get(&scale_key(tensor)) {
            Value::Array(Array::F32(v)) => v.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        assemble(self)
    }
}

/// The valid exports the hostile files are made from.
struct Bases {
    /// Llama, channel scales, TQ2_0 (bundle keys).
    llama_tq2: Vec<u8>,
    /// The same bundle as TQ1_0.
    llama_tq1: Vec<u8>,
    /// BitNet (bitnet-b1.58), one scale per tensor, I2_S.
    bitnet_i2s: Vec<u8>,
    /// Llama whose o_proj and down_proj (2 columns) are kept as F16, the rest TQ2_0.
    fallback_tq2: Vec<u8>,
}

/// Hidden 256, intermediate 256, 2 heads of 128 (1 KV), one layer, vocab 8: every projection
/// rows of one TQ block (two I2_S blocks).
fn blocks_spec(family: Family) -> DecoderSpec {
    DecoderSpec {
        vocab_size: 8,
        hidden_size: 256,
        intermediate_size: 256,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 128,
        ..spec(family, true)
    }
}

/// Hidden 256, one head of 2, intermediate 2: q, k, v, gate and up are 2 rows of 256 columns,
/// o_proj and down_proj 256 rows of 2 columns (no block holds them).
fn fallback_spec() -> DecoderSpec {
    DecoderSpec {
        vocab_size: 8,
        hidden_size: 256,
        intermediate_size: 2,
        num_hidden_layers: 1,
        num_attention_heads: 1,
        num_key_value_heads: 1,
        head_dim: 2,
        ..spec(Family::Llama, true)
    }
}

fn export(
    dir: &Path,
    label: &str,
    s: &DecoderSpec,
    g: Granularity,
    ternary: TernaryType,
    fallback: bool,
) -> Vec<u8> {
    let name = format!("{label}-{}-{}", g.name(), ternary.name());
    let bundle = dir.join(&name);
    if !bundle.exists() {
        let params = QuantParams {
            granularity: g,
            ..QuantParams::default()
        };
        // Row 0's first 128 weights of down_proj far below the row's mean: a block of zeros
        // in I2_S (and, for the 256-column models, the first half of a TQ block).
        let source = model_with(s, |name, v| {
            if name == "model.layers.0.mlp.down_proj.weight" {
                v.iter_mut().take(128).for_each(|x| *x *= 1e-3);
            }
        });
        write_bundle(
            &bundle,
            &source,
            &BundlePlan::of_decoder(s, params),
            &WriteOptions::default(),
        )
        .unwrap();
    }
    let out = dir.join(format!("{name}.gguf"));
    let options = GgufExport {
        ternary,
        float_type: FloatType::F32,
        no_tokenizer: true,
        context_length: 64,
        allow_float_fallback: fallback,
        force: true,
    };
    export_gguf(&Bundle::open(&bundle).unwrap(), &out, &options).unwrap();
    std::fs::read(out).unwrap()
}

fn bases() -> &'static Bases {
    static BASES: OnceLock<Bases> = OnceLock::new();
    BASES.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let llama = blocks_spec(Family::Llama);
        Bases {
            llama_tq2: export(
                d,
                "llama",
                &llama,
                Granularity::Channel,
                TernaryType::Tq2_0,
                false,
            ),
            llama_tq1: export(
                d,
                "llama",
                &llama,
                Granularity::Channel,
                TernaryType::Tq1_0,
                false,
            ),
            bitnet_i2s: export(
                d,
                "bitnet",
                &blocks_spec(Family::Bitnet),
                Granularity::Tensor,
                TernaryType::I2S,
                false,
            ),
            fallback_tq2: export(
                d,
                "fallback",
                &fallback_spec(),
                Granularity::Channel,
                TernaryType::Tq2_0,
                true,
            ),
        }
    })
}

/// Runs `bundle create --from DIR/NAME.gguf --out DIR/NAME-bundle` on `bytes`: the output
/// and the two paths.
fn create(dir: &Path, name: &str, bytes: &[u8]) -> (std::process::Output, PathBuf, PathBuf) {
    let file = dir.join(format!("{name}.gguf"));
    std::fs::write(&file, bytes).unwrap();
    let out = dir.join(format!("{name}-bundle"));
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_bundle"))
        .args(["create", "--from"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    (r, file, out)
}

/// `bundle create --from` must refuse `bytes` cleanly: exit code 1 (no panic), a message naming
/// the file and containing each of `says`, no bundle at `--out` and nothing new beside it,
/// within 60 s. The message.
fn create_refuses(name: &str, bytes: &[u8], says: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let before = common::dir_entries(tmp.path());
    let started = Instant::now();
    let (r, file, out) = create(tmp.path(), name, bytes);
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
    eprintln!("{name} ({elapsed:?}): {}", stderr.trim_end());
    assert_eq!(
        r.status.code(),
        Some(1),
        "{name}: expected a clean refusal (exit code 1), got {:?}: {stderr}",
        r.status
    );
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    assert!(
        stderr.contains(file.to_str().unwrap()),
        "{name}: the message names the file: {stderr}"
    );
    for s in says {
        assert!(stderr.contains(s), "{name}: expected {s:?} in: {stderr}");
    }
    assert!(!out.exists(), "{name}: a bundle was left at --out");
    let mut after = common::dir_entries(tmp.path());
    after.retain(|e| e != &format!("{name}.gguf"));
    assert_eq!(after, before, "{name}: something was left beside --out");
    assert!(elapsed < Duration::from_secs(60), "{name}: {elapsed:?}");
    stderr
}

/// `bundle create --from` must accept `bytes` (the controls: what the hostile files are made
/// from is valid).
fn create_accepts(name: &str, bytes: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let (r, _, out) = create(tmp.path(), name, bytes);
    assert!(
        r.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(out.join("manifest.json").is_file());
}

const V: &str = "blk.0.attn_v.weight";

/// The index of the first block (of `size` bytes, unpacked by `unpack`) with a non-zero trit.
fn live_block(data: &[u8], size: usize, tq1: bool) -> usize {
    data.chunks_exact(size)
        .position(|b| {
            let t = if tq1 {
                unpack_tq1_0(b).0
            } else {
                unpack_tq2_0(b).unwrap().0
            };
            t.iter().any(|&x| x != 0)
        })
        .expect("a block with a non-zero trit")
}

#[test]
fn the_bases_are_valid_and_reassemble_to_themselves() {
    let b = bases();
    for (name, bytes) in [
        ("llama-tq2", &b.llama_tq2),
        ("llama-tq1", &b.llama_tq1),
        ("bitnet-i2s", &b.bitnet_i2s),
        ("fallback-tq2", &b.fallback_tq2),
    ] {
        assert!(
            parts(bytes).bytes() == *bytes,
            "{name}: reassembled differently"
        );
        create_accepts(name, bytes);
        create_accepts(
            &format!("{name}-keyless"),
            &parts(bytes).without_bundle_keys().bytes(),
        );
    }
    let p = parts(&b.fallback_tq2);
    let types: Vec<(String, u32)> = p
        .tensors
        .iter()
        .map(|(i, _)| (i.name.clone(), i.ggml_type))
        .collect();
    assert!(
        types.contains(&("blk.0.ffn_down.weight".into(), 1)),
        "{types:?}"
    );
    assert!(
        types.contains(&("blk.0.attn_q.weight".into(), 35)),
        "{types:?}"
    );
}

#[test]
fn a_truncated_export_is_refused_by_create() {
    let good = &bases().llama_tq2;
    for cut in [4, 100, good.len() / 2, good.len() - 40] {
        create_refuses(
            &format!("cut{cut}"),
            &good[..cut],
            &["rule 8.4", "malformed GGUF file"],
        );
    }
    let msg = create_refuses("cut-data", &good[..good.len() / 2], &["past the end"]);
    assert!(msg.contains("tensor \"blk.0."), "{msg}");
}

#[test]
fn a_tq2_0_code_3_is_refused() {
    let b = bases();
    for (name, p) in [
        ("keyed", parts(&b.llama_tq2)),
        ("keyless", parts(&b.llama_tq2).without_bundle_keys()),
    ] {
        let mut p = p;
        // Weight 37 of block 1 (row 1): byte 5 at bits 2-3.
        p.data(V)[66 + 5] |= 0b11 << 2;
        create_refuses(
            &format!("tq2-code3-{name}"),
            &p.bytes(),
            &[
                "tensor \"blk.0.attn_v.weight\"",
                "rule 8.5",
                "code 3 at weight 293",
            ],
        );
    }
}

#[test]
fn an_i2_s_code_3_is_refused() {
    let b = bases();
    for (name, p) in [
        ("keyed", parts(&b.bitnet_i2s)),
        ("keyless", parts(&b.bitnet_i2s).without_bundle_keys()),
    ] {
        let mut p = p;
        // Value 98 of block 0: byte 2, bits 0-1.
        p.data("blk.0.ffn_up.weight")[2] |= 0b11;
        create_refuses(
            &format!("i2s-code3-{name}"),
            &p.bytes(),
            &[
                "tensor \"blk.0.ffn_up.weight\"",
                "rule 8.5",
                "code 3 at weight 98",
            ],
        );
    }
}

#[test]
fn a_live_block_with_d_zero_negative_or_nan_is_refused_without_keys() {
    let b = bases();
    for (ty, base, size, d_at) in [("tq2", &b.llama_tq2, 66, 64), ("tq1", &b.llama_tq1, 54, 52)] {
        let p = parts(base).without_bundle_keys();
        let block = live_block(p.data_of(V), size, ty == "tq1");
        for (label, d) in [
            ("zero", f16::ZERO),
            ("minus-zero", f16::NEG_ZERO),
            ("negative", f16::from_f32(-0.5)),
            ("nan", f16::NAN),
            ("infinite", f16::INFINITY),
        ] {
            let mut p = p.clone();
            let at = block * size + d_at;
            p.data(V)[at..at + 2].copy_from_slice(&d.to_le_bytes());
            let msg = create_refuses(
                &format!("{ty}-d-{label}"),
                &p.bytes(),
                &[
                    "tensor \"blk.0.attn_v.weight\"",
                    "rule 8.5",
                    "d finite and > 0 in a block with a non-zero trit",
                    &format!("in block {block}"),
                ],
            );
            assert!(msg.contains(&format!("d = {}", d.to_f32())), "{msg}");
        }
    }
    // I2_S: the tensor's one scale.
    let p = parts(&b.bitnet_i2s).without_bundle_keys();
    let n = 256 * 256 / 4;
    for (label, s) in [
        ("zero", 0.0f32),
        ("negative", -0.25),
        ("nan", f32::NAN),
        ("infinite", f32::INFINITY),
    ] {
        let mut p = p.clone();
        p.data("blk.0.attn_q.weight")[n..n + 4].copy_from_slice(&s.to_le_bytes());
        create_refuses(
            &format!("i2s-scale-{label}"),
            &p.bytes(),
            &[
                "tensor \"blk.0.attn_q.weight\"",
                "an I2_S scale finite and > 0",
            ],
        );
    }
}

#[test]
fn scale_keys_that_disagree_with_the_blocks_are_refused() {
    let b = bases();
    let base = parts(&b.llama_tq2);
    let block = live_block(base.data_of(V), 66, false);
    let key = scale_key(V);
    let says = [
        "tensor \"blk.0.attn_v.weight\"",
        "rule 8.5",
        &format!("values that {key} states"),
        &format!("in block {block}"),
    ];
    // The key's scale of that row doubled.
    let mut p = base.clone();
    let mut scales = p.scales(V);
    scales[block] *= 2.0;
    p.set(&key, Value::Array(Array::F32(scales)));
    create_refuses("key-doubled", &p.bytes(), &says);
    // The block's d changed instead: to 0, to twice, to NaN, negative.
    for (label, d) in [
        ("zero", f16::ZERO),
        ("double", f16::from_f32(2.0 * base.scales(V)[block])),
        ("nan", f16::NAN),
        ("negative", f16::from_f32(-base.scales(V)[block])),
    ] {
        let mut p = base.clone();
        let at = block * 66 + 64;
        p.data(V)[at..at + 2].copy_from_slice(&d.to_le_bytes());
        create_refuses(&format!("d-{label}-keyed"), &p.bytes(), &says);
    }
    // I2_S: the tensor's scale against the key.
    let mut p = parts(&b.bitnet_i2s);
    let s = p.scales("blk.0.attn_k.weight")[0];
    p.set(
        &scale_key("blk.0.attn_k.weight"),
        Value::Array(Array::F32(vec![s * 1.5])),
    );
    create_refuses(
        "i2s-key-off",
        &p.bytes(),
        &[
            "tensor \"blk.0.attn_k.weight\"",
            &format!("values that {} states", scale_key("blk.0.attn_k.weight")),
            "I2_S scale",
        ],
    );
}

#[test]
fn scale_keys_of_the_wrong_length_or_type_are_refused() {
    let base = parts(&bases().llama_tq2);
    let key = scale_key(V);
    let n = base.scales(V).len();
    assert_eq!(n, 128, "channel scales of attn_v's 128 rows");
    let wrong = [
        (
            "short",
            Value::Array(Array::F32(vec![0.5; 127])),
            "ARRAY[FLOAT32] of 127",
        ),
        (
            "long",
            Value::Array(Array::F32(vec![0.5; 129])),
            "ARRAY[FLOAT32] of 129",
        ),
        (
            "empty",
            Value::Array(Array::F32(vec![])),
            "ARRAY[FLOAT32] of 0",
        ),
        (
            "f64",
            Value::Array(Array::F64(vec![0.5; 128])),
            "ARRAY[FLOAT64] of 128",
        ),
        ("scalar", Value::F32(0.5), "FLOAT32"),
        ("string", Value::Str("0.5".into()), "STRING"),
    ];
    for (label, v, found) in wrong {
        let mut p = base.clone();
        p.set(&key, v);
        create_refuses(
            &format!("key-{label}"),
            &p.bytes(),
            &[
                "tensor \"blk.0.attn_v.weight\"",
                &format!("{key}: ARRAY of 128 FLOAT32 (granularity channel)"),
                &format!("found {found}"),
            ],
        );
    }
    // Missing, while bundle.granularity says the file states every scale.
    let mut p = base.clone();
    p.remove(&key);
    create_refuses(
        "key-missing",
        &p.bytes(),
        &["tensor \"blk.0.attn_v.weight\"", &key, GRANULARITY_KEY],
    );
    // On a tensor that is not quantized.
    let mut p = base.clone();
    p.set(
        &scale_key("output_norm.weight"),
        Value::Array(Array::F32(vec![1.0; 256])),
    );
    create_refuses(
        "key-on-a-norm",
        &p.bytes(),
        &[
            "tensor \"output_norm.weight\"",
            "bundle.scale.output_norm.weight",
        ],
    );
}

#[test]
fn bad_granularity_keys_are_refused() {
    let base = parts(&bases().llama_tq2);
    for (label, g, size) in [
        ("unknown", Value::Str("row".into()), None),
        ("not-a-string", Value::U32(1), None),
        ("group-without-size", Value::Str("group".into()), None),
        (
            "group-of-0",
            Value::Str("group".into()),
            Some(Value::U32(0)),
        ),
        (
            "group-size-a-string",
            Value::Str("group".into()),
            Some(Value::Str("256".into())),
        ),
    ] {
        let mut p = base.clone();
        p.set(GRANULARITY_KEY, g);
        if let Some(s) = size {
            p.set(GROUP_SIZE_KEY, s);
        }
        create_refuses(
            &format!("granularity-{label}"),
            &p.bytes(),
            &[GRANULARITY_KEY],
        );
    }
}

#[test]
fn f16_fallback_values_off_the_scale_are_refused() {
    let base = parts(&bases().fallback_tq2);
    let name = "blk.0.ffn_down.weight";
    let scales = base.scales(name);
    let values: Vec<f16> = base
        .data_of(name)
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect();
    let i = values.iter().position(|v| v.to_f32() != 0.0).unwrap();
    let (r, c) = (i / 2, i % 2);
    assert_eq!(values[i].to_f32().abs(), f16::from_f32(scales[r]).to_f32());
    for (label, v) in [
        ("double", f16::from_f32(2.0 * values[i].to_f32())),
        ("next", f16::from_bits(values[i].to_bits() + 1)),
        ("nan", f16::NAN),
        ("infinite", f16::INFINITY),
        ("minus-zero", f16::NEG_ZERO),
    ] {
        let mut p = base.clone();
        p.data(name)[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
        create_refuses(
            &format!("fallback-{label}"),
            &p.bytes(),
            &[
                "tensor \"blk.0.ffn_down.weight\"",
                "rule 8.5",
                &format!("values that {} states", scale_key(name)),
                &format!("at row {r} column {c}"),
                "not 0 or ±f16(scale)",
            ],
        );
    }
    // The key changed instead: every non-zero value of that row is now off the scale.
    let mut p = base.clone();
    let mut s = scales.clone();
    s[r] *= 3.0;
    p.set(&scale_key(name), Value::Array(Array::F32(s)));
    create_refuses(
        "fallback-key-off",
        &p.bytes(),
        &[
            "tensor \"blk.0.ffn_down.weight\"",
            &format!("at row {r} column {c}"),
        ],
    );
}

/// Architectures and hyperparameters that make no model the import reads: (key, value).
fn bad_model_keys() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::Str("gpt2".into())),
        ("general.architecture", Value::Str("".into())),
        ("general.architecture", Value::Str("llama\u{1b}[2J".into())),
        ("general.architecture", Value::Str("bitnet-b1.58 ".into())),
        ("general.architecture", Value::U32(1)),
        ("llama.block_count", Value::U32(0)),
        ("llama.block_count", Value::U64(u64::MAX)),
        ("llama.block_count", Value::I32(-1)),
        ("llama.block_count", Value::F32(1.0)),
        ("llama.attention.head_count", Value::U32(0)),
        ("llama.attention.head_count_kv", Value::U32(3)),
        ("llama.embedding_length", Value::U64(1 << 62)),
        ("llama.feed_forward_length", Value::U32(512)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(f32::NAN),
        ),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(-1.0)),
        ("llama.rope.freq_base", Value::F32(0.0)),
        ("llama.rope.dimension_count", Value::U32(64)),
        ("llama.vocab_size", Value::U32(9)),
    ]
}

/// `bundle create` of the Llama TQ2_0 base with `key` set to `v`: its refusal.
fn refusal_with_key(key: &str, v: &Value) -> String {
    let mut p = parts(&bases().llama_tq2);
    p.set(key, v.clone());
    let label: String = format!("{key}-{v:?}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    create_refuses(&label, &p.bytes(), &["rule 8.6"])
}

#[test]
fn unknown_architectures_and_hyperparameters_of_no_model_are_refused() {
    for (key, v) in bad_model_keys() {
        let msg = refusal_with_key(key, &v);
        assert!(
            !msg.contains('\u{1b}'),
            "a control character printed: {msg:?}"
        );
        if key == "general.architecture" && matches!(v, Value::Str(_)) {
            assert!(
                msg.contains("architecture llama, bitnet or bitnet-b1.58"),
                "{msg}"
            );
        }
    }
    let base = parts(&bases().llama_tq2);
    for key in [
        "general.architecture",
        "llama.block_count",
        "llama.embedding_length",
        "llama.attention.head_count",
    ] {
        let mut p = base.clone();
        p.remove(key);
        create_refuses(&format!("no-{key}"), &p.bytes(), &[key, "none"]);
    }
}

#[test]
fn a_scale_key_without_the_granularity_key_is_refused() {
    // bundle.scale.<tensor> on an F16 tensor makes it quantized; without bundle.granularity
    // the import cannot read it (it would read scales from blocks), and must say so (this
    // reached an unreachable! before d7b3730: exit code 101).
    let mut p = parts(&bases().fallback_tq2);
    p.remove(GRANULARITY_KEY);
    create_refuses(
        "fallback-no-granularity",
        &p.bytes(),
        &["tensor \"blk.0.", GRANULARITY_KEY, SCALE_KEY_PREFIX],
    );
}

#[test]
fn missing_extra_and_misshapen_tensors_are_refused() {
    let base = parts(&bases().llama_tq2);
    // Missing: a projection, the embedding.
    for name in [
        "blk.0.ffn_up.weight",
        "token_embd.weight",
        "output_norm.weight",
    ] {
        let mut p = base.clone();
        p.tensors.retain(|(i, _)| i.name != name);
        create_refuses(&format!("missing-{name}"), &p.bytes(), &[name, "none"]);
    }
    // Extra: a second layer's tensor, a name of no model.
    for name in ["blk.1.attn_q.weight", "rope_freqs.weight", "x"] {
        let mut p = base.clone();
        p.tensors
            .push((TensorInfo::new(name, &[4], 0, 16), vec![0; 16]));
        create_refuses(
            &format!("extra-{name}"),
            &p.bytes(),
            &[&format!("tensor \"{name}\""), "not part of it"],
        );
    }
    // The wrong shape: a norm of 128 values; attn_v of 64 rows, and transposed (256 rows of
    // 128 columns is not a TQ matrix, so as F32); a 3-D embedding.
    let mut p = base.clone();
    let t = p.tensor("output_norm.weight");
    t.0.ne = vec![128];
    t.1.truncate(128 * 4);
    create_refuses(
        "norm-128",
        &p.bytes(),
        &["tensor \"output_norm.weight\"", "shape [256]", "ne [128]"],
    );
    let mut p = base.clone();
    let t = p.tensor(V);
    t.0.ne = vec![256, 64];
    t.1.truncate(64 * 66);
    create_refuses(
        "v-64-rows",
        &p.bytes(),
        &[
            "tensor \"blk.0.attn_v.weight\"",
            "shape [128, 256]",
            "ne [256, 64]",
        ],
    );
    let mut p = base.clone();
    let t = p.tensor(V);
    *t = (
        TensorInfo::new(V, &[128, 256], 0, 0),
        vec![0; 128 * 256 * 4],
    );
    p.remove(&scale_key(V));
    create_refuses(
        "v-transposed",
        &p.bytes(),
        &["tensor \"blk.0.attn_v.weight\"", "ne [128, 256]"],
    );
    let mut p = base.clone();
    let t = p.tensor("token_embd.weight");
    t.0.ne = vec![256, 4, 2];
    create_refuses(
        "embd-3d",
        &p.bytes(),
        &["tensor \"token_embd.weight\"", "ne [256, 4, 2]"],
    );
}

#[test]
fn stated_scales_that_are_not_positive_are_refused() {
    // attn_v's key and blocks agree on -s (or NaN) for one row: consistent, and still not a
    // scale (rule 8.5: valid scales).
    let base = parts(&bases().llama_tq2);
    let block = live_block(base.data_of(V), 66, false);
    for (label, f) in [("negative", -1.0f32), ("nan", f32::NAN)] {
        let mut p = base.clone();
        let mut scales = p.scales(V);
        scales[block] = if f.is_nan() { f32::NAN } else { -scales[block] };
        let d = f16::from_f32(scales[block]);
        p.set(&scale_key(V), Value::Array(Array::F32(scales)));
        let at = block * 66 + 64;
        p.data(V)[at..at + 2].copy_from_slice(&d.to_le_bytes());
        let msg = create_refuses(&format!("stated-{label}"), &p.bytes(), &[]);
        assert!(
            msg.contains("blk.0.attn_v.weight")
                || msg.contains("model.layers.0.self_attn.v_proj.weight"),
            "{msg}"
        );
    }
}

// ---- found by these tests, then fixed: hyperparameters named by their GGUF keys; group scales finer than a block checked per weight ----

#[test]
fn refusals_of_a_bad_architecture_or_hyperparameter_name_the_gguf_key() {
    // The message of a refusal names what the user can find in the file: the GGUF key
    // (`general.architecture`, `llama.block_count`), or the tensor a size does not fit; not
    // only transformers' name of the setting (num_hidden_layers).
    let mut unnamed = Vec::new();
    for (key, v) in bad_model_keys() {
        let msg = refusal_with_key(key, &v);
        if !(msg.contains(key) || msg.contains("tensor \"")) {
            unnamed.push(format!("{key} = {v:?}: {}", msg.trim_end()));
        }
    }
    assert!(
        unnamed.is_empty(),
        "{} messages name neither the GGUF key nor a tensor:\n{}",
        unnamed.len(),
        unnamed.join("\n")
    );
}

#[test]
fn group_scales_finer_than_a_block_are_refused_or_checked() {
    // Group scales of 128 columns on TQ2_0 blocks of 256: each block has one d, so both
    // groups of a block must state f16(d). Here every tensor states its row's scale for both
    // groups, except attn_v, whose second group of each row states twice: the blocks' d
    // cannot be both, and the bundle would hold weights the file does not.
    let mut p = parts(&bases().llama_tq2);
    p.set(GRANULARITY_KEY, Value::Str("group".into()));
    p.set(GROUP_SIZE_KEY, Value::U32(128));
    let keys: Vec<String> = p
        .kvs
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with(SCALE_KEY_PREFIX))
        .collect();
    for key in keys {
        let tensor = key.trim_start_matches(SCALE_KEY_PREFIX).to_string();
        let per_row = p.scales(&tensor);
        let doubled: Vec<f32> = per_row
            .iter()
            .flat_map(|&s| [s, if tensor == V { 2.0 * s } else { s }])
            .collect();
        p.set(&key, Value::Array(Array::F32(doubled)));
    }
    // If it is taken, show what the bundle holds against what the file says.
    let bytes = p.bytes();
    let tmp = tempfile::tempdir().unwrap();
    let (r, _, out) = create(tmp.path(), "group-128", &bytes);
    if r.status.success() {
        let b = Bundle::open(&out).unwrap();
        let fp16: Vec<f32> = b
            .fp16_bytes("model.layers.0.self_attn.v_proj.weight")
            .unwrap()
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        let (trits, d) = unpack_tq2_0(&p.data_of(V)[..66]).unwrap();
        let c = (128..256).find(|&c| trits[c] != 0).unwrap();
        panic!(
            "accepted: attn_v row 0 column {c}: the file dequantizes to {} × d {} = {}, the bundle's FP16 weight is {}",
            trits[c],
            d,
            f32::from(trits[c]) * d.to_f32(),
            fp16[c]
        );
    }
    create_refuses(
        "group-128-second-half-off",
        &p.bytes(),
        &["tensor \"blk.0.attn_v.weight\"", &scale_key(V)],
    );
}
