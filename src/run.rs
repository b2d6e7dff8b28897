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
//!
//! [`run_to_file`] writes the output file a chunk at a time, so that memory does not grow with
//! the output, after checking its size against the free space; with `top_k` it writes only the
//! largest logits of each row or position and their indices. [`run`] returns them in memory.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::layout::{VALIDATION_INPUTS, VALIDATION_INPUT_IDS};
use crate::format::safetensors::{shape_string, Dtype};
use crate::model::bundle_decoder::BundleDecoder;
use crate::model::chunks::{chunk_rows, decoder_layer_sequences, head_rows};
use crate::model::decoder;
use crate::model::reference::{argmax_rows, forward_bundle, WeightPath};
use crate::read::Bundle;
use crate::source::{to_f32, CheckpointSource};
use crate::write::safetensors::{planned_size, write_safetensors_streamed};

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

/// The output's shape: rows (inputs, or sequences), tokens per sequence (a decoder), and
/// logits per row or position. The input is checked first ([`check_input`]).
pub fn output_shape(bundle: &Bundle, input: &RunInput) -> Result<(usize, Option<usize>, usize)> {
    check_input(bundle, input)?;
    match (input, bundle.decoder()) {
        (RunInput::Rows(values), None) => {
            let width = bundle.manifest().model.input_dim as usize;
            if width == 0 || values.len() % width != 0 {
                return Err(Error::InvalidArgument(format!(
                    "{} input values are not rows of {width}",
                    values.len()
                )));
            }
            Ok((values.len() / width, None, bundle.classes() as usize))
        }
        (RunInput::Tokens { ids, tokens }, Some(d)) => Ok((
            ids.len() / (*tokens).max(1),
            Some(*tokens),
            d.vocab_size,
        )),
        _ => Err(Error::InvalidArgument(format!(
            "{}: inputs of the wrong kind for this model (rows for a chain of layers, token ids for a decoder)",
            bundle.dir().display()
        ))),
    }
}

/// Runs `bundle`'s model along `path` on `input`, a chunk of rows (or sequences) at a time,
/// handing each chunk's logits to `emit` as rows (a decoder: one row per position, sequence
/// by sequence). `shape` is [`output_shape`]'s, the input already checked. Memory: one
/// chunk's activations and one weight, or a block of it per thread.
fn run_chunks(
    bundle: &Bundle,
    path: WeightPath,
    input: &RunInput,
    (_, tokens, _): (usize, Option<usize>, usize),
    emit: &mut dyn FnMut(ndarray::ArrayView2<'_, f32>) -> Result<()>,
) -> Result<()> {
    match (input, tokens) {
        (RunInput::Rows(inputs), None) => {
            let model = &bundle.manifest().model;
            let width = model.input_dim as usize;
            for chunk in inputs.chunks(chunk_rows(model).saturating_mul(width).max(1)) {
                let x = ndarray::ArrayView2::from_shape((chunk.len() / width, width), chunk)
                    .map_err(|e| Error::InvalidArgument(format!("inputs: {e}")))?;
                emit(forward_bundle(bundle, path, x)?.view())?;
            }
        }
        (RunInput::Tokens { ids, .. }, Some(tokens)) => {
            let weights = BundleDecoder::new(bundle, path)?;
            let spec = weights.spec();
            let rows = ids.len() / tokens.max(1);
            let ids = ndarray::ArrayView2::from_shape((rows, tokens), ids)
                .map_err(|e| Error::InvalidArgument(format!("input_ids: {e}")))?;
            // As many sequences through the layers as their activations allow, then the head
            // a piece of positions at a time: the logits held are one piece, however many
            // sequences share the pass over the layers' weights.
            let chunk = decoder_layer_sequences(spec, tokens);
            let piece = head_rows(spec);
            for start in (0..rows).step_by(chunk.max(1)) {
                let part = ids.slice(ndarray::s![start..(start + chunk).min(rows), ..]);
                let h = decoder::hidden(spec, &weights, part)?;
                for rows in h.axis_chunks_iter(ndarray::Axis(0), piece.max(1)) {
                    // (`head` checks the logits' shape: [rows, vocab_size], the output's.)
                    emit(decoder::head(spec, &weights, rows)?.view())?;
                }
            }
        }
        _ => unreachable!("output_shape matched the input to the model"),
    }
    Ok(())
}

/// Runs `bundle`'s model along `path` on `input`, a chunk of rows (or sequences) at a time,
/// and returns every logit in memory ([`run_to_file`] writes them out a chunk at a time
/// instead).
pub fn run(bundle: &Bundle, path: WeightPath, input: &RunInput) -> Result<RunOutput> {
    let (rows, tokens, classes) = output_shape(bundle, input)?;
    let positions = rows.saturating_mul(tokens.unwrap_or(1));
    let mut out = RunOutput {
        logits: Vec::with_capacity(positions.saturating_mul(classes)),
        predictions: Vec::with_capacity(positions),
        rows,
        tokens,
        classes,
    };
    run_chunks(
        bundle,
        path,
        input,
        (rows, tokens, classes),
        &mut |logits| {
            out.predictions.extend(argmax_rows(&logits));
            out.logits.extend(logits.iter());
            Ok(())
        },
    )?;
    Ok(out)
}

/// The `k` largest values of `row` and their indices, largest first (ties: the lower index
/// first, as the argmax of section 16).
fn top_k(row: ndarray::ArrayView1<'_, f32>, k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let order = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, order);
        idx.truncate(k);
    }
    idx.sort_by(order);
    idx.into_iter().map(|i| (i, row[i])).collect()
}

/// What [`run_to_file`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// Rows (inputs), or sequences.
    pub rows: usize,
    /// Tokens per sequence for a decoder.
    pub tokens: Option<usize>,
    /// Logits per row or position.
    pub classes: usize,
    /// `--top-k`: the logits kept per row or position.
    pub top_k: Option<usize>,
    /// The output file's size in bytes.
    pub bytes: u64,
}

/// Fails, naming `dest`, when the file system holding it has fewer than `bytes` free for
/// an unprivileged user.
fn check_free_space(dest: &Path, bytes: u64) -> Result<()> {
    let dir = crate::write::staging::parent_of(dest);
    let st = rustix::fs::statvfs(&dir).map_err(|e| {
        Error::io(
            &dir,
            "statvfs",
            std::io::Error::from_raw_os_error(e.raw_os_error()),
        )
    })?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < bytes {
        return Err(Error::InvalidArgument(format!(
            "{}: the output needs {bytes} bytes and its file system has {free} free: choose --out on a larger disk, fewer inputs, or --top-k",
            dest.display()
        )));
    }
    Ok(())
}

/// `bundle run`: runs `bundle`'s model along `path` on `input` and writes the output file at
/// `dest` a chunk at a time, so that memory does not grow with the output (spec section 16;
/// atomically, an existing file replaced only with `force`): `logits` F32 `[N, classes]` (a
/// decoder `[N, T, vocab]`) and `predictions` I64 `[N]` (`[N, T]`), or with `top_k` only the
/// `k` largest logits of each row or position, largest first, as `top_logits` F32 and their
/// indices `top_ids` I64 (`[N, k]`, `[N, T, k]`). The output's size is checked against the
/// free space of its file system before any work.
pub fn run_to_file(
    bundle: &Bundle,
    path: WeightPath,
    input: &RunInput,
    dest: &Path,
    force: bool,
    top_k_of: Option<usize>,
) -> Result<RunShape> {
    let (rows, tokens, classes) = output_shape(bundle, input)?;
    if let Some(k) = top_k_of {
        if k == 0 || k > classes {
            return Err(Error::InvalidArgument(format!(
                "--top-k {k}: expected 1 to {classes} (the logits per row)"
            )));
        }
    }
    let lead: Vec<u64> = match tokens {
        Some(t) => vec![rows as u64, t as u64],
        None => vec![rows as u64],
    };
    let with = |last: usize| -> Vec<u64> { lead.iter().copied().chain([last as u64]).collect() };
    let tensors = match top_k_of {
        None => vec![
            ("logits".to_string(), Dtype::F32, with(classes)),
            ("predictions".to_string(), Dtype::I64, lead.clone()),
        ],
        Some(k) => vec![
            ("predictions".to_string(), Dtype::I64, lead.clone()),
            ("top_ids".to_string(), Dtype::I64, with(k)),
            ("top_logits".to_string(), Dtype::F32, with(k)),
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
    let bytes = planned_size(tensors.clone(), &metadata)?;
    check_free_space(dest, bytes)?;
    write_safetensors_streamed(dest, tensors, &metadata, force, |out| {
        let mut row = 0u64;
        let mut predictions: Vec<u8> = Vec::new();
        run_chunks(
            bundle,
            path,
            input,
            (rows, tokens, classes),
            &mut |logits| {
                for p in argmax_rows(&logits) {
                    predictions.extend((p as i64).to_le_bytes());
                }
                match top_k_of {
                    None => {
                        // In pieces of about 4 MiB (borrowed as bytes where the machine is little-endian).
                        let piece = (1usize << 20).div_ceil(classes.max(1));
                        for (i, block) in
                            logits.axis_chunks_iter(ndarray::Axis(0), piece).enumerate()
                        {
                            let data = match block.as_slice() {
                                Some(b) => crate::format::le::bytes_of(b, f32::to_le_bytes),
                                None => block.iter().flat_map(|v| v.to_le_bytes()).collect(),
                            };
                            let at = (row + (i * piece) as u64) * classes as u64 * 4;
                            out.write("logits", at, &data)?;
                        }
                    }
                    Some(k) => {
                        let (mut ids, mut values) = (Vec::new(), Vec::new());
                        for r in logits.rows() {
                            for (i, v) in top_k(r, k) {
                                ids.extend((i as i64).to_le_bytes());
                                values.extend(v.to_le_bytes());
                            }
                        }
                        out.write("top_ids", row * k as u64 * 8, &ids)?;
                        out.write("top_logits", row * k as u64 * 4, &values)?;
                    }
                }
                row += logits.nrows() as u64;
                Ok(())
            },
        )?;
        out.write("predictions", 0, &predictions)
    })?;
    Ok(RunShape {
        rows,
        tokens,
        classes,
        top_k: top_k_of,
        bytes,
    })
}
