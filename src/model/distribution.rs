//! The original model's distributions over its classes (a decoder's tokens), as
//! `validation.safetensors` stores them (format 5.0, rules 6.1 and 6.4, spec section 9.1), and
//! how a weight path's distribution is measured against them (spec section 16.3): the KL
//! divergence KL(original || path) per scored sample, exact for the full form and, for the
//! top-K form, the K classes and the rest as one outcome (a lower bound) with an upper bound;
//! the cross-entropy of the labels. Everything is computed in f64 from f32 logits.

use ndarray::ArrayView2;

use crate::error::{Error, Result};
pub use crate::format::distribution::{log_sum_exp, Form};

/// The stored values of one form, row-major, one row per scored sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// `[rows, classes]` log-probabilities.
    Full {
        /// The log-softmax of each row's logits.
        log_probs: Vec<f32>,
    },
    /// The K most probable classes of each row, most probable first (ties: lower id first).
    TopK {
        /// K.
        k: usize,
        /// `[rows, k]` class ids.
        ids: Vec<i64>,
        /// `[rows, k]` their log-probabilities.
        log_probs: Vec<f32>,
        /// `[rows]` the log-sum-exp of each row's logits (logit = log-probability + it).
        log_sum_exp: Vec<f32>,
        /// `[rows]` the log-probability of the row's label.
        label_log_probs: Vec<f32>,
    },
}

/// The original model's distribution at each scored sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Distributions {
    /// Classes (the last layer's `out_features`, a decoder's `vocab_size`).
    pub classes: usize,
    /// Scored samples.
    pub rows: usize,
    /// The values.
    pub stored: Stored,
}

/// One path's distribution at one sample against the original's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowFidelity {
    /// KL(original || path) in nats: exact for the full form, the lower bound of the top-K
    /// form (section 16.3).
    pub kl: f64,
    /// How far the exact KL can lie above `kl` (0 for the full form).
    pub kl_bound: f64,
    /// −log q(label) of the path, in nats.
    pub nll: f64,
}

/// −log q(label) of a row of `logits` in nats (f64; infinite for non-finite logits, NaN for a
/// label out of range).
pub fn nll(logits: &[f32], label: usize) -> f64 {
    match (log_sum_exp(logits), logits.get(label)) {
        (Ok(lse), Some(&x)) => lse - x as f64,
        (Err(_), _) => f64::INFINITY,
        (_, None) => f64::NAN,
    }
}

impl Distributions {
    /// An empty set of distributions of `form` over `classes`, to be filled by
    /// [`Distributions::push_rows`].
    pub fn new(form: Form, classes: usize) -> Self {
        let stored = match form {
            Form::Full => Stored::Full {
                log_probs: Vec::new(),
            },
            Form::TopK(k) => Stored::TopK {
                k: (k as usize).min(classes),
                ids: Vec::new(),
                log_probs: Vec::new(),
                log_sum_exp: Vec::new(),
                label_log_probs: Vec::new(),
            },
        };
        Distributions {
            classes,
            rows: 0,
            stored,
        }
    }

    /// The form.
    pub fn form(&self) -> Form {
        match &self.stored {
            Stored::Full { .. } => Form::Full,
            Stored::TopK { k, .. } => Form::TopK(*k as u64),
        }
    }

    /// Appends the distributions of `logits` (a row per scored sample, `classes` columns) with
    /// the samples' `labels` (spec section 9.1: log-probabilities x − LSE(x) in f64, rounded to
    /// f32; the top K by logit, ties to the lower id). A non-finite logit is an error naming
    /// the sample, since no distribution can be stored for it.
    pub fn push_rows(&mut self, logits: ArrayView2<f32>, labels: &[i64]) -> Result<()> {
        if logits.ncols() != self.classes || labels.len() != logits.nrows() {
            return Err(Error::InvalidArgument(format!(
                "original distributions: {} rows of {} logits with {} labels, expected rows of {} classes with one label each",
                logits.nrows(),
                logits.ncols(),
                labels.len(),
                self.classes
            )));
        }
        let mut row_buf = Vec::with_capacity(self.classes);
        for (r, (logit_row, &label)) in logits.rows().into_iter().zip(labels).enumerate() {
            row_buf.clear();
            row_buf.extend(logit_row.iter().copied());
            let lse = log_sum_exp(&row_buf).map_err(|i| {
                Error::InvalidArgument(format!(
                    "the original model's logit {i} of scored sample {} is {}: no distribution can be stored for it",
                    self.rows + r,
                    row_buf[i]
                ))
            })?;
            let lp = |i: usize| (row_buf[i] as f64 - lse) as f32;
            match &mut self.stored {
                Stored::Full { log_probs } => log_probs.extend((0..row_buf.len()).map(lp)),
                Stored::TopK {
                    k,
                    ids,
                    log_probs,
                    log_sum_exp,
                    label_log_probs,
                } => {
                    let top = top_k(&row_buf, *k);
                    ids.extend(top.iter().map(|&i| i as i64));
                    log_probs.extend(top.iter().map(|&i| lp(i)));
                    log_sum_exp.push(lse as f32);
                    let l = usize::try_from(label).ok().filter(|&l| l < row_buf.len());
                    label_log_probs.push(l.map_or(f32::NAN, lp));
                }
            }
        }
        self.rows += logits.nrows();
        Ok(())
    }

    /// The path's distribution (`logits`, one row of `classes` logits) at scored sample `row`
    /// against the original's, with the row's `label`: [`RowFidelity`]. `scratch` is reused
    /// between calls. A non-finite logit gives an infinite KL and cross-entropy.
    pub fn measure(
        &self,
        row: usize,
        logits: &[f32],
        label: usize,
        scratch: &mut Vec<f64>,
    ) -> RowFidelity {
        let Ok(lse) = log_sum_exp(logits) else {
            return RowFidelity {
                kl: f64::INFINITY,
                kl_bound: 0.0,
                nll: f64::INFINITY,
            };
        };
        let lq = |i: usize| logits[i] as f64 - lse;
        let nll = -logits.get(label).map_or(f64::NAN, |_| lq(label));
        match &self.stored {
            Stored::Full { log_probs } => {
                let p = &log_probs[row * self.classes..(row + 1) * self.classes];
                let kl = p
                    .iter()
                    .enumerate()
                    .map(|(i, &lp)| (lp as f64).exp() * (lp as f64 - lq(i)))
                    .sum();
                RowFidelity {
                    kl,
                    kl_bound: 0.0,
                    nll,
                }
            }
            Stored::TopK {
                k, ids, log_probs, ..
            } => {
                let ids = &ids[row * k..(row + 1) * k];
                let lps = &log_probs[row * k..(row + 1) * k];
                let mut head = 0.0;
                let mut p_head = 0.0;
                // The path's log-probabilities, those of the top K then marked as taken (an id
                // out of range, which rule 6.4 forbids, makes the KL NaN rather than panic).
                scratch.clear();
                scratch.extend((0..logits.len()).map(lq));
                for (&id, &lp) in ids.iter().zip(lps) {
                    let (lp, p) = (lp as f64, (lp as f64).exp());
                    let slot = usize::try_from(id).ok().and_then(|i| scratch.get_mut(i));
                    head += p * (lp - slot.as_ref().map_or(f64::NAN, |q| **q));
                    p_head += p;
                    if let Some(q) = slot {
                        *q = f64::NAN;
                    }
                }
                scratch.retain(|x| !x.is_nan());
                if scratch.is_empty() {
                    return RowFidelity {
                        kl: head,
                        kl_bound: 0.0,
                        nll,
                    };
                }
                let p_tail = (1.0 - p_head).max(0.0);
                let q_tail = scratch
                    .iter()
                    .map(|x| x.exp())
                    .sum::<f64>()
                    .max(f64::MIN_POSITIVE);
                let lower = if p_tail > 0.0 {
                    p_tail * (p_tail.ln() - q_tail.ln())
                } else {
                    0.0
                };
                let smallest = (*lps.last().unwrap_or(&0.0) as f64).exp();
                let upper = tail_upper_bound(p_tail, smallest, scratch);
                RowFidelity {
                    kl: head + lower,
                    kl_bound: (upper - lower).max(0.0),
                    nll,
                }
            }
        }
    }

    /// For the top-K form: the largest difference, relative to 1 + |stored value|, between
    /// this (stored) set's log-sum-exp and label log-probability and those of `recomputed` at
    /// the samples `rows` (both must hold them). The KL over the stored ids cannot see these
    /// two figures, which the original model's perplexity and its logits are read from. `None`
    /// for the full form.
    pub fn top_k_scalar_difference(
        &self,
        recomputed: &Distributions,
        rows: std::ops::Range<usize>,
    ) -> Option<f64> {
        let (
            Stored::TopK {
                log_sum_exp: a_lse,
                label_log_probs: a_label,
                ..
            },
            Stored::TopK {
                log_sum_exp: b_lse,
                label_log_probs: b_label,
                ..
            },
        ) = (&self.stored, &recomputed.stored)
        else {
            return None;
        };
        let diff = |a: &[f32], b: &[f32]| -> f64 {
            rows.clone()
                .map(|i| match (a.get(i), b.get(i)) {
                    (Some(&x), Some(&y)) => (x as f64 - y as f64).abs() / (1.0 + (x as f64).abs()),
                    _ => f64::INFINITY,
                })
                .fold(0.0, f64::max)
        };
        Some(diff(a_lse, b_lse).max(diff(a_label, b_label)))
    }

    /// The original model's −log p(label) at scored sample `row` (`label` its label).
    pub fn original_nll(&self, row: usize, label: usize) -> f64 {
        let lp = match &self.stored {
            Stored::Full { log_probs } => log_probs.get(row * self.classes + label),
            Stored::TopK {
                label_log_probs, ..
            } => label_log_probs.get(row),
        };
        lp.map_or(f64::NAN, |&lp| -(lp as f64))
    }
}

/// The indices of the `k` largest values of `row`, largest first, ties to the lower index.
fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let order = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let k = k.min(idx.len());
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
    }
    idx.truncate(k);
    idx.sort_unstable_by(order);
    idx
}

/// The largest Σ p_j ln(p_j / q_j) over the tail classes j (log q_j in `log_q`, reordered in
/// place) of any distribution of mass `mass` on them with every p_j <= `cap` (the smallest
/// stored probability): `cap` on the m = ⌊mass / cap⌋ classes of smallest q, the rest on the
/// next (spec section 16.3: a convex function is largest at a vertex, and the rearrangement
/// inequality puts the largest p on the smallest q).
fn tail_upper_bound(mass: f64, cap: f64, log_q: &mut [f64]) -> f64 {
    if mass <= 0.0 || cap <= 0.0 {
        return 0.0;
    }
    let term = |p: f64, lq: f64| if p > 0.0 { p * (p.ln() - lq) } else { 0.0 };
    let m = (mass / cap).floor();
    if m >= log_q.len() as f64 {
        return log_q.iter().map(|&lq| term(cap, lq)).sum();
    }
    let m = m as usize;
    log_q.select_nth_unstable_by(m, f64::total_cmp);
    let full: f64 = log_q[..m].iter().map(|&lq| term(cap, lq)).sum();
    full + term(mass - m as f64 * cap, log_q[m])
}

/// Mean, median, 99th percentile and maximum of `values` (spec section 16.3: percentiles by
/// linear interpolation between the sorted values, numpy's default).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Arithmetic mean.
    pub mean: f64,
    /// 50th percentile.
    pub median: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// The summary of `values` (all zeros when empty).
    pub fn of(values: &[f64]) -> Summary {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let pct = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let pos = p / 100.0 * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
        };
        Summary {
            mean: if n == 0 {
                0.0
            } else {
                values.iter().sum::<f64>() / n as f64
            },
            median: pct(50.0),
            p99: pct(99.0),
            p999: pct(99.9),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn dists(form: Form, logits: &Array2<f32>, labels: &[i64]) -> Distributions {
        let mut d = Distributions::new(form, logits.ncols());
        d.push_rows(logits.view(), labels).unwrap();
        d
    }

    #[test]
    fn a_path_equal_to_the_original_has_zero_kl_and_its_cross_entropy() {
        let logits =
            Array2::from_shape_vec((2, 4), vec![1.0, 2.0, 0.5, -1.0, 0.0, 0.0, 3.0, 1.0]).unwrap();
        let d = dists(Form::Full, &logits, &[1, 2]);
        let mut s = Vec::new();
        for r in 0..2 {
            let f = d.measure(r, logits.row(r).as_slice().unwrap(), 1, &mut s);
            assert!(f.kl.abs() < 1e-7, "{}", f.kl);
            assert!((f.nll - d.original_nll(r, 1)).abs() < 1e-6);
        }
        // Cross-entropy of row 0's label 1: -(2 - ln(e^1 + e^2 + e^0.5 + e^-1)).
        let lse = (1f64.exp() + 2f64.exp() + 0.5f64.exp() + (-1f64).exp()).ln();
        assert!((d.original_nll(0, 1) - (lse - 2.0)).abs() < 1e-6);
    }

    #[test]
    fn full_kl_is_the_textbook_formula() {
        let p = Array2::from_shape_vec((1, 3), vec![0.0f32, 1.0, 2.0]).unwrap();
        let q = [2.0f32, 1.0, 0.0];
        let d = dists(Form::Full, &p, &[0]);
        let f = d.measure(0, &q, 0, &mut Vec::new());
        let soft = |x: [f64; 3]| {
            let z: f64 = x.iter().map(|v| v.exp()).sum();
            x.map(|v| v.exp() / z)
        };
        let (pp, qq) = (soft([0.0, 1.0, 2.0]), soft([2.0, 1.0, 0.0]));
        let want: f64 = (0..3).map(|i| pp[i] * (pp[i] / qq[i]).ln()).sum();
        assert!((f.kl - want).abs() < 1e-6, "{} vs {want}", f.kl);
        assert!((f.nll - (-qq[0].ln())).abs() < 1e-6);
    }

    #[test]
    fn top_k_brackets_the_exact_kl() {
        // 50 classes; P and Q differ in the tail, so the coarse KL is below the exact one.
        let mut rng = 7u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((rng >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0
        };
        let p: Vec<f32> = (0..50).map(|_| next()).collect();
        let q: Vec<f32> = p.iter().map(|x| x + 0.8 * next()).collect();
        let logits = Array2::from_shape_vec((1, 50), p.clone()).unwrap();
        let full = dists(Form::Full, &logits, &[3]);
        let exact = full.measure(0, &q, 3, &mut Vec::new()).kl;
        for k in [1, 5, 20, 49] {
            let top = dists(Form::TopK(k), &logits, &[3]);
            let f = top.measure(0, &q, 3, &mut Vec::new());
            assert!(
                f.kl <= exact + 1e-6 && exact <= f.kl + f.kl_bound + 1e-6,
                "k {k}: {} <= {exact} <= {} + {}",
                f.kl,
                f.kl,
                f.kl_bound
            );
            assert!((top.original_nll(0, 3) - full.original_nll(0, 3)).abs() < 1e-6);
        }
        // K = every class: exact, no bound.
        let all = dists(Form::TopK(50), &logits, &[3]);
        let f = all.measure(0, &q, 3, &mut Vec::new());
        assert!((f.kl - exact).abs() < 1e-6 && f.kl_bound == 0.0);
    }

    #[test]
    fn top_k_orders_by_logit_then_id_and_refuses_non_finite_logits() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
        let bad = Array2::from_shape_vec((1, 2), vec![0.0, f32::NAN]).unwrap();
        let err = Distributions::new(Form::Full, 2)
            .push_rows(bad.view(), &[0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("logit 1 of scored sample 0"), "{err}");
    }

    #[test]
    fn summary_interpolates_like_numpy() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.mean, s.median, s.max), (2.5, 2.5, 4.0));
        // numpy.percentile([1, 2, 3, 4], 99) = 3.97
        assert!((s.p99 - 3.97).abs() < 1e-12);
        assert_eq!(Form::default_for(1 << 11, 1 << 10), Form::Full);
        assert_eq!(Form::default_for(1 << 12, 1 << 10), Form::TopK(64));
    }
}
