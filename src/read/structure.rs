//! The structural rules that relate each file to the manifest (spec section 11, opening): file
//! sizes (3.1), header listings (3.7), the tensor sets, dtypes and shapes of each role (4.1,
//! 4.2, 5.1, 6.1) and the presence of the validation file (1.4). Each check that succeeds
//! returns what it proved, as byte ranges the views of [`crate::read::Bundle`] are built on.

use std::collections::HashSet;
use std::path::Path;

use crate::error::{escape_name, Result, Violation};
use crate::format::distribution::{Form, MAX_TOP_K};
use crate::format::layout::{
    decoder_validation_layout, fp16_layout, ternary_layout, validation_layout, Layout,
    OriginalRecord, VALIDATION_DIFFICULTY, VALIDATION_DISTRIBUTION_TENSORS, VALIDATION_INPUTS,
    VALIDATION_INPUT_IDS, VALIDATION_LABELS, VALIDATION_ORIGINAL_LABEL_LOG_PROBS,
    VALIDATION_ORIGINAL_LOG_PROBS, VALIDATION_ORIGINAL_LOG_SUM_EXP,
    VALIDATION_ORIGINAL_PREDICTIONS, VALIDATION_ORIGINAL_TOP_IDS,
    VALIDATION_ORIGINAL_TOP_LOG_PROBS,
};
use crate::format::manifest::{
    scale_tensor_name, FileEntry, FileRole, FormatVersion, Manifest, ManifestFacts,
};
use crate::format::rules::Rule;
use crate::format::safetensors::{shape_string, Header};
use crate::read::bundle::{
    DataFile, DistributionRanges, ListedTensor, TensorRanges, ValidationRanges,
};

/// Rule 3.1: the file's size is the manifest's.
pub(crate) fn check_size(path: &Path, role: FileRole, size: u64, entry: &FileEntry) -> Result<()> {
    if size != entry.size {
        return Err(Violation::new(
            path,
            Rule::FileSize,
            format!("{} bytes (manifest files.{})", entry.size, role.key()),
            format!("{size} bytes"),
        )
        .into());
    }
    Ok(())
}

/// Rule 3.7: the header's tensors are exactly the manifest's listing for this file. Returns the
/// listing, each entry with the place of its bytes.
pub(crate) fn check_listing(
    path: &Path,
    role: FileRole,
    header: &Header,
    entry: &FileEntry,
) -> Result<Vec<ListedTensor>> {
    let listed: HashSet<&str> = entry.tensors.iter().map(|t| t.name.as_str()).collect();
    if let Some(e) = header
        .entries
        .iter()
        .find(|e| !listed.contains(e.name.as_str()))
    {
        return Err(Violation::new(
            path,
            Rule::HeaderMatchesManifest,
            format!(
                "only the tensors listed in manifest files.{}.tensors",
                role.key()
            ),
            "an unlisted tensor",
        )
        .tensor(&e.name)
        .into());
    }
    entry
        .tensors
        .iter()
        .map(|t| {
            let e = header.get(&t.name).ok_or_else(|| {
                Violation::new(
                    path,
                    Rule::HeaderMatchesManifest,
                    format!(
                        "every tensor listed in manifest files.{}.tensors",
                        role.key()
                    ),
                    "no such tensor in the file",
                )
                .tensor(&t.name)
            })?;
            let start = (header.data_start() + e.start) as usize;
            Ok(ListedTensor::new(
                t.name.clone(),
                t.sha256.clone(),
                start..start + e.byte_len() as usize,
            ))
        })
        .collect()
}

/// Compares a file's header with the tensors the manifest implies: `(name, dtype, shape)`.
fn check_tensor_set(
    file: &DataFile,
    expected: &Layout,
    set_rule: Rule,
    shape_rule: Rule,
) -> Result<()> {
    let path = &file.path;
    for (name, dtype, shape) in expected {
        let Some(e) = file.header.get(name) else {
            return Err(Violation::new(
                path,
                set_rule,
                format!("a {dtype} tensor of shape {}", shape_string(shape)),
                "no such tensor",
            )
            .tensor(name)
            .into());
        };
        if e.dtype != *dtype || e.shape != *shape {
            return Err(Violation::new(
                path,
                shape_rule,
                format!("{dtype} of shape {}", shape_string(shape)),
                format!("{} of shape {}", e.dtype, shape_string(&e.shape)),
            )
            .tensor(name)
            .into());
        }
    }
    if file.header.entries.len() != expected.len() {
        let known: HashSet<&str> = expected.iter().map(|(n, _, _)| n.as_str()).collect();
        let extra = file
            .header
            .entries
            .iter()
            .find(|e| !known.contains(e.name.as_str()));
        let found = extra
            .map(|e| format!("unexpected tensor {}", escape_name(&e.name)))
            .unwrap_or_default();
        return Err(Violation::new(
            path,
            set_rule,
            format!("exactly {} tensors", expected.len()),
            found,
        )
        .into());
    }
    Ok(())
}

/// Rules 4.1, 4.2 (`ternary`) and 5.1 (`fp16`); returns where every manifest tensor's bytes
/// are, in manifest order.
pub(crate) fn check_model_files(
    ternary: &DataFile,
    fp16: &DataFile,
    manifest: &Manifest,
    facts: &ManifestFacts,
) -> Result<Vec<TensorRanges>> {
    check_tensor_set(
        ternary,
        &ternary_layout(manifest, &facts.params, &ternary.path)?,
        Rule::TernaryTensorSet,
        Rule::TernaryShapes,
    )?;
    check_tensor_set(
        fp16,
        &fp16_layout(manifest),
        Rule::Fp16TensorSet,
        Rule::Fp16TensorSet,
    )?;
    // The sets were just proven: every lookup below succeeds.
    let range = |file: &DataFile, name: &str, rule: Rule| {
        file.range(name).ok_or_else(|| {
            Violation::new(&file.path, rule, "a tensor of the layout", "no such tensor")
                .tensor(name)
        })
    };
    manifest
        .tensors
        .iter()
        .map(|t| {
            Ok(TensorRanges {
                fp16: range(fp16, &t.name, Rule::Fp16TensorSet)?,
                stored: range(ternary, &t.name, Rule::TernaryTensorSet)?,
                scales: match t.quantized {
                    true => Some(range(
                        ternary,
                        &scale_tensor_name(&t.name),
                        Rule::TernaryTensorSet,
                    )?),
                    false => None,
                },
            })
        })
        .collect()
}

/// Rule 6.1: the validation file holds `inputs` F32 [N, input_dim], `labels` I64 [N], and
/// optionally `difficulty` U8 [N] and (from format 2.0) `original_predictions` I64 [N]; for a
/// decoder, `input_ids` I64 [N, T >= 2], `labels` I64 [N, T - 1], and optionally `difficulty`
/// U8 [N] and `original_predictions` I64 [N, T - 1].
pub(crate) fn check_validation_file(
    file: &DataFile,
    manifest: &Manifest,
    version: FormatVersion,
) -> Result<ValidationRanges> {
    let bad = |expected: String, found: String| {
        Violation::new(&file.path, Rule::ValidationTensors, expected, found)
    };
    let has = |name| file.header.get(name).is_some();
    if has(VALIDATION_ORIGINAL_PREDICTIONS) && !version.allows_original_predictions() {
        // A 1.x reader refuses this tensor, so a 1.x bundle cannot carry it.
        return Err(bad(
            format!(
                "no original_predictions in a format {version} bundle (needs format 2.0 or later)"
            ),
            "a tensor named original_predictions".into(),
        )
        .tensor(VALIDATION_ORIGINAL_PREDICTIONS)
        .into());
    }
    let (first, n, tokens) = if manifest.model.decoder.is_some() {
        // A decoder's sequences: N >= 1 of T >= 2 tokens (a label needs a next token).
        match file.header.get(VALIDATION_INPUT_IDS) {
            Some(e) if e.shape.len() == 2 && e.shape[0] >= 1 && e.shape[1] >= 2 => {
                (VALIDATION_INPUT_IDS, e.shape[0], e.shape[1])
            }
            Some(e) => {
                return Err(bad(
                    "input_ids of shape [N >= 1, T >= 2]".into(),
                    shape_string(&e.shape),
                )
                .tensor(VALIDATION_INPUT_IDS)
                .into())
            }
            None => return Err(bad("a tensor named input_ids".into(), "none".into()).into()),
        }
    } else {
        match file.header.get(VALIDATION_INPUTS) {
            Some(e) if e.shape.len() == 2 && e.shape[0] >= 1 => (VALIDATION_INPUTS, e.shape[0], 0),
            Some(e) => {
                return Err(bad(
                    format!("inputs of shape [N >= 1, {}]", manifest.model.input_dim),
                    shape_string(&e.shape),
                )
                .tensor(VALIDATION_INPUTS)
                .into())
            }
            None => return Err(bad("a tensor named inputs".into(), "none".into()).into()),
        }
    };
    let original = original_record(file, manifest, version, n, tokens)?;
    let expected = if manifest.model.decoder.is_some() {
        decoder_validation_layout(n, tokens, has(VALIDATION_DIFFICULTY), original)
    } else {
        validation_layout(
            n,
            manifest.model.input_dim,
            has(VALIDATION_DIFFICULTY),
            original,
        )
    };
    check_tensor_set(
        file,
        &expected,
        Rule::ValidationTensors,
        Rule::ValidationTensors,
    )?;
    let range = |name: &str| {
        file.range(name)
            .ok_or_else(|| bad(format!("a tensor named {name}"), "none".into()))
    };
    Ok(ValidationRanges {
        samples: n as usize,
        tokens: tokens as usize,
        inputs: range(first)?,
        labels: range(VALIDATION_LABELS)?,
        difficulty: file.range(VALIDATION_DIFFICULTY),
        original_predictions: file.range(VALIDATION_ORIGINAL_PREDICTIONS),
        distributions: match original {
            OriginalRecord::Distributions {
                form: Form::Full, ..
            } => Some(DistributionRanges::Full {
                log_probs: range(VALIDATION_ORIGINAL_LOG_PROBS)?,
            }),
            OriginalRecord::Distributions {
                form: Form::TopK(k),
                ..
            } => Some(DistributionRanges::TopK {
                k: k as usize,
                ids: range(VALIDATION_ORIGINAL_TOP_IDS)?,
                log_probs: range(VALIDATION_ORIGINAL_TOP_LOG_PROBS)?,
                log_sum_exp: range(VALIDATION_ORIGINAL_LOG_SUM_EXP)?,
                label_log_probs: range(VALIDATION_ORIGINAL_LABEL_LOG_PROBS)?,
            }),
            _ => None,
        },
    })
}

/// What the validation file records of the original model, from the names its header holds
/// (rules 6.1 and 6.4): the distributions need format 5.0 and `original_predictions`, one form
/// only; K of the top-K form is the last dimension of `original_top_ids`, 1 <= K <=
/// min(classes, 1024). The layout check that follows proves every shape.
fn original_record(
    file: &DataFile,
    manifest: &Manifest,
    version: FormatVersion,
    n: u64,
    tokens: u64,
) -> Result<OriginalRecord> {
    let bad = |expected: String, found: String| {
        Violation::new(&file.path, Rule::ValidationTensors, expected, found)
    };
    let has = |name| file.header.get(name).is_some();
    let present: Vec<&str> = VALIDATION_DISTRIBUTION_TENSORS
        .into_iter()
        .filter(|n| has(n))
        .collect();
    if !has(VALIDATION_ORIGINAL_PREDICTIONS) {
        return Ok(OriginalRecord::Nothing);
    }
    let Some(&first) = present.first() else {
        return Ok(OriginalRecord::Predictions);
    };
    if !version.allows_distributions() {
        // A 4.x reader refuses these tensors, so a 4.x bundle cannot carry them.
        return Err(bad(
            format!("no original distributions in a format {version} bundle (needs format 5.0 or later)"),
            format!("a tensor named {first}"),
        )
        .tensor(first)
        .into());
    }
    let classes = match &manifest.model.decoder {
        Some(d) => d.vocab_size,
        None => manifest.model.layers.last().map_or(0, |l| l.out_features),
    };
    if has(VALIDATION_ORIGINAL_LOG_PROBS) {
        return Ok(OriginalRecord::Distributions {
            form: Form::Full,
            classes,
        });
    }
    // The top-K form: K from original_top_ids, after the scored dimensions.
    let scored_rank = if tokens > 0 { 2 } else { 1 };
    let k = file
        .header
        .get(VALIDATION_ORIGINAL_TOP_IDS)
        .filter(|e| e.shape.len() == scored_rank + 1)
        .map(|e| e.shape[scored_rank]);
    match k {
        Some(k) if (1..=classes.min(MAX_TOP_K)).contains(&k) => Ok(OriginalRecord::Distributions {
            form: Form::TopK(k),
            classes,
        }),
        Some(k) => Err(bad(
            format!(
                "original_top_ids with K in 1..={} (at most the {classes} classes and {MAX_TOP_K})",
                classes.min(MAX_TOP_K)
            ),
            format!("K = {k}"),
        )
        .tensor(VALIDATION_ORIGINAL_TOP_IDS)
        .into()),
        None => Err(bad(
            format!(
                "original_log_probs, or original_top_ids of shape [{}, K] with the rest of the top-K form",
                if tokens > 0 { format!("{n}, {}", tokens - 1) } else { n.to_string() }
            ),
            match file.header.get(VALIDATION_ORIGINAL_TOP_IDS) {
                Some(e) => format!("original_top_ids of shape {}", shape_string(&e.shape)),
                None => format!("{} without original_top_ids", present.join(", ")),
            },
        )
        .tensor(VALIDATION_ORIGINAL_TOP_IDS)
        .into()),
    }
}

/// Rule 1.4: `validation.safetensors` exists exactly when the manifest declares it.
pub(crate) fn check_validation_presence(dir: &Path, declared: bool, exists: bool) -> Result<()> {
    if declared == exists {
        return Ok(());
    }
    let (expected, found) = if declared {
        (
            "the validation file declared in manifest files.validation",
            "no such file",
        )
    } else {
        (
            "no validation file (manifest files.validation is absent)",
            "an undeclared validation file",
        )
    };
    Err(Violation::new(
        dir.join(FileRole::Validation.file_name()),
        Rule::ValidationFilePresence,
        expected,
        found,
    )
    .into())
}
