//! The labelled data an assessment runs on: the bundle's validation set, or a file in the same
//! layout (`inputs` F32 [N, input_dim], `labels` I64 [N], `difficulty` U8 [N]; for a decoder
//! `input_ids` I64 [N, T], labels I64 [N, T - 1] or the next tokens, `difficulty` U8 [N]), with
//! the difficulty column it cannot do without. An example is a row, or a decoder's sequence
//! (whose every position but the last is scored).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::error::{Error, Result};
use crate::format::le;
use crate::read::checks::{check_validation_values, token_values, validation_values};
use crate::read::Bundle;
use crate::source::load_validation_set;

/// Inputs, labels and difficulty levels, one per example.
#[derive(Debug, Clone)]
pub struct LabelledData {
    /// Where the data came from (named in reports and errors).
    pub origin: PathBuf,
    width: usize,
    inputs: Vec<f32>,
    /// A decoder's token sequences (`[N, tokens]`; empty for a chain of layers).
    ids: Vec<i64>,
    /// Tokens per sequence (0 for a chain of layers).
    tokens: usize,
    /// The class of each example (a decoder: of each scored position, `[N, tokens - 1]`).
    pub labels: Vec<usize>,
    difficulty: Vec<u8>,
}

impl LabelledData {
    /// The bundle's validation set (its values checked, rules 6.2 and 6.3); it must have a
    /// difficulty column.
    pub fn from_bundle(bundle: &Bundle) -> Result<Self> {
        let Some(v) = bundle.validation() else {
            return Err(Error::MissingData(format!(
                "{}: the bundle has no validation set, so there is no labelled data to assess on; give --data FILE (inputs F32 [N, {}], labels I64 [N], difficulty U8 [N])",
                bundle.dir().display(),
                bundle.manifest().model.input_dim
            )));
        };
        let Some(difficulty) = v.difficulty else {
            return Err(Error::MissingData(format!(
                "{}: the validation set has no difficulty column (difficulty U8 [N]), so it has no curriculum levels; give --data FILE with one",
                v.path.display()
            )));
        };
        check_validation_values(bundle)?;
        let decoder = bundle.decoder().is_some();
        Ok(LabelledData {
            origin: v.path.to_path_buf(),
            width: bundle.manifest().model.input_dim as usize,
            inputs: if decoder {
                Vec::new()
            } else {
                le::f32s(v.inputs).collect()
            },
            ids: if decoder {
                le::i64s(v.inputs).collect()
            } else {
                Vec::new()
            },
            tokens: v.tokens,
            labels: le::i64s(v.labels).map(|l| l as usize).collect(),
            difficulty: difficulty.to_vec(),
        })
    }

    /// A data file in the validation layout, for `bundle`'s model: inputs of its input width,
    /// finite, and labels among its classes (rule 6.2), with a difficulty column.
    pub fn from_file(path: &Path, bundle: &Bundle) -> Result<Self> {
        let set = load_validation_set(path)?;
        if let Some(spec) = bundle.decoder() {
            let Some(ids) = set.input_ids else {
                return Err(Error::InvalidArgument(format!(
                    "{}: the bundle holds a language model: expected token sequences input_ids I64 [N, T], found inputs of a chain of layers",
                    path.display()
                )));
            };
            token_values(path, &ids.ids, &set.labels, spec.vocab_size as u64)?;
            let Some(difficulty) = set.difficulty else {
                return Err(Error::MissingData(format!(
                    "{}: no difficulty column (difficulty U8 [N]), so the data has no curriculum levels",
                    path.display()
                )));
            };
            return Ok(LabelledData {
                origin: path.to_path_buf(),
                width: 0,
                inputs: Vec::new(),
                ids: ids.ids,
                tokens: ids.tokens,
                labels: set.labels.iter().map(|&l| l as usize).collect(),
                difficulty,
            });
        }
        let width = bundle.manifest().model.input_dim as usize;
        let n = set.labels.len();
        if set.inputs.len() != n.saturating_mul(width) {
            return Err(Error::InvalidArgument(format!(
                "{}: inputs of {} values for {n} labels, where the model takes {width} per example",
                path.display(),
                set.inputs.len()
            )));
        }
        validation_values(
            path,
            set.inputs.iter().copied(),
            set.labels.iter().copied(),
            bundle.classes(),
        )?;
        let Some(difficulty) = set.difficulty else {
            return Err(Error::MissingData(format!(
                "{}: no difficulty column (difficulty U8 [N]), so the data has no curriculum levels",
                path.display()
            )));
        };
        Ok(LabelledData {
            origin: path.to_path_buf(),
            width,
            inputs: set.inputs,
            ids: Vec::new(),
            tokens: 0,
            labels: set.labels.iter().map(|&l| l as usize).collect(),
            difficulty,
        })
    }

    /// The rows of each difficulty level present, levels in increasing order.
    pub fn levels(&self) -> Vec<(u8, Vec<usize>)> {
        let mut by_level: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for (row, &level) in self.difficulty.iter().enumerate() {
            by_level.entry(level).or_default().push(row);
        }
        by_level.into_iter().collect()
    }

    /// The token ids of a decoder's sequences `rows`, `[rows.len(), tokens]`.
    pub fn ids_of(&self, rows: &[usize]) -> Array2<i64> {
        let t = self.tokens;
        Array2::from_shape_fn((rows.len(), t), |(i, j)| self.ids[rows[i] * t + j])
    }

    /// The labels of examples `rows`: one per row, or a decoder's `tokens - 1` per sequence.
    pub fn labels_of(&self, rows: &[usize]) -> Vec<usize> {
        let per = self.tokens.saturating_sub(1).max(1);
        rows.iter()
            .flat_map(|&r| self.labels[r * per..(r + 1) * per].iter().copied())
            .collect()
    }

    /// The inputs of `rows`, `[rows.len(), input_dim]`.
    pub fn inputs_of(&self, rows: &[usize]) -> Array2<f32> {
        let d = self.width;
        Array2::from_shape_fn((rows.len(), d), |(i, j)| self.inputs[rows[i] * d + j])
    }
}
