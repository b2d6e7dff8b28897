//! Re-quantization after fine-tuning (`bundle requantize`): new F32/F16 weights for the same
//! model are quantized into a new bundle with the old bundle's settings, either with fresh
//! absmean scales or with the old bundle's stored scales, and every quantized tensor reports how
//! many trits changed.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{escape_name, Error, Result};
use crate::format::layout::{VALIDATION_DIFFICULTY, VALIDATION_INPUTS, VALIDATION_LABELS};
use crate::format::le;
use crate::format::manifest::FileRole;
use crate::format::safetensors::Dtype;
use crate::read::Bundle;
use crate::source::{to_f32, TensorSource, ValidationSet};
use crate::write::bundle::{write_bundle, WriteOptions, WriteReport};
use crate::write::plan::BundlePlan;

/// How many trits of one tensor changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TritChanges {
    /// Tensor name.
    pub name: String,
    /// Trits in the tensor.
    pub trits: u64,
    /// Trits that differ between the old and the new bundle.
    pub changed: u64,
}

/// Writes a bundle of `source` (the fine-tuned weights of `old`'s model) to `dest`, with `old`'s
/// architecture, settings, quantized tensor set and validation set. With `keep_scales` the
/// stored scales of `old` are reused. Returns the write report and the per-tensor trit changes.
pub fn requantize(
    old: &Bundle,
    source: &dyn TensorSource,
    dest: &Path,
    keep_scales: bool,
    options: WriteOptions,
) -> Result<(WriteReport, Vec<TritChanges>)> {
    let m = old.manifest();
    if let Some(given) = &m.quantization.source {
        // No setting of this tool's quantizer reproduces another quantizer's trits.
        return Err(Error::InvalidArgument(format!(
            "{}: its trits were given by an already-ternary source ({}, method \"given\"), not made by this tool's quantizer, so no setting reproduces them: quantize the fine-tuned weights with the stage that made them, or `bundle create --from` them with explicit settings",
            old.dir().display(),
            escape_name(&given.format)
        )));
    }
    let available: BTreeSet<String> = source.tensors().into_iter().map(|t| t.name).collect();
    for t in &m.tensors {
        if !available.contains(&t.name) {
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {} of the bundle is missing from the new weights",
                source.path().display(),
                escape_name(&t.name)
            )));
        }
    }
    let plan = BundlePlan {
        model: m.model.clone(),
        params: *old.params(),
        quantize: old.quantized().map(|p| p.spec.name.clone()).collect(),
        given: None,
    };
    let mut options = options;
    if keep_scales {
        options.fixed_scales = old
            .quantized()
            .map(|p| (p.spec.name.clone(), p.scales()))
            .collect();
    }
    if options.validation.is_none() {
        options.validation = bundle_validation_set(old);
    }
    let only = RestrictedSource {
        inner: source,
        names: m.tensors.iter().map(|t| t.name.clone()).collect(),
    };
    let report = write_bundle(dest, &only, &plan, &options)?;
    let new = Bundle::open(dest)?;
    let mut changes = Vec::new();
    for a in old.quantized() {
        let name = &a.spec.name;
        // Written from the same plan, the new bundle quantizes the same tensors.
        let b = new
            .packed(name)
            .ok_or_else(|| new.missing_tensor(FileRole::Ternary, name))?;
        let mut ta = vec![0i8; a.cols];
        let mut tb = vec![0i8; b.cols];
        let mut changed = 0u64;
        for r in 0..a.rows {
            a.encoding
                .unpack_row(a.row(r), &mut ta)
                .map_err(|e| old.row_error(name, r, e))?;
            b.encoding
                .unpack_row(b.row(r), &mut tb)
                .map_err(|e| new.row_error(name, r, e))?;
            changed += ta.iter().zip(&tb).filter(|(x, y)| x != y).count() as u64;
        }
        // Compared: both tensors' mapped pages leave the resident set.
        old.release(a.packed);
        new.release(b.packed);
        changes.push(TritChanges {
            name: name.clone(),
            trits: (a.rows * a.cols) as u64,
            changed,
        });
    }
    Ok((report, changes))
}

/// A source limited to the tensors of the old bundle (a fine-tuned checkpoint may carry more,
/// such as optimizer state or LoRA adapters).
struct RestrictedSource<'a> {
    inner: &'a dyn TensorSource,
    names: BTreeSet<String>,
}

impl TensorSource for RestrictedSource<'_> {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn tensors(&self) -> Vec<crate::source::SourceTensor> {
        self.inner
            .tensors()
            .into_iter()
            .filter(|t| self.names.contains(&t.name))
            .collect()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.inner.load_f32(name)
    }

    fn sha256(&self) -> Option<String> {
        self.inner.sha256()
    }
}

/// The validation set embedded in an open bundle, if any (its original predictions are left
/// behind: the writer computes the new weights' own).
fn bundle_validation_set(bundle: &Bundle) -> Option<ValidationSet> {
    let f = bundle.file(FileRole::Validation)?;
    Some(ValidationSet {
        input_ids: None,
        origin: f.path().to_path_buf(),
        inputs: to_f32(Dtype::F32, f.tensor_bytes(VALIDATION_INPUTS)?)?,
        labels: le::i64s(f.tensor_bytes(VALIDATION_LABELS)?).collect(),
        difficulty: f.tensor_bytes(VALIDATION_DIFFICULTY).map(<[u8]>::to_vec),
    })
}
