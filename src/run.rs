//! `bundle run`: the reference model (spec section 16) on the caller's inputs, the logits
//! written out, so that a bundle can be compared with another framework in one step.
//!
//! The input file is safetensors with the inputs as tensor `inputs` (or as the file's only
//! tensor), F32, F16 or BF16, shape `[N, input_dim]`, every value finite. The output file holds
//! `logits` F32 `[N, classes]` and `predictions` I64 `[N]` (the argmax of section 16: first
//! index on ties), computed along one weight path, a chunk of rows at a time.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::layout::VALIDATION_INPUTS;
use crate::format::safetensors::{shape_string, Dtype};
use crate::model::chunks::chunk_rows;
use crate::model::reference::{argmax_rows, forward_bundle, WeightPath};
use crate::read::Bundle;
use crate::source::{to_f32, CheckpointSource};
use crate::write::safetensors::write_safetensors_file;

/// The reference model's outputs on a batch of inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    /// Row-major logits, `rows * classes` values.
    pub logits: Vec<f32>,
    /// The prediction of each row (spec section 16).
    pub predictions: Vec<usize>,
    /// Rows (inputs).
    pub rows: usize,
    /// Logits per row.
    pub classes: usize,
}

/// Reads the inputs of `bundle`'s model from the safetensors file `path`: tensor `inputs`, or
/// the file's only tensor; F32, F16 or BF16 `[N, input_dim]`; every value finite.
pub fn load_inputs(path: &Path, bundle: &Bundle) -> Result<Vec<f32>> {
    let src = CheckpointSource::open(path)?;
    let header = src.header();
    let width = bundle.manifest().model.input_dim;
    let bad =
        |what: String| -> Error { Error::InvalidArgument(format!("{}: {what}", path.display())) };
    let entry = match header.get(VALIDATION_INPUTS) {
        Some(e) => e,
        None if header.entries.len() == 1 => &header.entries[0],
        None => {
            return Err(bad(format!(
                "no tensor named {VALIDATION_INPUTS:?}, and {} tensors to choose from: name the inputs {VALIDATION_INPUTS:?}",
                header.entries.len()
            )))
        }
    };
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
    Ok(values)
}

/// Runs `bundle`'s model along `path` on `inputs` (row-major `[N, input_dim]`), a chunk of
/// rows at a time (memory: one chunk's activations and a block of weights per thread).
pub fn run(bundle: &Bundle, path: WeightPath, inputs: &[f32]) -> Result<RunOutput> {
    let model = &bundle.manifest().model;
    let width = model.input_dim as usize;
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

/// Writes `output` to `dest` (atomically; an existing file is replaced only with `force`):
/// `logits` F32 `[N, classes]`, `predictions` I64 `[N]`, and the weight path in the metadata.
pub fn write_output(dest: &Path, output: &RunOutput, path: WeightPath, force: bool) -> Result<()> {
    let (rows, classes) = (output.rows as u64, output.classes as u64);
    let tensors = vec![
        ("logits".to_string(), Dtype::F32, vec![rows, classes]),
        ("predictions".to_string(), Dtype::I64, vec![rows]),
    ];
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
