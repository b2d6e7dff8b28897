//! `bundle run`: the reference model (spec section 16) on the caller's inputs, the logits
//! written out, so that a bundle can be compared with another framework in one step.
//!
//! The input file is safetensors with the inputs as tensor `inputs` (or as the file's only
//! tensor), F32, F16 or BF16, shape `[N, input_dim]`, every value finite. The output file holds
//! `logits` F32 `[N, classes]` and `predictions` I64 `[N]` (the argmax of section 16: first
//! index on ties), computed along one weight path, a chunk of rows at a time.
//!
//! For a decoder (format 3.0) the inputs are token sequences: tensor `input_ids` (or the only
//! tensor), I64 or I32 `[N, T]`, every id in the vocabulary; the output holds `logits` F32
//! `[N, T, vocab]` and `predictions` I64 `[N, T]` (the predicted next token at every position),
//! a chunk of sequences at a time.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::layout::{VALIDATION_INPUTS, VALIDATION_INPUT_IDS};
use crate::format::safetensors::{shape_string, Dtype};
use crate::model::bundle_decoder::BundleDecoder;
use crate::model::chunks::{chunk_rows, decoder_sequences};
use crate::model::decoder;
use crate::model::reference::{argmax_rows, forward_bundle, WeightPath};
use crate::read::Bundle;
use crate::source::{to_f32, CheckpointSource};
use crate::write::safetensors::write_safetensors_file;

/// What `bundle run` runs the model on.
#[derive(Debug, Clone, PartialEq)]
pub enum RunInput {
    /// Rows of a chain of layers' inputs, row-major `[N, input_dim]`.
    Rows(Vec<f32>),
    /// A decoder's token sequences, row-major `[N, tokens]`.
    Tokens {
        /// The ids.
        ids: Vec<i64>,
        /// Tokens per sequence.
        tokens: usize,
    },
}

/// The reference model's outputs on a batch of inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    /// Row-major logits, `rows * classes` values (a decoder: `rows * tokens * classes`).
    pub logits: Vec<f32>,
    /// The prediction of each row (spec section 16), or of each position of each sequence.
    pub predictions: Vec<usize>,
    /// Rows (inputs), or sequences.
    pub rows: usize,
    /// Tokens per sequence for a decoder, `None` for a chain of layers.
    pub tokens: Option<usize>,
    /// Logits per row.
    pub classes: usize,
}

/// Reads the inputs of `bundle`'s model from the safetensors file `path`: tensor `inputs`, or
/// the file's only tensor; F32, F16 or BF16 `[N, input_dim]`; every value finite. For a decoder,
/// tensor `input_ids` or the only tensor, I64 or I32 `[N, T]`, every id in the vocabulary.
pub fn load_inputs(path: &Path, bundle: &Bundle) -> Result<RunInput> {
    let src = CheckpointSource::open(path)?;
    if let Some(spec) = bundle.decoder() {
        return load_token_ids(path, &src, spec.vocab_size);
    }
    let width = bundle.manifest().model.input_dim;
    let bad =
        |what: String| -> Error { Error::InvalidArgument(format!("{}: {what}", path.display())) };
    let entry = input_entry(path, &src, VALIDATION_INPUTS, "inputs")?;
    let name = &entry.name;
    if entry.shape.len() != 2 || entry.shape[1] != width {
        return Err(bad(format!(
            "tensor {name:?}: expected shape [N, {width}] (the model's input_dim), found {}",
            shape_string(&entry.shape)
        )));
    }
    let bytes = src
        .tensor_bytes(name)
        .ok_or_else(|| bad(format!("tensor {name:?}: data outside the file")))?;
    let values = match entry.dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => to_f32(entry.dtype, bytes),
        _ => None,
    }
    .ok_or_else(|| {
        bad(format!(
            "tensor {name:?}: expected dtype F32, F16 or BF16, found {}",
            entry.dtype
        ))
    })?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let w = width as usize;
        return Err(bad(format!(
            "tensor {name:?}: expected finite inputs, found {} at row {}, column {}",
            values[i],
            i / w,
            i % w
        )));
    }
    Ok(RunInput::Rows(values))
}

/// The input tensor of `src`: the one named `name`, or the file's only tensor.
fn input_entry<'a>(
    path: &Path,
    src: &'a CheckpointSource,
    name: &str,
    what: &str,
) -> Result<&'a crate::format::safetensors::TensorEntry> {
    let header = src.header();
    match header.get(name) {
        Some(e) => Ok(e),
        None if header.entries.len() == 1 => Ok(&header.entries[0]),
        None => Err(Error::InvalidArgument(format!(
            "{}: no tensor named {name:?}, and {} tensors to choose from: name the {what} {name:?}",
            path.display(),
            header.entries.len()
        ))),
    }
}

/// A decoder's input: tensor `input_ids` or the file's only tensor, I64 or I32 `[N, T]` with
/// N, T >= 1, every id in `0..vocab`.
fn load_token_ids(path: &Path, src: &CheckpointSource, vocab: usize) -> Result<RunInput> {
    let bad =
        |what: String| -> Error { Error::InvalidArgument(format!("{}: {what}", path.display())) };
    let entry = input_entry(path, src, VALIDATION_INPUT_IDS, "token ids")?;
    let name = &entry.name;
    let (n, t) = match entry.shape[..] {
        [n, t] if n >= 1 && t >= 1 => (n, t as usize),
        _ => {
            return Err(bad(format!(
                "tensor {name:?}: expected token ids of shape [N >= 1, T >= 1], found {}",
                shape_string(&entry.shape)
            )))
        }
    };
    let bytes = src
        .tensor_bytes(name)
        .ok_or_else(|| bad(format!("tensor {name:?}: data outside the file")))?;
    let ids: Vec<i64> = match entry.dtype {
        Dtype::I64 => crate::format::le::i64s(bytes).collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
            .collect(),
        other => {
            return Err(bad(format!(
                "tensor {name:?}: expected token ids of dtype I64 or I32, found {other}"
            )))
        }
    };
    if let Some(i) = ids.iter().position(|&id| !(0..vocab as i64).contains(&id)) {
        return Err(bad(format!(
            "tensor {name:?}: expected token ids in 0..{vocab} (the vocabulary), found {} at sequence {}, position {}",
            ids[i],
            i / t,
            i % t
        )));
    }
    debug_assert_eq!(ids.len() as u64, n * t as u64);
    Ok(RunInput::Tokens { ids, tokens: t })
}

/// Checks inputs that did not come through [`load_inputs`] (the Python package's): rows of
/// finite values, or token ids in the vocabulary with at least one token per sequence.
pub fn check_input(bundle: &Bundle, input: &RunInput) -> Result<()> {
    match input {
        RunInput::Rows(values) => {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::InvalidArgument(format!(
                    "inputs: expected finite values, found {} at flat index {i}",
                    values[i]
                )));
            }
        }
        RunInput::Tokens { ids, tokens } => {
            let vocab = bundle.decoder().map_or(0, |d| d.vocab_size) as i64;
            if *tokens == 0 || ids.is_empty() || ids.len() % tokens != 0 {
                return Err(Error::InvalidArgument(format!(
                    "input_ids: expected sequences of T >= 1 tokens, found {} ids in rows of {tokens}",
                    ids.len()
                )));
            }
            if let Some(i) = ids.iter().position(|id| !(0..vocab).contains(id)) {
                return Err(Error::InvalidArgument(format!(
                    "input_ids: expected token ids in 0..{vocab} (the vocabulary), found {} at sequence {}, position {}",
                    ids[i],
                    i / tokens,
                    i % tokens
                )));
            }
        }
    }
    Ok(())
}

/// Runs `bundle`'s model along `path` on `input`, a chunk of rows (or sequences) at a time
/// (memory: one chunk's activations and one weight, or a block of it per thread).
pub fn run(bundle: &Bundle, path: WeightPath, input: &RunInput) -> Result<RunOutput> {
    check_input(bundle, input)?;
    let (inputs, width) = match (input, bundle.decoder()) {
        (RunInput::Rows(values), None) => (values, bundle.manifest().model.input_dim as usize),
        (RunInput::Tokens { ids, tokens }, Some(_)) => return run_decoder(bundle, path, ids, *tokens),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{}: inputs of the wrong kind for this model (rows for a chain of layers, token ids for a decoder)",
                bundle.dir().display()
            )))
        }
    };
    let model = &bundle.manifest().model;
    let classes = bundle.classes() as usize;
    if width == 0 || inputs.len() % width != 0 {
        return Err(Error::InvalidArgument(format!(
            "{} input values are not rows of {width}",
            inputs.len()
        )));
    }
    let rows = inputs.len() / width;
    let mut out = RunOutput {
        logits: Vec::with_capacity(rows.saturating_mul(classes)),
        predictions: Vec::with_capacity(rows),
        rows,
        tokens: None,
        classes,
    };
    for chunk in inputs.chunks(chunk_rows(model).saturating_mul(width).max(1)) {
        let x = ndarray::ArrayView2::from_shape((chunk.len() / width, width), chunk)
            .map_err(|e| Error::InvalidArgument(format!("inputs: {e}")))?;
        let logits = forward_bundle(bundle, path, x)?;
        out.predictions.extend(argmax_rows(&logits));
        out.logits.extend(logits.iter());
    }
    Ok(out)
}

/// The decoder of `bundle` along `path` on sequences of `tokens` ids.
fn run_decoder(bundle: &Bundle, path: WeightPath, ids: &[i64], tokens: usize) -> Result<RunOutput> {
    let weights = BundleDecoder::new(bundle, path)?;
    let spec = weights.spec();
    let rows = ids.len() / tokens.max(1);
    let ids = ndarray::ArrayView2::from_shape((rows, tokens), ids)
        .map_err(|e| Error::InvalidArgument(format!("input_ids: {e}")))?;
    let vocab = spec.vocab_size;
    let mut out = RunOutput {
        logits: Vec::with_capacity(rows.saturating_mul(tokens).saturating_mul(vocab)),
        predictions: Vec::with_capacity(rows.saturating_mul(tokens)),
        rows,
        tokens: Some(tokens),
        classes: vocab,
    };
    let chunk = decoder_sequences(spec, tokens);
    for start in (0..rows).step_by(chunk) {
        let part = ids.slice(ndarray::s![start..(start + chunk).min(rows), ..]);
        let logits = decoder::forward(spec, &weights, part)?;
        let flat = logits
            .into_shape_with_order((part.nrows() * tokens, vocab))
            .map_err(|e| Error::InvalidArgument(format!("logits: {e}")))?;
        out.predictions.extend(argmax_rows(&flat));
        out.logits.extend(flat.iter());
    }
    Ok(out)
}

/// Writes `output` to `dest` (atomically; an existing file is replaced only with `force`):
/// `logits` F32 `[N, classes]`, `predictions` I64 `[N]` (a decoder: `[N, T, vocab]` and
/// `[N, T]`), and the weight path in the metadata.
pub fn write_output(dest: &Path, output: &RunOutput, path: WeightPath, force: bool) -> Result<()> {
    let (rows, classes) = (output.rows as u64, output.classes as u64);
    let tensors = match output.tokens {
        None => vec![
            ("logits".to_string(), Dtype::F32, vec![rows, classes]),
            ("predictions".to_string(), Dtype::I64, vec![rows]),
        ],
        Some(t) => vec![
            (
                "logits".to_string(),
                Dtype::F32,
                vec![rows, t as u64, classes],
            ),
            ("predictions".to_string(), Dtype::I64, vec![rows, t as u64]),
        ],
    };
    let path_name = match path {
        WeightPath::Fp16 => "fp16",
        WeightPath::Ternary => "ternary",
    };
    let metadata = [
        ("format".to_string(), "pt".to_string()),
        ("path".to_string(), path_name.to_string()),
    ];
    write_safetensors_file(dest, tensors, &metadata, force, |name| {
        Ok(match name {
            "logits" => output.logits.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => output
                .predictions
                .iter()
                .flat_map(|&p| (p as i64).to_le_bytes())
                .collect(),
        })
    })
}
