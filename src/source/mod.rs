//! Where the writer gets weights from: a safetensors checkpoint (F32, F16 or BF16, rule 8.2)
//! or tensors held in memory. Sources hand out one tensor at a time as f32, so the writer's
//! memory is bounded by the largest tensor, not by the model.

pub mod given;
pub mod hf;
pub mod memory;
pub mod quantization_metadata;
pub mod ternarized;

pub use memory::{BorrowedSource, MemorySource};

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Violation};
use crate::format::le;
use crate::format::rules::Rule;
use crate::format::safetensors::{read_header, shape_string, Dtype, Header};
use crate::read::mmap::{self, Backing, FileBytes};

/// Name and shape of a source tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTensor {
    /// Tensor name.
    pub name: String,
    /// Shape, C order.
    pub shape: Vec<u64>,
    /// Element type in the source.
    pub dtype: Dtype,
}

/// A provider of named f32 tensors.
pub trait TensorSource: Sync {
    /// Where the tensors come from (named in errors).
    fn path(&self) -> &Path;
    /// Every tensor the source holds.
    fn tensors(&self) -> Vec<SourceTensor>;
    /// The values of tensor `name`, converted exactly to f32.
    fn load_f32(&self, name: &str) -> Result<Vec<f32>>;
    /// The SHA-256 of the source's bytes as 64 lowercase hex digits, when it has bytes (a file).
    fn sha256(&self) -> Option<String> {
        None
    }
    /// The trits and scales of tensor `name` when the source already holds it ternary (spec
    /// section 7.1: they are bundled as given, not quantized); `None` when it holds real values.
    fn given(&self, name: &str) -> Result<Option<given::GivenTensor>> {
        let _ = name;
        Ok(None)
    }
}

/// A safetensors checkpoint file, memory-mapped after its header is validated.
#[derive(Debug)]
pub struct CheckpointSource {
    path: PathBuf,
    header: Header,
    bytes: FileBytes,
}

impl CheckpointSource {
    /// Opens and validates (the safetensors rules 3.2 to 3.6) the checkpoint at `path`. A
    /// directory, or a file that is not safetensors, is refused in those words.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        let meta = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            };
            return Err(Error::InvalidArgument(format!(
                "{}: {what}, not a checkpoint: expected a safetensors file of F32, F16 or BF16 tensors",
                path.display()
            )));
        }
        let pickle = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("pt" | "pth" | "bin" | "ckpt" | "pkl")
        );
        let header = read_header(&path, &file, meta.len()).map_err(|e| match e {
            Error::Invalid(v) if pickle => Error::InvalidArgument(format!(
                "not a safetensors checkpoint: {v}; a PyTorch pickle is not read (loading one runs its code): convert it once with safetensors.torch.save_file(torch.load(path, weights_only=True), \"model.safetensors\")"
            )),
            Error::Invalid(v) => {
                Error::InvalidArgument(format!("not a safetensors checkpoint: {v}"))
            }
            other => other,
        })?;
        let bytes = mmap::load(&file, meta.len(), &path, Backing::Map)?;
        Ok(CheckpointSource {
            path,
            header,
            bytes,
        })
    }

    /// SHA-256 of the checkpoint's bytes as they were read (the file is not opened again, so
    /// the digest is of exactly what was quantized).
    pub fn sha256(&self) -> String {
        crate::format::checksum::sha256_hex_blocks(&self.bytes, |b| self.bytes.release(b))
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The raw data bytes of tensor `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        let e = self.header.get(name)?;
        let start = (self.header.data_start() + e.start) as usize;
        self.bytes.get(start..start + e.byte_len() as usize)
    }
}

/// A source whose tensors can be read as stored, whatever their dtype: what readers of
/// already-ternary sources (integer trits, packed bytes) need beneath [`TensorSource`].
pub trait RawTensors: TensorSource {
    /// The dtype, shape and little-endian bytes of tensor `name`, as stored.
    fn raw(&self, name: &str) -> Option<(Dtype, &[u64], &[u8])>;
    /// Tells the source that `bytes` (from [`RawTensors::raw`]) are no longer needed in memory.
    fn release(&self, bytes: &[u8]);
}

impl RawTensors for CheckpointSource {
    fn raw(&self, name: &str) -> Option<(Dtype, &[u64], &[u8])> {
        let e = self.header.get(name)?;
        Some((e.dtype, &e.shape, self.tensor_bytes(name)?))
    }

    fn release(&self, bytes: &[u8]) {
        self.bytes.release(bytes);
    }
}

/// Converts little-endian F32, F16 or BF16 bytes to f32 (exactly); `None` for other dtypes.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => le::f32s(bytes).collect(),
        Dtype::F16 => le::f16s_to_f32(bytes),
        Dtype::BF16 => le::bf16s_to_f32(bytes),
        _ => return None,
    };
    Some(out)
}

/// The error of a tensor the model needs that `path` does not hold.
pub(crate) fn missing_tensor(path: &Path, name: &str) -> Error {
    Error::InvalidArgument(format!(
        "{}: tensor {}: missing (the model needs it)",
        path.display(),
        crate::error::escape_name(name)
    ))
}

/// Weights `name` of `path` as f32: F32, F16 or BF16 bytes converted exactly ([`to_f32`]),
/// any other dtype refused (rule 8.2).
pub(crate) fn weights_f32(path: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    to_f32(dtype, bytes).ok_or_else(|| {
        Violation::new(
            path,
            Rule::SourceDtype,
            "dtype F32, F16 or BF16",
            dtype.name(),
        )
        .tensor(name)
        .into()
    })
}

impl TensorSource for CheckpointSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.header
            .entries
            .iter()
            .map(|e| SourceTensor {
                name: e.name.clone(),
                shape: e.shape.clone(),
                dtype: e.dtype,
            })
            .collect()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let e = self
            .header
            .get(name)
            .ok_or_else(|| missing_tensor(&self.path, name))?;
        let bytes = self.tensor_bytes(name).ok_or_else(|| {
            Violation::new(
                &self.path,
                Rule::DataOffsets,
                "tensor data inside the file",
                "a range past the end",
            )
            .tensor(name)
        })?;
        let values = weights_f32(&self.path, name, e.dtype, bytes)?;
        // The values are copied: the mapped pages can leave the resident set.
        self.bytes.release(bytes);
        Ok(values)
    }

    fn sha256(&self) -> Option<String> {
        Some(CheckpointSource::sha256(self))
    }
}

/// A file carried into the bundle unchanged (format 4.0, rule 1.6): a model directory's
/// tokenizer or generation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetFile {
    /// Its name, one of [`crate::format::manifest::ASSET_NAMES`].
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A labelled validation set to embed (`validation.safetensors`, rule 6.1). The writer adds the
/// original model's predictions on its inputs (`original_predictions`, rule 6.3) itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSet {
    /// Where it came from (named in errors).
    pub origin: PathBuf,
    /// Inputs, `[n, input_dim]` row-major (empty for a decoder's token sequences).
    pub inputs: Vec<f32>,
    /// A decoder's token sequences, `[n, tokens]` (then `inputs` is empty).
    pub input_ids: Option<TokenIds>,
    /// Labels, `[n]` (a decoder: the next token of every position but the last, `[n, tokens - 1]`).
    pub labels: Vec<i64>,
    /// Optional difficulty per sample, `[n]`.
    pub difficulty: Option<Vec<u8>>,
}

/// Token sequences of a language model's validation set: `ids` is `[n, tokens]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenIds {
    /// Tokens per sequence (T >= 2).
    pub tokens: usize,
    /// The ids, row-major.
    pub ids: Vec<i64>,
}

impl ValidationSet {
    /// Sequences (a decoder's) or rows (a chain of layers).
    pub fn samples(&self) -> usize {
        match &self.input_ids {
            Some(t) => t.ids.len().checked_div(t.tokens).unwrap_or(0),
            None => self.labels.len(),
        }
    }
}

/// Loads a labelled data set for `bundle create --validation`: `inputs` F32 `[N, D]`, `labels`
/// I64 `[N]`, optional `difficulty` U8 `[N]` (rule 6.1; sizes against the model are checked when
/// the bundle is written).
pub fn load_validation_set(path: &Path) -> Result<ValidationSet> {
    validation_set(&CheckpointSource::open(path)?)
}

/// The labelled data set held by `src` (a checkpoint file, or tensors lent in memory by the
/// Python package), named as in a validation file: `inputs` F32 `[N, D]` and `labels` I64
/// `[N]`, or `input_ids` I64 `[N, T]` with `labels` `[N, T - 1]` (derived when absent), and
/// an optional `difficulty` U8 `[N]` (rule 6.1).
pub fn validation_set(src: &dyn RawTensors) -> Result<ValidationSet> {
    use crate::format::layout::{
        VALIDATION_DIFFICULTY, VALIDATION_INPUTS, VALIDATION_INPUT_IDS, VALIDATION_LABELS,
    };
    let path = src.path();
    let bad = |tensor: &str, expected: String, found: String| -> Error {
        Violation::new(path, Rule::ValidationTensors, expected, found)
            .tensor(tensor)
            .into()
    };
    // The tensor's shape and bytes when it is present with the right dtype and rank.
    let get = |name: &str, dtype: Dtype, rank: usize| -> Result<Option<(&[u64], &[u8])>> {
        match src.raw(name) {
            None => Ok(None),
            Some((d, shape, bytes)) if d == dtype && shape.len() == rank => {
                Ok(Some((shape, bytes)))
            }
            Some((d, shape, _)) => Err(bad(
                name,
                format!("{dtype} of rank {rank}"),
                format!("{d} of shape {}", shape_string(shape)),
            )),
        }
    };
    let difficulty = get(VALIDATION_DIFFICULTY, Dtype::U8, 1)?.map(|(_, b)| b);
    if let Some((shape, ids)) = get(VALIDATION_INPUT_IDS, Dtype::I64, 2)? {
        // A language model's sequences: labels are the next tokens, given or derived.
        let (n, t) = (shape[0], shape[1]);
        if n == 0 || t < 2 {
            return Err(bad(
                VALIDATION_INPUT_IDS,
                "I64 [N >= 1, T >= 2] (a label needs a next token)".into(),
                shape_string(shape),
            ));
        }
        let ids: Vec<i64> = le::i64s(ids).collect();
        let labels: Vec<i64> = match get(VALIDATION_LABELS, Dtype::I64, 2)? {
            Some((s, l)) if s == [n, t - 1] => le::i64s(l).collect(),
            Some((s, _)) => {
                return Err(bad(
                    VALIDATION_LABELS,
                    format!("shape [{n}, {}] (the next token of each position)", t - 1),
                    shape_string(s),
                ))
            }
            None => ids
                .chunks_exact(t as usize)
                .flat_map(|row| row[1..].to_vec())
                .collect(),
        };
        if let Some(d) = difficulty {
            if d.len() as u64 != n {
                return Err(bad(
                    VALIDATION_DIFFICULTY,
                    format!("shape [{n}] (one per sequence)"),
                    format!("[{}]", d.len()),
                ));
            }
        }
        return Ok(ValidationSet {
            origin: path.to_path_buf(),
            inputs: Vec::new(),
            input_ids: Some(TokenIds {
                tokens: t as usize,
                ids,
            }),
            labels,
            difficulty: difficulty.map(<[u8]>::to_vec),
        });
    }
    let (input_shape, inputs) = get(VALIDATION_INPUTS, Dtype::F32, 2)?.ok_or_else(|| {
        bad(
            VALIDATION_INPUTS,
            "a tensor F32 [N, input_dim] (or I64 input_ids [N, T] for a language model)".into(),
            "none".into(),
        )
    })?;
    let (label_shape, labels) = get(VALIDATION_LABELS, Dtype::I64, 1)?
        .ok_or_else(|| bad(VALIDATION_LABELS, "a tensor I64 [N]".into(), "none".into()))?;
    let n = input_shape[0];
    if label_shape[0] != n {
        return Err(bad(
            VALIDATION_LABELS,
            format!("shape [{n}] (one label per input row)"),
            shape_string(label_shape),
        ));
    }
    Ok(ValidationSet {
        origin: path.to_path_buf(),
        inputs: le::f32s(inputs).collect(),
        input_ids: None,
        labels: le::i64s(labels).collect(),
        difficulty: difficulty.map(<[u8]>::to_vec),
    })
}
