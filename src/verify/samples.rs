//! The inputs of verify's model checks: the bundle's validation set, or seeded synthetic inputs,
//! served a chunk of rows at a time (sized by [`crate::model::chunks`]) and decoded or generated
//! per chunk, so that memory stays bounded whatever widths and sample counts a bundle declares.

use std::ops::Range;

use ndarray::Array2;
use ndarray_rand::rand::{Rng, SeedableRng};
use ndarray_rand::rand_distr::StandardNormal;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

use crate::format::le;
use crate::model::distribution::{Distributions, Stored};
use crate::read::checks;
use crate::read::{Bundle, DistributionView, ValidationView};

/// Where the inputs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin<'b> {
    /// The validation set's `inputs` tensor (little-endian f32, `[n, d]`).
    Validation(&'b [u8]),
    /// Standard normal values; row `i` comes from ChaCha8 seeded with `seed`, stream `i + 1`.
    Synthetic(u64),
}

/// Tokens per synthetic sequence when a decoder's bundle has no validation set.
pub const SYNTHETIC_TOKENS: usize = 16;

/// A decoder's token sequences: `n` of `tokens` ids, from the validation set's `input_ids`
/// (little-endian I64) or drawn uniformly from the vocabulary (sequence `i` from ChaCha8 seeded
/// with the seed, stream `i + 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sequences {
    n: usize,
    tokens: usize,
    vocab: usize,
}

/// The model checks' inputs and labels. For a decoder a sample is a position of a sequence
/// (every position but the last, whose next token is its label): labels, predictions and
/// difficulties are per position, sequences are run whole.
#[derive(Debug, Clone)]
pub struct Samples<'b> {
    origin: Origin<'b>,
    width: usize,
    sequences: Option<Sequences>,
    labels: Vec<usize>,
    /// The original model's predictions stored with a validation set (rule 6.3).
    original: Option<Vec<usize>>,
    /// Difficulty per sample, when the validation set has one (a decoder's: its sequence's).
    difficulty: Option<Vec<u8>>,
    /// The original model's distributions stored with a validation set (format 5.0).
    distributions: Option<Distributions>,
}

/// The stored distributions of a validation set, decoded (rule 6.4 checked).
fn distributions(v: &ValidationView<'_>, classes: usize, rows: usize) -> Option<Distributions> {
    let stored = match v.distributions? {
        DistributionView::Full { log_probs } => Stored::Full {
            log_probs: le::f32s(log_probs).collect(),
        },
        DistributionView::TopK {
            k,
            ids,
            log_probs,
            log_sum_exp,
            label_log_probs,
        } => Stored::TopK {
            k,
            ids: le::i64s(ids).collect(),
            log_probs: le::f32s(log_probs).collect(),
            log_sum_exp: le::f32s(log_sum_exp).collect(),
            label_log_probs: le::f32s(label_log_probs).collect(),
        },
    };
    Some(Distributions {
        classes,
        rows,
        stored,
    })
}

impl<'b> Samples<'b> {
    /// The validation set of `bundle` (its values checked, rules 6.2 and 6.3) if it has one,
    /// otherwise `samples` synthetic inputs of the model's input width, with labels drawn
    /// uniformly from the classes (ChaCha8 seeded with `seed`, stream 0).
    pub fn of_bundle(bundle: &'b Bundle, samples: usize, seed: u64) -> Result<Self> {
        if let Some(spec) = bundle.decoder() {
            return Self::of_decoder(bundle, spec.vocab_size, samples, seed);
        }
        let width = bundle.manifest().model.input_dim as usize;
        if let Some(v) = bundle.validation() {
            checks::check_validation_values(bundle)?;
            // Rules 6.2 and 6.3 proved every label and prediction a class index.
            return Ok(Samples {
                origin: Origin::Validation(v.inputs),
                width,
                sequences: None,
                labels: classes(v.labels),
                original: v.original_predictions.map(classes),
                difficulty: v.difficulty.map(<[u8]>::to_vec),
                distributions: distributions(&v, bundle.classes() as usize, v.samples),
            });
        }
        let classes = bundle.classes().max(1) as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let labels = (0..samples).map(|_| rng.random_range(0..classes)).collect();
        Ok(Samples {
            origin: Origin::Synthetic(seed),
            width,
            sequences: None,
            labels,
            original: None,
            difficulty: None,
            distributions: None,
        })
    }

    /// A decoder's sequences: the validation set's (labels, predictions and difficulty per
    /// position), or `max(1, samples / 16)` synthetic sequences of 16 tokens whose labels are
    /// their next tokens.
    fn of_decoder(bundle: &'b Bundle, vocab: usize, samples: usize, seed: u64) -> Result<Self> {
        if let Some(v) = bundle.validation() {
            checks::check_validation_values(bundle)?;
            let per = v.tokens.saturating_sub(1);
            return Ok(Samples {
                origin: Origin::Validation(v.inputs),
                width: 0,
                sequences: Some(Sequences {
                    n: v.samples,
                    tokens: v.tokens,
                    vocab,
                }),
                labels: classes(v.labels),
                original: v.original_predictions.map(classes),
                difficulty: v.difficulty.map(|d| {
                    d.iter()
                        .flat_map(|&l| std::iter::repeat_n(l, per))
                        .collect()
                }),
                distributions: distributions(&v, vocab, v.samples * per),
            });
        }
        let mut s = Samples {
            origin: Origin::Synthetic(seed),
            width: 0,
            sequences: Some(Sequences {
                n: (samples / SYNTHETIC_TOKENS).max(1),
                tokens: SYNTHETIC_TOKENS,
                vocab,
            }),
            labels: Vec::new(),
            original: None,
            difficulty: None,
            distributions: None,
        };
        let (n, _) = s.sequence_shape().expect("a decoder's");
        let ids = s.ids(0..n);
        s.labels = ids
            .rows()
            .into_iter()
            .flat_map(|row| {
                row.iter()
                    .skip(1)
                    .map(|&id| id as usize)
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(s)
    }

    /// A decoder's sequences as (count, tokens each); `None` for a chain of layers.
    pub fn sequence_shape(&self) -> Option<(usize, usize)> {
        self.sequences.map(|s| (s.n, s.tokens))
    }

    /// The token ids of sequences `seqs`, `[seqs.len(), tokens]` (a decoder's samples only;
    /// empty otherwise). `seqs` must lie within the sequences.
    pub fn ids(&self, seqs: Range<usize>) -> Array2<i64> {
        let Some(sq) = self.sequences else {
            return Array2::zeros((0, 0));
        };
        assert!(seqs.end <= sq.n, "sequences {seqs:?} of {}", sq.n);
        let t = sq.tokens;
        match self.origin {
            Origin::Validation(bytes) => {
                let values: Vec<i64> =
                    crate::format::le::i64s(&bytes[8 * t * seqs.start..8 * t * seqs.end]).collect();
                Array2::from_shape_vec((seqs.len(), t), values).expect("whole sequences")
            }
            Origin::Synthetic(seed) => {
                let mut x = Array2::zeros((seqs.len(), t));
                for (mut row, i) in x.rows_mut().into_iter().zip(seqs) {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(i as u64 + 1);
                    row.iter_mut()
                        .for_each(|v| *v = rng.random_range(0..sq.vocab.max(1)) as i64);
                }
                x
            }
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// What one sample is, for messages: `"inputs"`, or for a decoder `"next-token positions
    /// of N sequences"`.
    pub fn unit(&self) -> String {
        match self.sequences {
            Some(sq) => format!("next-token positions of {} sequences", sq.n),
            None => "inputs".into(),
        }
    }

    /// `"validation"` or `"synthetic"`.
    pub fn source(&self) -> &'static str {
        match self.origin {
            Origin::Validation(_) => "validation",
            Origin::Synthetic(_) => "synthetic",
        }
    }

    /// The labels, one per sample (drawn at random for synthetic inputs: see
    /// [`Samples::has_labels`]).
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Whether the labels are real: a validation set's, not drawn for synthetic inputs.
    pub fn has_labels(&self) -> bool {
        matches!(self.origin, Origin::Validation(_))
    }

    /// The original model's predictions stored with the validation set, one per sample.
    pub fn original_predictions(&self) -> Option<&[usize]> {
        self.original.as_deref()
    }

    /// The original model's distributions stored with the validation set, one per sample
    /// (format 5.0).
    pub fn distributions(&self) -> Option<&Distributions> {
        self.distributions.as_ref()
    }

    /// Difficulty per sample, when the validation set has one.
    pub fn difficulty(&self) -> Option<&[u8]> {
        self.difficulty.as_deref()
    }

    /// The inputs of samples `rows`, `[rows.len(), input_dim]`. `rows` must lie within
    /// `0..len()`.
    pub fn rows(&self, rows: Range<usize>) -> Array2<f32> {
        assert!(rows.end <= self.len(), "rows {rows:?} of {}", self.len());
        let (n, d) = (rows.len(), self.width);
        match self.origin {
            Origin::Validation(bytes) => {
                let values: Vec<f32> =
                    crate::format::le::f32s(&bytes[4 * d * rows.start..4 * d * rows.end]).collect();
                Array2::from_shape_fn((n, d), |(r, c)| values[r * d + c])
            }
            Origin::Synthetic(seed) => {
                let mut x = Array2::zeros((n, d));
                for (mut row, i) in x.rows_mut().into_iter().zip(rows) {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(i as u64 + 1);
                    row.iter_mut()
                        .for_each(|v| *v = rng.sample::<f32, _>(StandardNormal));
                }
                x
            }
        }
    }

    /// The row ranges of consecutive chunks of at most `rows` samples.
    pub fn chunks(&self, rows: usize) -> impl Iterator<Item = Range<usize>> {
        let (n, step) = (self.len(), rows.max(1));
        (0..n).step_by(step).map(move |s| s..(s + step).min(n))
    }
}

/// Little-endian I64 values (labels, predictions: rules 6.2 and 6.3 proved them classes) as
/// indices.
fn classes(bytes: &[u8]) -> Vec<usize> {
    crate::format::le::i64s(bytes).map(|l| l as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_rows_do_not_depend_on_chunking() {
        let s = Samples {
            origin: Origin::Synthetic(9),
            width: 5,
            sequences: None,
            labels: vec![0; 10],
            original: None,
            difficulty: None,
            distributions: None,
        };
        let all = s.rows(0..10);
        assert!(all.iter().all(|v| v.is_finite()) && all.row(0) != all.row(1));
        let chunks: Vec<_> = s.chunks(3).collect();
        assert_eq!(chunks, [0..3, 3..6, 6..9, 9..10]);
        for c in chunks {
            assert_eq!(s.rows(c.clone()), all.slice(ndarray::s![c, ..]));
        }
        // Another seed gives other inputs.
        let other = Samples {
            origin: Origin::Synthetic(10),
            ..s.clone()
        };
        assert_ne!(other.rows(0..10), all);
    }

    #[test]
    fn validation_rows_are_decoded_from_the_bytes() {
        let values: Vec<f32> = (0..12).map(|v| v as f32 - 6.0).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let s = Samples {
            origin: Origin::Validation(&bytes),
            width: 4,
            sequences: None,
            labels: vec![1, 2, 0],
            original: None,
            difficulty: None,
            distributions: None,
        };
        assert_eq!(s.source(), "validation");
        assert_eq!(
            s.rows(1..3),
            ndarray::arr2(&[[-2.0, -1.0, 0.0, 1.0], [2.0, 3.0, 4.0, 5.0]])
        );
        assert_eq!(s.chunks(2).collect::<Vec<_>>(), [0..2, 2..3]);
    }
}
