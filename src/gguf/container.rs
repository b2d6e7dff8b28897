//! The GGUF v3 container (llama.cpp `ggml/src/gguf.cpp`, gguf-py `gguf_writer.py`), written
//! only: the header (magic `GGUF`, version 3, tensor count, key-value count), typed metadata
//! key-values, tensor infos (name, dims with `ne[0]` the innermost, ggml type, offset), padding
//! to `general.alignment`, then each tensor's data padded to the alignment. Every number is
//! little-endian. This module knows nothing of bundles.

/// The file magic, `"GGUF"`.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The version written.
pub const VERSION: u32 = 3;
/// The alignment of the data section and of every tensor in it (`general.alignment`).
pub const ALIGNMENT: u64 = 32;

/// `GGMLQuantizationType::F32`.
pub const GGML_F32: u32 = 0;
/// `GGMLQuantizationType::F16`.
pub const GGML_F16: u32 = 1;

/// A metadata value (`GGUFValueType`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `UINT32` (4).
    U32(u32),
    /// `FLOAT32` (6).
    F32(f32),
    /// `BOOL` (7).
    Bool(bool),
    /// `STRING` (8).
    Str(String),
    /// `ARRAY` (9) of `STRING`.
    StrArray(Vec<String>),
    /// `ARRAY` (9) of `FLOAT32`.
    F32Array(Vec<f32>),
    /// `ARRAY` (9) of `INT32`.
    I32Array(Vec<i32>),
}

const T_INT32: u32 = 5;
const T_UINT32: u32 = 4;
const T_FLOAT32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

/// One tensor's entry: its name, `ne` (innermost first: a row-major `[rows, cols]` matrix is
/// `[cols, rows]`), ggml type and data size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The GGUF tensor name.
    pub name: String,
    /// Dimensions, innermost first.
    pub ne: Vec<u64>,
    /// `GGMLQuantizationType`.
    pub ggml_type: u32,
    /// Bytes of data.
    pub nbytes: u64,
}

/// `n` rounded up to the alignment.
pub fn pad(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    let array = |out: &mut Vec<u8>, ty: u32, n: usize| {
        out.extend_from_slice(&T_ARRAY.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(n as u64).to_le_bytes());
    };
    match v {
        Value::U32(x) => {
            out.extend_from_slice(&T_UINT32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::F32(x) => {
            out.extend_from_slice(&T_FLOAT32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Bool(x) => {
            out.extend_from_slice(&T_BOOL.to_le_bytes());
            out.push(u8::from(*x));
        }
        Value::Str(s) => {
            out.extend_from_slice(&T_STRING.to_le_bytes());
            put_str(out, s);
        }
        Value::StrArray(a) => {
            array(out, T_STRING, a.len());
            a.iter().for_each(|s| put_str(out, s));
        }
        Value::F32Array(a) => {
            array(out, T_FLOAT32, a.len());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::I32Array(a) => {
            array(out, T_INT32, a.len());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
    }
}

/// Everything before the data section: header, key-values in the given order, tensor infos
/// with their offsets (each tensor's data starts at an aligned offset from the data section),
/// and the padding to the alignment. Returns the bytes and each tensor's offset.
pub fn header(kvs: &[(String, Value)], tensors: &[TensorInfo]) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        put_str(&mut out, key);
        put_value(&mut out, value);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset += pad(t.nbytes);
    }
    out.resize(pad(out.len() as u64) as usize, 0);
    (out, offsets)
}
