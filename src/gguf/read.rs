//! Reading a GGUF file (spec section 18.6, rules 8.4 and 8.5): untrusted input. The header is
//! parsed from a byte slice with every length, count and offset checked before it is used
//! (checked arithmetic, limits of section 12), so that a hostile file gives an error naming
//! the rule, the key or tensor, and what was expected versus found, in time and memory bounded
//! by the file's size. The tensor data are then borrowed from the memory map, never copied.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{escape_name, Error, Result, Violation};
use crate::format::rules::Rule;
use crate::gguf::container::{Array, Value, MAGIC, TYPE_NAMES};
use crate::gguf::types::{type_name, GgmlType};
use crate::read::mmap::{self, Backing, FileBytes};

/// The most tensors a file may declare (section 12).
pub const MAX_TENSORS: u64 = 65_536;
/// The most metadata key-values a file may declare (section 12).
pub const MAX_KVS: u64 = 65_536;
/// The most array elements in all key-values together (section 12): a tokenizer of 262,144
/// tokens with as many scores and types and a million merges takes about 1.8 million.
pub const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;
/// The longest key (bytes), as gguf-py and llama.cpp bound it.
pub const MAX_KEY_BYTES: u64 = 65_535;
/// The longest tensor name (bytes): ggml's `GGML_MAX_NAME` less its terminating zero.
pub const MAX_NAME_BYTES: u64 = 63;
/// The most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// The most elements of one tensor (section 12's bound for a bundle tensor).
pub const MAX_ELEMENTS: u64 = 1 << 40;
/// The default `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor's info, checked: its name, dimensions (innermost first), type, and where its
/// bytes are (relative to the start of the data section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    /// The GGUF tensor name.
    pub name: String,
    /// Dimensions, `ne[0]` the innermost (a row-major `[rows, cols]` matrix is `[cols, rows]`).
    pub ne: Vec<u64>,
    /// Its type.
    pub ggml_type: GgmlType,
    /// Offset of its bytes from the start of the data section.
    pub offset: u64,
    /// Its size in bytes ([`GgmlType::nbytes`]).
    pub nbytes: u64,
}

impl GgufTensor {
    /// The number of values.
    pub fn elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// The row-major shape (outermost first), as a bundle names shapes.
    pub fn shape(&self) -> Vec<u64> {
        self.ne.iter().rev().copied().collect()
    }
}

/// A parsed header: the version, the key-values in file order, the tensor infos in file order
/// and where the data section starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// The key-values, in file order (keys unique).
    pub kvs: Vec<(String, Value)>,
    /// The tensors, in file order (names unique, data in bounds and disjoint).
    pub tensors: Vec<GgufTensor>,
    /// Byte offset of the data section in the file.
    pub data_start: u64,
    /// The alignment (`general.alignment`, default 32).
    pub alignment: u64,
}

impl Header {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kvs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Parses the header of the file whose bytes are `bytes` (`path` names it in errors), and
    /// checks every tensor's data range against the file (rules 8.4, 8.5).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
        Parser {
            path,
            bytes,
            at: 0,
            elements: 0,
        }
        .header()
    }
}

/// A GGUF file: its checked header and its bytes, memory-mapped.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    header: Header,
    bytes: FileBytes,
}

impl GgufFile {
    /// Opens, maps and parses the GGUF file at `path` (rules 8.4 and 8.5).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        let meta = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
        if !meta.is_file() {
            return Err(Error::InvalidArgument(format!(
                "{}: not a regular file: expected a GGUF file",
                path.display()
            )));
        }
        let bytes = mmap::load(&file, meta.len(), &path, Backing::Map)?;
        let header = Header::parse(&path, &bytes)?;
        Ok(GgufFile {
            path,
            header,
            bytes,
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The bytes of tensor `t` (one of this file's tensors: its range was checked).
    pub fn data(&self, t: &GgufTensor) -> &[u8] {
        let start = (self.header.data_start + t.offset) as usize;
        &self.bytes[start..start + t.nbytes as usize]
    }

    /// Tells the kernel the process is done with `part` for now (see [`FileBytes::release`]).
    pub fn release(&self, part: &[u8]) {
        self.bytes.release(part);
    }

    /// The SHA-256 of the file's bytes as 64 lowercase hex digits.
    pub fn sha256(&self) -> String {
        crate::format::checksum::sha256_hex_blocks(&self.bytes, |b| self.bytes.release(b))
    }
}

/// A cursor over the header bytes.
struct Parser<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    at: usize,
    /// Array elements read so far (bounded by [`MAX_ARRAY_ELEMENTS`]).
    elements: u64,
}

impl<'a> Parser<'a> {
    fn fail(&self, expected: impl Into<String>, found: impl Into<String>) -> Error {
        Violation::new(self.path, Rule::GgufContainer, expected, found).into()
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(self.fail(
                format!("{n} bytes of {what} at byte {}", self.at),
                format!("{} bytes left in the file", self.remaining()),
            ));
        }
        let s = &self.bytes[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    fn string(&mut self, what: &str, max: u64) -> Result<String> {
        let at = self.at;
        let len = self.u64(what)?;
        if len > max {
            return Err(self.fail(
                format!("{what} of at most {max} bytes"),
                format!("a length of {len} at byte {at}"),
            ));
        }
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| {
            self.fail(
                format!("{what} in UTF-8"),
                format!("invalid UTF-8 at byte {at}"),
            )
        })
    }

    fn header(mut self) -> Result<Header> {
        let magic = self.array::<4>("the magic")?;
        if &magic != MAGIC {
            return Err(self.fail(
                "the magic \"GGUF\" (a GGUF file)",
                format!("{:02x?}", magic),
            ));
        }
        let version = self.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(self.fail("GGUF version 2 or 3", format!("version {version}")));
        }
        let n_tensors = self.u64("the tensor count")?;
        let n_kvs = self.u64("the key-value count")?;
        if n_tensors > MAX_TENSORS {
            return Err(self.fail(
                format!("at most {MAX_TENSORS} tensors (section 12)"),
                format!("{n_tensors}"),
            ));
        }
        if n_kvs > MAX_KVS {
            return Err(self.fail(
                format!("at most {MAX_KVS} key-values (section 12)"),
                format!("{n_kvs}"),
            ));
        }
        let mut kvs: Vec<(String, Value)> = Vec::new();
        let mut keys = HashSet::new();
        for _ in 0..n_kvs {
            let key = self.string("a key", MAX_KEY_BYTES)?;
            if key.is_empty() {
                return Err(self.fail("a non-empty key", "an empty key"));
            }
            let ty = self.u32("a value type")?;
            let value = self
                .value(ty)
                .map_err(|e| with_context(e, &format!("key {}", escape_name(&key))))?;
            if !keys.insert(key.clone()) {
                return Err(self.fail("unique keys", format!("key {} twice", escape_name(&key))));
            }
            kvs.push((key, value));
        }
        let alignment = match kvs.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, v)) => {
                return Err(self.fail("general.alignment a UINT32 power of two", v.show()))
            }
        };
        let mut tensors: Vec<GgufTensor> = Vec::new();
        let mut names = HashSet::new();
        for i in 0..n_tensors {
            let name = self.string(&format!("the name of tensor {i}"), MAX_NAME_BYTES)?;
            let tensor_err = |p: &Self, expected: String, found: String| -> Error {
                Violation::new(p.path, Rule::GgufContainer, expected, found)
                    .tensor(&name)
                    .into()
            };
            if name.is_empty() {
                return Err(tensor_err(
                    &self,
                    "a non-empty tensor name".into(),
                    "\"\"".into(),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(tensor_err(
                    &self,
                    "unique tensor names".into(),
                    "a second tensor of this name".into(),
                ));
            }
            let n_dims = self.u32("a dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(tensor_err(
                    &self,
                    format!("1 to {MAX_DIMS} dimensions"),
                    format!("{n_dims}"),
                ));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(self.u64("a dimension")?);
            }
            let elements = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            if ne.contains(&0) || !matches!(elements, Some(n) if n <= MAX_ELEMENTS) {
                return Err(tensor_err(
                    &self,
                    format!("dimensions >= 1 of at most {MAX_ELEMENTS} elements (section 12)"),
                    format!("{ne:?}"),
                ));
            }
            let type_id = self.u32("a tensor type")?;
            let offset = self.u64("a tensor offset")?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| -> Error {
                Violation::new(
                    self.path,
                    Rule::GgufTensor,
                    "F32, F16, BF16, TQ1_0, TQ2_0 or I2_S (the others are not ternary: a bundle does not re-quantize)",
                    format!("type {} ({type_id})", type_name(type_id)),
                )
                .tensor(&name)
                .into()
            })?;
            let nbytes = ggml_type.nbytes(&ne).map_err(|m| -> Error {
                Violation::new(self.path, Rule::GgufTensor, m, format!("dimensions {ne:?}"))
                    .tensor(&name)
                    .into()
            })?;
            if offset % alignment != 0 {
                return Err(tensor_err(
                    &self,
                    format!("an offset that is a multiple of the alignment {alignment}"),
                    format!("offset {offset}"),
                ));
            }
            tensors.push(GgufTensor {
                name,
                ne,
                ggml_type,
                offset,
                nbytes,
            });
        }
        let data_start = (self.at as u64).div_ceil(alignment) * alignment;
        let data_len = (self.bytes.len() as u64).saturating_sub(data_start);
        if n_tensors > 0 && data_start > self.bytes.len() as u64 {
            return Err(self.fail(
                format!("the data section at byte {data_start}"),
                format!("a file of {} bytes", self.bytes.len()),
            ));
        }
        let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(tensors.len());
        for t in &tensors {
            let end = t.offset.checked_add(t.nbytes);
            if !matches!(end, Some(e) if e <= data_len) {
                return Err(Violation::new(
                    self.path,
                    Rule::GgufContainer,
                    format!(
                        "{} bytes of data at offset {} within the data section of {data_len} bytes",
                        t.nbytes, t.offset
                    ),
                    "data past the end of the file (truncated?)",
                )
                .tensor(&t.name)
                .into());
            }
            ranges.push((t.offset, t.offset + t.nbytes, &t.name));
        }
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(Violation::new(
                    self.path,
                    Rule::GgufContainer,
                    "tensor data that do not overlap",
                    format!("its data overlap those of {}", escape_name(w[0].2)),
                )
                .tensor(w[1].2)
                .into());
            }
        }
        Ok(Header {
            version,
            kvs,
            tensors,
            data_start,
            alignment,
        })
    }

    /// A value of type `ty`.
    fn value(&mut self, ty: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>("a UINT8")?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array("an INT8")?)),
            2 => Value::U16(u16::from_le_bytes(self.array("a UINT16")?)),
            3 => Value::I16(i16::from_le_bytes(self.array("an INT16")?)),
            4 => Value::U32(self.u32("a UINT32")?),
            5 => Value::I32(i32::from_le_bytes(self.array("an INT32")?)),
            6 => Value::F32(f32::from_le_bytes(self.array("a FLOAT32")?)),
            7 => Value::Bool(self.bool()?),
            8 => Value::Str(self.string("a string", u64::MAX)?),
            9 => Value::Array(self.array_value()?),
            10 => Value::U64(self.u64("a UINT64")?),
            11 => Value::I64(i64::from_le_bytes(self.array("an INT64")?)),
            12 => Value::F64(f64::from_le_bytes(self.array("a FLOAT64")?)),
            other => return Err(self.fail("a value type from 0 to 12", format!("type {other}"))),
        })
    }

    fn bool(&mut self) -> Result<bool> {
        match self.array::<1>("a BOOL")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.fail("a BOOL of 0 or 1", format!("{b}"))),
        }
    }

    fn array_value(&mut self) -> Result<Array> {
        let ty = self.u32("an array's element type")?;
        let n = self.u64("an array's length")?;
        let size: u64 = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => 8, // at least its length prefix
            10..=12 => 8,
            9 => return Err(self.fail("an array of scalars or strings", "an array of arrays")),
            other => {
                return Err(self.fail(
                    "an array element type from 0 to 12",
                    format!("type {other}"),
                ))
            }
        };
        let total = self.elements.checked_add(n);
        if !matches!(total, Some(t) if t <= MAX_ARRAY_ELEMENTS) {
            return Err(self.fail(
                format!("at most {MAX_ARRAY_ELEMENTS} array elements in all (section 12)"),
                format!(
                    "an array of {n} {} after {}",
                    TYPE_NAMES[ty as usize], self.elements
                ),
            ));
        }
        if n.checked_mul(size)
            .is_none_or(|b| b > self.remaining() as u64)
        {
            return Err(self.fail(
                format!(
                    "{n} elements of {} within the file",
                    TYPE_NAMES[ty as usize]
                ),
                format!("{} bytes left", self.remaining()),
            ));
        }
        self.elements += n;
        let n = n as usize;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let raw = self.take((n * std::mem::size_of::<$t>()) as u64, "array elements")?;
                Array::$variant(
                    raw.chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            0 => Array::U8(self.take(n as u64, "array elements")?.to_vec()),
            1 => fixed!(I8, i8),
            2 => fixed!(U16, u16),
            3 => fixed!(I16, i16),
            4 => fixed!(U32, u32),
            5 => fixed!(I32, i32),
            6 => fixed!(F32, f32),
            7 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool()?);
                }
                Array::Bool(v)
            }
            8 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string("an array string", u64::MAX)?);
                }
                Array::Str(v)
            }
            10 => fixed!(U64, u64),
            11 => fixed!(I64, i64),
            _ => fixed!(F64, f64),
        })
    }
}

/// `e` with `context` added to what it found (the key being read).
fn with_context(e: Error, context: &str) -> Error {
    match e {
        Error::Invalid(mut v) => {
            v.found = format!("{} (in {context})", v.found);
            Error::Invalid(v)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::container::{header, zeroed_file, TensorInfo};

    fn file(kvs: &[(String, Value)], tensors: &[TensorInfo]) -> Vec<u8> {
        zeroed_file(kvs, tensors)
    }

    fn info(name: &str, ne: &[u64], ty: u32, nbytes: u64) -> TensorInfo {
        TensorInfo::new(name, ne, ty, nbytes)
    }

    fn rule_of(bytes: &[u8]) -> Rule {
        Header::parse(Path::new("t.gguf"), bytes)
            .unwrap_err()
            .rule()
            .expect("a rule violation")
    }

    #[test]
    fn reads_back_what_the_writer_writes() {
        let kvs = vec![
            (
                "general.architecture".to_string(),
                Value::Str("llama".into()),
            ),
            ("a.n".to_string(), Value::U32(7)),
            (
                "a.list".to_string(),
                Value::Array(Array::Str(vec!["x".into(), "yz".into()])),
            ),
            ("a.f".to_string(), Value::Array(Array::F32(vec![1.5, -2.0]))),
            ("a.b".to_string(), Value::Bool(true)),
            ("a.big".to_string(), Value::U64(1 << 40)),
        ];
        let tensors = vec![
            info("w", &[256, 2], 34, 2 * 54),
            info("n", &[5], 0, 20),
            info("s", &[128, 1], 36, 32 + 32),
        ];
        let bytes = file(&kvs, &tensors);
        let h = Header::parse(Path::new("t.gguf"), &bytes).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.kvs, kvs);
        assert_eq!(h.tensors.len(), 3);
        assert_eq!(h.tensors[0].ggml_type, GgmlType::Tq1_0);
        assert_eq!(h.tensors[0].shape(), vec![2, 256]);
        assert_eq!(h.tensors[1].offset, 128);
        assert_eq!(h.tensors[2].nbytes, 64);
        assert_eq!(h.data_start % 32, 0);
    }

    #[test]
    fn refuses_hostile_headers_with_the_rule() {
        let good = file(&[], &[info("n", &[4], 0, 16)]);
        // Truncated anywhere before the end of the data (the last 16 bytes are padding): a
        // clean error.
        for cut in 0..good.len() - 16 {
            let e = Header::parse(Path::new("t.gguf"), &good[..cut]);
            assert!(e.is_err(), "cut at {cut} accepted");
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(rule_of(&bad), Rule::GgufContainer);
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(rule_of(&bad), Rule::GgufContainer);
        // 10^9 tensors, 10^9 key-values.
        let mut bad = good.clone();
        bad[8..16].copy_from_slice(&1_000_000_000u64.to_le_bytes());
        assert_eq!(rule_of(&bad), Rule::GgufContainer);
        let mut bad = good.clone();
        bad[16..24].copy_from_slice(&1_000_000_000u64.to_le_bytes());
        assert_eq!(rule_of(&bad), Rule::GgufContainer);
        // Unknown tensor type, quantized type, type not dividing its rows.
        for (ty, ne, rule) in [
            (12u32, vec![256u64, 1], Rule::GgufTensor),
            (99, vec![4], Rule::GgufTensor),
            (34, vec![96, 2], Rule::GgufTensor),
        ] {
            let bytes = file(&[], &[info("t", &ne, ty, 256)]);
            assert_eq!(rule_of(&bytes), rule, "type {ty}");
        }
        // Duplicate names and duplicate keys.
        let dup = file(&[], &[info("a", &[4], 0, 16), info("a", &[4], 0, 16)]);
        assert_eq!(rule_of(&dup), Rule::GgufContainer);
        let kv = ("k".to_string(), Value::U32(1));
        assert_eq!(rule_of(&file(&[kv.clone(), kv], &[])), Rule::GgufContainer);
        // A string longer than the file.
        let mut bad = file(&[("k".to_string(), Value::Str("abc".into()))], &[]);
        let at = 24 + 8 + 1 + 4;
        bad[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert_eq!(rule_of(&bad), Rule::GgufContainer);
        // An array claiming 10^12 elements.
        let mut bad = file(&[("k".to_string(), Value::Array(Array::U32(vec![1])))], &[]);
        let at = 24 + 8 + 1 + 4 + 4;
        bad[at..at + 8].copy_from_slice(&1_000_000_000_000u64.to_le_bytes());
        assert_eq!(rule_of(&bad), Rule::GgufContainer);
        // Data past the end of the file.
        let mut short = good.clone();
        short.truncate(short.len() - 17);
        assert_eq!(rule_of(&short), Rule::GgufContainer);
    }

    #[test]
    fn refuses_overlapping_and_misaligned_data() {
        let (mut bytes, _) = header(&[], &[info("a", &[8], 0, 32), info("b", &[8], 0, 32)]);
        // Point b's offset (the last 8 bytes of its info, before the padding) at a's data.
        let pos = bytes
            .windows(1 + 8)
            .rposition(|w| w[0] == b'b')
            .expect("name b");
        let off = pos + 1 + 4 + 8 + 4;
        bytes[off..off + 8].copy_from_slice(&0u64.to_le_bytes());
        bytes.resize(bytes.len() + 64, 0);
        assert_eq!(rule_of(&bytes), Rule::GgufContainer);
        bytes[off..off + 8].copy_from_slice(&8u64.to_le_bytes());
        assert_eq!(rule_of(&bytes), Rule::GgufContainer);
    }
}
