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

/// A metadata value (`GGUFValueType`): what the writer emits and the reader returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `UINT8` (0).
    U8(u8),
    /// `INT8` (1).
    I8(i8),
    /// `UINT16` (2).
    U16(u16),
    /// `INT16` (3).
    I16(i16),
    /// `UINT32` (4).
    U32(u32),
    /// `INT32` (5).
    I32(i32),
    /// `FLOAT32` (6).
    F32(f32),
    /// `BOOL` (7).
    Bool(bool),
    /// `STRING` (8): UTF-8, length-prefixed.
    Str(String),
    /// `ARRAY` (9) of one scalar or string type (arrays of arrays are not read, rule 8.4).
    Array(Array),
    /// `UINT64` (10).
    U64(u64),
    /// `INT64` (11).
    I64(i64),
    /// `FLOAT64` (12).
    F64(f64),
}

/// The elements of an `ARRAY` value, by element type.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// `UINT8` elements.
    U8(Vec<u8>),
    /// `INT8` elements.
    I8(Vec<i8>),
    /// `UINT16` elements.
    U16(Vec<u16>),
    /// `INT16` elements.
    I16(Vec<i16>),
    /// `UINT32` elements.
    U32(Vec<u32>),
    /// `INT32` elements.
    I32(Vec<i32>),
    /// `FLOAT32` elements.
    F32(Vec<f32>),
    /// `BOOL` elements.
    Bool(Vec<bool>),
    /// `STRING` elements.
    Str(Vec<String>),
    /// `UINT64` elements.
    U64(Vec<u64>),
    /// `INT64` elements.
    I64(Vec<i64>),
    /// `FLOAT64` elements.
    F64(Vec<f64>),
}

impl Value {
    /// The value as an unsigned integer, if it is one of the integer types and not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is `FLOAT32` or `FLOAT64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string, if it is `STRING`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value for a message: its type and contents (`UINT32 64`, `STRING "row"`, an array
    /// by its type and length), strings escaped.
    pub fn show(&self) -> String {
        let body = match self {
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Array(a) => format!("of {} elements", a.len()),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
        };
        format!("{} {body}", self.type_name())
    }

    /// The GGUF name of the value's type (`"UINT32"`, `"ARRAY[STRING]"`), for messages.
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => format!("ARRAY[{}]", TYPE_NAMES[a.element_type() as usize]),
            other => TYPE_NAMES[other.type_id() as usize].to_string(),
        }
    }

    /// The `GGUFValueType` number.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => T_UINT8,
            Value::I8(_) => T_INT8,
            Value::U16(_) => T_UINT16,
            Value::I16(_) => T_INT16,
            Value::U32(_) => T_UINT32,
            Value::I32(_) => T_INT32,
            Value::F32(_) => T_FLOAT32,
            Value::Bool(_) => T_BOOL,
            Value::Str(_) => T_STRING,
            Value::Array(_) => T_ARRAY,
            Value::U64(_) => T_UINT64,
            Value::I64(_) => T_INT64,
            Value::F64(_) => T_FLOAT64,
        }
    }
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `GGUFValueType` of its elements.
    pub fn element_type(&self) -> u32 {
        match self {
            Array::U8(_) => T_UINT8,
            Array::I8(_) => T_INT8,
            Array::U16(_) => T_UINT16,
            Array::I16(_) => T_INT16,
            Array::U32(_) => T_UINT32,
            Array::I32(_) => T_INT32,
            Array::F32(_) => T_FLOAT32,
            Array::Bool(_) => T_BOOL,
            Array::Str(_) => T_STRING,
            Array::U64(_) => T_UINT64,
            Array::I64(_) => T_INT64,
            Array::F64(_) => T_FLOAT64,
        }
    }
}

/// `GGUFValueType::UINT8`.
pub const T_UINT8: u32 = 0;
/// `GGUFValueType::INT8`.
pub const T_INT8: u32 = 1;
/// `GGUFValueType::UINT16`.
pub const T_UINT16: u32 = 2;
/// `GGUFValueType::INT16`.
pub const T_INT16: u32 = 3;
/// `GGUFValueType::UINT32`.
pub const T_UINT32: u32 = 4;
/// `GGUFValueType::INT32`.
pub const T_INT32: u32 = 5;
/// `GGUFValueType::FLOAT32`.
pub const T_FLOAT32: u32 = 6;
/// `GGUFValueType::BOOL`.
pub const T_BOOL: u32 = 7;
/// `GGUFValueType::STRING`.
pub const T_STRING: u32 = 8;
/// `GGUFValueType::ARRAY`.
pub const T_ARRAY: u32 = 9;
/// `GGUFValueType::UINT64`.
pub const T_UINT64: u32 = 10;
/// `GGUFValueType::INT64`.
pub const T_INT64: u32 = 11;
/// `GGUFValueType::FLOAT64`.
pub const T_FLOAT64: u32 = 12;

/// The names of the value types 0 to 12, as gguf-py spells them.
pub const TYPE_NAMES: [&str; 13] = [
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY",
    "UINT64", "INT64", "FLOAT64",
];

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

impl TensorInfo {
    /// A tensor entry.
    pub fn new(name: &str, ne: &[u64], ggml_type: u32, nbytes: u64) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            ne: ne.to_vec(),
            ggml_type,
            nbytes,
        }
    }
}

/// A whole GGUF file in memory from its parts: each tensor's info with its bytes (`nbytes` taken
/// from them), in order, each padded to the alignment. For small files (tests, fuzz seeds,
/// rewriting a file's keys); the export streams instead.
pub fn file_bytes(kvs: &[(String, Value)], tensors: &[(TensorInfo, &[u8])]) -> Vec<u8> {
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .map(|(i, d)| TensorInfo {
            nbytes: d.len() as u64,
            ..i.clone()
        })
        .collect();
    let (mut out, _) = header(kvs, &infos);
    for (_, data) in tensors {
        out.extend_from_slice(data);
        out.resize(
            out.len() + (pad(data.len() as u64) - data.len() as u64) as usize,
            0,
        );
    }
    out
}

/// [`file_bytes`] with every tensor's data zero bytes: a file to probe a reader's header checks
/// with (tests, fuzz seeds).
pub fn zeroed_file(kvs: &[(String, Value)], tensors: &[TensorInfo]) -> Vec<u8> {
    let zeros: Vec<Vec<u8>> = tensors.iter().map(|t| vec![0; t.nbytes as usize]).collect();
    let parts: Vec<(TensorInfo, &[u8])> = tensors
        .iter()
        .cloned()
        .zip(zeros.iter().map(Vec::as_slice))
        .collect();
    file_bytes(kvs, &parts)
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
    out.extend_from_slice(&v.type_id().to_le_bytes());
    match v {
        Value::Array(a) => {
            out.extend_from_slice(&a.element_type().to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            put_array(out, a);
        }
        scalar => put_scalar(out, scalar),
    }
}

/// The bytes of a scalar or string value (without its type).
fn put_scalar(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::Str(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    macro_rules! each {
        ($v:expr) => {
            $v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::Bool(v) => v.iter().for_each(|&b| out.push(u8::from(b))),
        Array::Str(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
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
