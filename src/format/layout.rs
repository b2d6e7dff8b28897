//! The tensors each file of a bundle must hold, as (name, dtype, shape) in the manifest's order:
//! what the reader checks (rules 4.1, 4.2, 5.1, 6.1) and the writer lays out, from one
//! definition.

use std::path::Path;

use crate::error::{Result, Violation};
use crate::format::distribution::Form;
use crate::format::manifest::{scale_tensor_name, Manifest};
use crate::format::quantization::{rows_cols, QuantParams};
use crate::format::rules::Rule;
use crate::format::safetensors::Dtype;

/// Tensors a file must hold: (name, dtype, shape).
pub type Layout = Vec<(String, Dtype, Vec<u64>)>;

/// Inputs tensor of the validation set.
pub const VALIDATION_INPUTS: &str = "inputs";
/// Token ids of a decoder's validation set (format 3.0).
pub const VALIDATION_INPUT_IDS: &str = "input_ids";
/// Labels tensor of the validation set.
pub const VALIDATION_LABELS: &str = "labels";
/// Optional difficulty tensor of the validation set.
pub const VALIDATION_DIFFICULTY: &str = "difficulty";
/// Optional tensor of the original (pre-quantization) model's predictions on the inputs
/// (format 2.0 and later, rules 6.1 and 6.3).
pub const VALIDATION_ORIGINAL_PREDICTIONS: &str = "original_predictions";
/// The original model's full log-softmax at each scored sample (format 5.0, rule 6.1).
pub const VALIDATION_ORIGINAL_LOG_PROBS: &str = "original_log_probs";
/// The ids of the original model's K most probable classes (format 5.0, top-K form).
pub const VALIDATION_ORIGINAL_TOP_IDS: &str = "original_top_ids";
/// Their log-probabilities (format 5.0, top-K form).
pub const VALIDATION_ORIGINAL_TOP_LOG_PROBS: &str = "original_top_log_probs";
/// The log-sum-exp of the original model's logits (format 5.0, top-K form).
pub const VALIDATION_ORIGINAL_LOG_SUM_EXP: &str = "original_log_sum_exp";
/// The original model's log-probability of each label (format 5.0, top-K form).
pub const VALIDATION_ORIGINAL_LABEL_LOG_PROBS: &str = "original_label_log_probs";
/// The tensors of the stored distributions, both forms.
pub const VALIDATION_DISTRIBUTION_TENSORS: [&str; 5] = [
    VALIDATION_ORIGINAL_LOG_PROBS,
    VALIDATION_ORIGINAL_TOP_IDS,
    VALIDATION_ORIGINAL_TOP_LOG_PROBS,
    VALIDATION_ORIGINAL_LOG_SUM_EXP,
    VALIDATION_ORIGINAL_LABEL_LOG_PROBS,
];

/// What the validation file records of the original model (rules 6.1, 6.3, 6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginalRecord {
    /// Nothing.
    Nothing,
    /// `original_predictions` (format 2.0).
    Predictions,
    /// `original_predictions` and the distributions in `form` over `classes` (format 5.0).
    Distributions {
        /// Full or top-K.
        form: Form,
        /// The last layer's `out_features`, a decoder's `vocab_size`.
        classes: u64,
    },
}

/// The tensors `ternary.safetensors` must hold (rules 4.1 and 4.2). A quantized tensor's shape
/// has at least one dimension and no overflow (rule 2.7, checked when the manifest was
/// validated); one that does not is reported as a rule 2.7 violation of `manifest_path`.
pub fn ternary_layout(
    manifest: &Manifest,
    params: &QuantParams,
    manifest_path: &Path,
) -> Result<Layout> {
    let mut out = Vec::with_capacity(manifest.tensors.len() * 2);
    for t in &manifest.tensors {
        if t.quantized {
            let (rows, cols) = rows_cols(&t.shape).ok_or_else(|| {
                Violation::new(
                    manifest_path,
                    Rule::TensorList,
                    "a quantized shape [R >= 1, ...] whose element count fits",
                    crate::format::safetensors::shape_string(&t.shape),
                )
                .tensor(&t.name)
            })?;
            out.push((
                t.name.clone(),
                Dtype::U8,
                vec![rows, params.encoding.bytes_per_row(cols)],
            ));
            out.push((
                scale_tensor_name(&t.name),
                Dtype::F32,
                params.granularity.scale_shape(rows, cols),
            ));
        } else {
            out.push((t.name.clone(), Dtype::F32, t.shape.clone()));
        }
    }
    Ok(out)
}

/// The tensors `fp16.safetensors` must hold (rule 5.1).
pub fn fp16_layout(manifest: &Manifest) -> Layout {
    manifest
        .tensors
        .iter()
        .map(|t| (t.name.clone(), Dtype::F16, t.shape.clone()))
        .collect()
}

/// The tensors `validation.safetensors` holds for `n` samples (rule 6.1): `inputs` F32
/// `[n, input_dim]`, `labels` I64 `[n]`, and optionally `difficulty` U8 `[n]` and
/// `original_predictions` I64 `[n]` (format 2.0) with the distributions (format 5.0).
pub fn validation_layout(
    n: u64,
    input_dim: u64,
    difficulty: bool,
    original: OriginalRecord,
) -> Layout {
    labelled_layout(
        (VALIDATION_INPUTS, Dtype::F32, vec![n, input_dim]),
        vec![n],
        difficulty,
        original,
    )
}

/// The tensors a decoder's `validation.safetensors` holds for `n` sequences of `t` tokens
/// (rule 6.1, format 3.0): `input_ids` I64 `[n, t]`, `labels` I64 `[n, t - 1]` (the token that
/// follows each position but the last), and optionally `difficulty` U8 `[n]` and
/// `original_predictions` I64 `[n, t - 1]` with the distributions (format 5.0).
pub fn decoder_validation_layout(
    n: u64,
    t: u64,
    difficulty: bool,
    original: OriginalRecord,
) -> Layout {
    labelled_layout(
        (VALIDATION_INPUT_IDS, Dtype::I64, vec![n, t]),
        vec![n, t.saturating_sub(1)],
        difficulty,
        original,
    )
}

/// The inputs, then `labels` I64 of shape `scored` (one per scored sample), the optional
/// `difficulty` U8 `[n]` (`n` = the inputs' first dimension), `original_predictions` I64 of
/// shape `scored`, and the distributions: `original_log_probs` F32 `scored + [classes]`, or
/// `original_top_ids` I64 and `original_top_log_probs` F32 of shape `scored + [k]` with
/// `original_log_sum_exp` and `original_label_log_probs` F32 of shape `scored`.
fn labelled_layout(
    (inputs, dtype, shape): (&str, Dtype, Vec<u64>),
    scored: Vec<u64>,
    difficulty: bool,
    original: OriginalRecord,
) -> Layout {
    let n = shape[0];
    let mut out = vec![
        (inputs.to_string(), dtype, shape),
        (VALIDATION_LABELS.to_string(), Dtype::I64, scored.clone()),
    ];
    if difficulty {
        out.push((VALIDATION_DIFFICULTY.to_string(), Dtype::U8, vec![n]));
    }
    if original != OriginalRecord::Nothing {
        out.push((
            VALIDATION_ORIGINAL_PREDICTIONS.to_string(),
            Dtype::I64,
            scored.clone(),
        ));
    }
    let with = |last: u64| scored.iter().copied().chain([last]).collect::<Vec<u64>>();
    match original {
        OriginalRecord::Distributions {
            form: Form::Full,
            classes,
        } => out.push((
            VALIDATION_ORIGINAL_LOG_PROBS.to_string(),
            Dtype::F32,
            with(classes),
        )),
        OriginalRecord::Distributions {
            form: Form::TopK(k),
            ..
        } => out.extend([
            (VALIDATION_ORIGINAL_TOP_IDS.to_string(), Dtype::I64, with(k)),
            (
                VALIDATION_ORIGINAL_TOP_LOG_PROBS.to_string(),
                Dtype::F32,
                with(k),
            ),
            (
                VALIDATION_ORIGINAL_LOG_SUM_EXP.to_string(),
                Dtype::F32,
                scored.clone(),
            ),
            (
                VALIDATION_ORIGINAL_LABEL_LOG_PROBS.to_string(),
                Dtype::F32,
                scored,
            ),
        ]),
        _ => {}
    }
    out
}
