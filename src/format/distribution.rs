//! The two forms in which `validation.safetensors` stores the original model's distributions
//! (format 5.0, rules 6.1 and 6.4, spec section 9.1), and their limits. The numbers (building
//! them from logits, measuring a path against them) live in [`crate::model::distribution`].

/// The writer stores the full log-softmax when samples × classes is at most this many values
/// (8 MiB of F32); otherwise the top [`DEFAULT_TOP_K`] (spec section 9.1).
pub const FULL_LIMIT: u64 = 1 << 21;
/// K of the top-K form the writer chooses when the full form is too large.
pub const DEFAULT_TOP_K: u64 = 64;
/// The largest K of the top-K form (section 12).
pub const MAX_TOP_K: u64 = 1024;
/// Tolerance of rule 6.4 on the total probability of a stored row: a full row's log-sum-exp
/// lies within it of 0, a top-K row's probabilities add up to at most 1 plus it.
pub const NORMALIZATION_TOLERANCE: f64 = 1e-3;

/// Which form of the distributions a writer stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `original_log_probs`: every class's log-probability.
    Full,
    /// `original_top_ids`, `original_top_log_probs`, `original_log_sum_exp`,
    /// `original_label_log_probs`: the K most probable classes.
    TopK(u64),
}

impl Form {
    /// The writer's choice for `samples` scored samples over `classes` classes: full when
    /// samples × classes <= [`FULL_LIMIT`], else the top min([`DEFAULT_TOP_K`], classes).
    pub fn default_for(samples: u64, classes: u64) -> Form {
        if samples.saturating_mul(classes) <= FULL_LIMIT {
            Form::Full
        } else {
            Form::TopK(DEFAULT_TOP_K.min(classes))
        }
    }

    /// Its name in reports: `full` or `top-k`.
    pub fn name(self) -> &'static str {
        match self {
            Form::Full => "full",
            Form::TopK(_) => "top-k",
        }
    }

    /// K for the top-K form.
    pub fn k(self) -> Option<u64> {
        match self {
            Form::Full => None,
            Form::TopK(k) => Some(k),
        }
    }
}

/// The log-sum-exp of `row` in f64: max + ln Σ exp(x − max), summed in index order; an error
/// naming the first non-finite logit.
pub fn log_sum_exp(row: &[f32]) -> std::result::Result<f64, usize> {
    if let Some(i) = row.iter().position(|x| !x.is_finite()) {
        return Err(i);
    }
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    Ok(max + sum.ln())
}
