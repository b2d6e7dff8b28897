//! The safetensors container (spec section "safetensors container", rules 3.2 to 3.6).
//!
//! Owns parsing and writing the header of a safetensors file: `u64` little-endian length `N`,
//! `N` bytes of JSON, then the data buffer. Parsing is a fixed pipeline (length, bounds, UTF-8,
//! JSON without duplicate keys, per-entry limits, exact tiling of the buffer), all with checked
//! arithmetic, and it never allocates more than the header's own size. It does not map or read
//! tensor data; [`crate::read`] does that once the header is proven consistent.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::{escape_name, excerpt, Error, Result, Violation};
use crate::format::limits::{MAX_ELEMENTS, MAX_FILE_TENSORS, MAX_HEADER_BYTES, MAX_RANK};
use crate::format::names::{name_problem, METADATA_KEY};
use crate::format::rules::Rule;

/// Element types of safetensors (rule 3.4 lists the accepted ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    F16,
    BF16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl Dtype {
    /// Every accepted dtype.
    pub const ALL: [Dtype; 13] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::U16,
        Dtype::I16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::U32,
        Dtype::I32,
        Dtype::F32,
        Dtype::U64,
        Dtype::I64,
        Dtype::F64,
    ];

    /// The name used in headers, e.g. `"F16"`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::U16 => "U16",
            Dtype::I16 => "I16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::U32 => "U32",
            Dtype::I32 => "I32",
            Dtype::F32 => "F32",
            Dtype::U64 => "U64",
            Dtype::I64 => "I64",
            Dtype::F64 => "F64",
        }
    }

    /// Parses a header dtype name.
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Element count of a shape: the checked product of its dimensions (1 for a scalar).
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Formats a shape as `[a, b]`.
pub fn shape_string(shape: &[u64]) -> String {
    format!("{shape:?}")
}

/// One tensor of a header, with its data range relative to the data buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, C order.
    pub shape: Vec<u64>,
    /// First byte, relative to the start of the data buffer.
    pub start: u64,
    /// One past the last byte, relative to the start of the data buffer.
    pub end: u64,
}

impl TensorEntry {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        element_count(&self.shape).unwrap_or(0)
    }

    /// Number of data bytes.
    pub fn byte_len(&self) -> u64 {
        self.end - self.start
    }
}

/// A validated safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `N`, the JSON header length.
    pub header_len: u64,
    /// Length of the data buffer (file size - 8 - N).
    pub data_len: u64,
    /// The `__metadata__` map, in file order.
    pub metadata: Vec<(String, String)>,
    /// Tensors in data order (ascending offsets).
    pub entries: Vec<TensorEntry>,
    index: HashMap<String, usize>,
}

impl Header {
    /// File offset of the data buffer: `8 + N`.
    pub fn data_start(&self) -> u64 {
        8 + self.header_len
    }

    /// Total file size the header describes.
    pub fn file_size(&self) -> u64 {
        self.data_start() + self.data_len
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    fn new(
        header_len: u64,
        data_len: u64,
        metadata: Vec<(String, String)>,
        entries: Vec<TensorEntry>,
    ) -> Self {
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Header {
            header_len,
            data_len,
            metadata,
            entries,
            index,
        }
    }
}

/// Reads and validates the header of `file` (size `file_size`) with positioned reads, touching
/// nothing beyond `8 + N` bytes (rules 3.2 to 3.6).
pub fn read_header(path: &Path, file: &File, file_size: u64) -> Result<Header> {
    let bad = |rule, expected: &str, found: String| Violation::new(path, rule, expected, found);
    if file_size < 8 {
        return Err(bad(
            Rule::HeaderLength,
            "at least 8 bytes (the header length)",
            format!("a file of {file_size} bytes"),
        )
        .into());
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact_at(&mut len_bytes, 0)
        .map_err(|e| Error::io(path, "read", e))?;
    let n = u64::from_le_bytes(len_bytes);
    check_header_len(path, n, file_size)?;
    let mut json = vec![0u8; n as usize];
    file.read_exact_at(&mut json, 8)
        .map_err(|e| Error::io(path, "read", e))?;
    parse_header(path, &json, file_size)
}

/// Parses a header from the first bytes of a file held in memory (`bytes` is the whole file).
pub fn parse_header_from_bytes(path: &Path, bytes: &[u8]) -> Result<Header> {
    let file_size = bytes.len() as u64;
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Violation::new(
                path,
                Rule::HeaderLength,
                "at least 8 bytes (the header length)",
                format!("a file of {file_size} bytes"),
            )
        })?;
    let n = u64::from_le_bytes(len_bytes);
    check_header_len(path, n, file_size)?;
    parse_header(path, &bytes[8..8 + n as usize], file_size)
}

fn check_header_len(path: &Path, n: u64, file_size: u64) -> Result<()> {
    if n > MAX_HEADER_BYTES {
        return Err(Violation::new(
            path,
            Rule::HeaderLength,
            format!("a header length of at most {MAX_HEADER_BYTES} bytes"),
            format!("{n}"),
        )
        .into());
    }
    match n.checked_add(8) {
        Some(end) if end <= file_size => Ok(()),
        _ => Err(Violation::new(
            path,
            Rule::HeaderLength,
            format!(
                "a header length of at most {} (file size - 8)",
                file_size - 8
            ),
            format!("{n}"),
        )
        .into()),
    }
}

/// Validates header JSON `json` of a file of `file_size` bytes (rules 3.3 to 3.6).
pub fn parse_header(path: &Path, json: &[u8], file_size: u64) -> Result<Header> {
    let n = json.len() as u64;
    let text = std::str::from_utf8(json).map_err(|e| {
        Violation::new(
            path,
            Rule::HeaderJson,
            "a UTF-8 JSON header",
            format!("invalid UTF-8 at header byte {}", e.valid_up_to()),
        )
    })?;
    let raw: RawHeader = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let (rule, msg) = match msg.strip_prefix(LIMIT_PREFIX) {
            Some(rest) => (Rule::HeaderEntries, rest.to_string()),
            None => (Rule::HeaderJson, msg),
        };
        Violation::new(path, rule, "a JSON object of tensor entries", msg)
    })?;
    let data_len = file_size - 8 - n;
    let mut entries = Vec::with_capacity(raw.entries.len());
    for (name, e) in raw.entries {
        let bad = |rule, expected: String, found: String| {
            Error::from(Violation::new(path, rule, expected, found).tensor(name.clone()))
        };
        if let Some(problem) = name_problem(&name) {
            return Err(bad(
                Rule::HeaderEntries,
                "a valid tensor name (rule 2.6)".into(),
                problem,
            ));
        }
        if e.shape.len() > MAX_RANK {
            return Err(bad(
                Rule::HeaderEntries,
                format!("a shape of rank at most {MAX_RANK}"),
                format!("rank above {MAX_RANK}"),
            ));
        }
        let dtype = Dtype::from_name(&e.dtype).ok_or_else(|| {
            bad(
                Rule::HeaderEntries,
                "a known dtype (BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64)"
                    .into(),
                excerpt(&e.dtype, 32),
            )
        })?;
        let elements = element_count(&e.shape)
            .filter(|&c| c <= MAX_ELEMENTS)
            .ok_or_else(|| {
                bad(
                    Rule::TensorByteLength,
                    format!("at most {MAX_ELEMENTS} elements"),
                    format!("shape {}", shape_string(&e.shape)),
                )
            })?;
        let [start, end] = e.data_offsets;
        let byte_len = elements * dtype.size(); // <= 2^43: cannot overflow
        if start > end || end - start != byte_len {
            return Err(bad(
                Rule::TensorByteLength,
                format!(
                    "data_offsets spanning {byte_len} bytes ({elements} x {dtype} for shape {})",
                    shape_string(&e.shape)
                ),
                format!("data_offsets [{start}, {end}]"),
            ));
        }
        entries.push(TensorEntry {
            name,
            dtype,
            shape: e.shape,
            start,
            end,
        });
    }
    // Rule 3.6: the data ranges tile [0, data_len) exactly. Zero-length tensors sort first
    // among equal starts so that they never hide a gap.
    entries.sort_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));
    let mut cursor = 0u64;
    for e in &entries {
        if e.start != cursor {
            let what = if e.start < cursor {
                "overlaps the previous tensor"
            } else {
                "leaves a gap"
            };
            return Err(Violation::new(
                path,
                Rule::DataOffsets,
                format!("data starting at offset {cursor}"),
                format!("data_offsets [{}, {}] ({what})", e.start, e.end),
            )
            .tensor(e.name.clone())
            .into());
        }
        cursor = e.end;
    }
    if cursor != data_len {
        return Err(Violation::new(
            path,
            Rule::DataOffsets,
            format!(
                "tensor data covering the {data_len}-byte data buffer (file size - 8 - header)"
            ),
            format!("tensor data ending at {cursor}"),
        )
        .into());
    }
    Ok(Header::new(n, data_len, raw.metadata, entries))
}

/// The canonical layout of this crate's writer: tensors sorted by element size (descending) then
/// by name (bytewise), data contiguous in that order, compact JSON with `__metadata__` first,
/// padded with spaces so the data buffer starts at a multiple of 8.
///
/// Returns the file prefix (8-byte length and header) and the parsed header.
pub fn plan_layout(
    tensors: Vec<(String, Dtype, Vec<u64>)>,
    metadata: &[(String, String)],
) -> Result<(Vec<u8>, Header)> {
    let mut tensors = tensors;
    tensors.sort_by(|a, b| {
        b.1.size()
            .cmp(&a.1.size())
            .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
    });
    let mut entries = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let bytes = element_count(&shape)
            .and_then(|c| c.checked_mul(dtype.size()))
            .filter(|_| element_count(&shape).is_some_and(|c| c <= MAX_ELEMENTS))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "tensor {}: shape {} exceeds {MAX_ELEMENTS} elements",
                    escape_name(&name),
                    shape_string(&shape)
                ))
            })?;
        let end = offset + bytes;
        entries.push(TensorEntry {
            name,
            dtype,
            shape,
            start: offset,
            end,
        });
        offset = end;
    }
    let mut json = String::from("{");
    let mut first = true;
    let mut sep = |json: &mut String| {
        if !first {
            json.push(',');
        }
        first = false;
    };
    let quote = |s: &str| serde_json::to_string(s).expect("strings always serialize");
    if !metadata.is_empty() {
        sep(&mut json);
        json.push_str(&quote(METADATA_KEY));
        json.push_str(":{");
        for (i, (k, v)) in metadata.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!("{}:{}", quote(k), quote(v)));
        }
        json.push('}');
    }
    for e in &entries {
        sep(&mut json);
        let dims: Vec<String> = e.shape.iter().map(u64::to_string).collect();
        json.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            quote(&e.name),
            e.dtype,
            dims.join(","),
            e.start,
            e.end
        ));
    }
    json.push('}');
    while (8 + json.len()) % 8 != 0 {
        json.push(' ');
    }
    let n = json.len() as u64;
    let mut prefix = Vec::with_capacity(8 + json.len());
    prefix.extend_from_slice(&n.to_le_bytes());
    prefix.extend_from_slice(json.as_bytes());
    Ok((prefix, Header::new(n, offset, metadata.to_vec(), entries)))
}

// ---- JSON parsing with duplicate-key detection and limits checked while parsing ----

/// Marks serde errors that come from a limit (rule 3.4) rather than from JSON syntax (3.3).
const LIMIT_PREFIX: &str = "limit: ";

struct RawHeader {
    entries: Vec<(String, RawEntry)>,
    metadata: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    #[serde(deserialize_with = "bounded_shape")]
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Deserializes a shape, storing at most `MAX_RANK + 1` dimensions (enough for the rank rule
/// to report the problem) however long the JSON array is, so a hostile shape cannot make the
/// parser allocate. Shared by the manifest (rule 2.7) and safetensors headers (rule 3.4).
pub(crate) fn bounded_shape<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<u64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of non-negative integers")
        }
        fn visit_seq<A: SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Vec<u64>, A::Error> {
            let mut dims = Vec::new();
            while let Some(d) = seq.next_element::<u64>()? {
                if dims.len() <= MAX_RANK {
                    dims.push(d);
                }
            }
            Ok(dims)
        }
    }
    d.deserialize_seq(V)
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawHeader, A::Error> {
                let mut entries: Vec<(String, RawEntry)> = Vec::new();
                let mut metadata = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == METADATA_KEY {
                        if metadata.is_some() {
                            return Err(de::Error::custom("duplicate key \"__metadata__\""));
                        }
                        metadata = Some(map.next_value::<StringMap>()?.0);
                    } else {
                        if entries.len() == MAX_FILE_TENSORS {
                            return Err(de::Error::custom(format_args!(
                                "{LIMIT_PREFIX}more than {MAX_FILE_TENSORS} tensors"
                            )));
                        }
                        let entry = map.next_value::<RawEntry>()?;
                        entries.push((key, entry));
                    }
                }
                // Duplicate tensor names, found by sorting references instead of keeping a
                // second copy of every name.
                let mut names: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
                names.sort_unstable();
                if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                    return Err(de::Error::custom(format_args!(
                        "duplicate key {}",
                        excerpt(w[0], 64)
                    )));
                }
                Ok(RawHeader {
                    entries,
                    metadata: metadata.unwrap_or_default(),
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object of string values without duplicate keys (`__metadata__`).
struct StringMap(Vec<(String, String)>);

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object mapping strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<StringMap, A::Error> {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if !seen.insert(k.clone()) {
                        return Err(de::Error::custom(format_args!(
                            "duplicate __metadata__ key {}",
                            excerpt(&k, 64)
                        )));
                    }
                    out.push((k, v));
                }
                Ok(StringMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(json: &str, data_len: usize) -> Vec<u8> {
        let mut v = (json.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data_len));
        v
    }

    fn rule_of(json: &str, data_len: usize) -> Rule {
        parse_header_from_bytes(Path::new("t.safetensors"), &file_bytes(json, data_len))
            .unwrap_err()
            .rule()
            .unwrap()
    }

    #[test]
    fn canonical_layout_parses_back_identically() {
        let (prefix, planned) = plan_layout(
            vec![
                ("b".into(), Dtype::U8, vec![3]),
                ("a".into(), Dtype::F32, vec![2]),
            ],
            &[("format".into(), "pt".into())],
        )
        .unwrap();
        assert_eq!(prefix.len() % 8, 0);
        let mut bytes = prefix.clone();
        bytes.extend([0u8; 11]);
        let parsed = parse_header_from_bytes(Path::new("x"), &bytes).unwrap();
        assert_eq!(parsed, planned);
        assert_eq!(parsed.entries[0].name, "a"); // F32 before U8
    }

    #[test]
    fn rule_3_3_duplicate_keys_are_refused() {
        let j = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
        assert_eq!(rule_of(j, 1), Rule::HeaderJson);
    }

    #[test]
    fn rule_3_4_rank_and_dtype_limits() {
        let j = r#"{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}"#;
        assert_eq!(rule_of(j, 1), Rule::HeaderEntries);
        let j = r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#;
        assert_eq!(rule_of(j, 1), Rule::HeaderEntries);
    }

    #[test]
    fn rule_3_5_overflowing_shape_is_refused() {
        let j = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#;
        assert_eq!(rule_of(j, 4), Rule::TensorByteLength);
    }

    #[test]
    fn rule_3_6_gaps_overlaps_and_trailing_bytes() {
        let two = |a: (u64, u64), b: (u64, u64)| {
            format!(
                r#"{{"a":{{"dtype":"U8","shape":[2],"data_offsets":[{},{}]}},"b":{{"dtype":"U8","shape":[2],"data_offsets":[{},{}]}}}}"#,
                a.0, a.1, b.0, b.1
            )
        };
        assert_eq!(rule_of(&two((0, 2), (1, 3)), 3), Rule::DataOffsets);
        assert_eq!(rule_of(&two((0, 2), (3, 5)), 5), Rule::DataOffsets);
        assert_eq!(rule_of(&two((0, 2), (2, 4)), 5), Rule::DataOffsets);
    }

    #[test]
    fn rule_3_2_header_length_beyond_file() {
        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let e = parse_header_from_bytes(Path::new("x"), &bytes).unwrap_err();
        assert_eq!(e.rule(), Some(Rule::HeaderLength));
        let e = parse_header_from_bytes(Path::new("x"), &[1, 2]).unwrap_err();
        assert_eq!(e.rule(), Some(Rule::HeaderLength));
    }
}
