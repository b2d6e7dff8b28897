//! The model checks on the bundle's inputs: agreement (the two forms of the bundle compute the
//! same model), retention (the FP16 model keeps the original model's decisions: the handoff's
//! criterion), fidelity (its distribution stays close to the original's, [`crate::verify::fidelity`]) and reference (the original checkpoint, run again). Each takes the shared
//! [`ModelRuns`] of an open bundle.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::verify::check::Check;
use crate::verify::fidelity::fidelity;
use crate::verify::options::VerifyOptions;
use crate::verify::runner::{Outcome, Runner};
use crate::verify::runs::{
    no_original_distributions, no_original_predictions, same_share, ModelRuns,
};
use crate::verify::samples::Samples;

/// Runs agreement and retention; returns the retention when it was measured.
pub(crate) fn run(
    r: &mut Runner<'_>,
    runs: Option<&ModelRuns<'_>>,
    options: &VerifyOptions,
) -> Option<f64> {
    r.run_on(Check::Agreement, runs, |runs| agreement(runs, options));
    let mut retention_value = None;
    match runs.map(|r| (r, r.original_source())) {
        Some((runs, None))
            if options.selected(Check::Retention) && r.blocked(Check::Retention).is_none() =>
        {
            r.skip(
                Check::Retention,
                format!("not run: {}", no_original_predictions(Some(runs.bundle))),
            );
        }
        _ => r.run_on(Check::Retention, runs, |runs| {
            retention(runs, options, &mut retention_value)
        }),
    }
    match runs {
        Some(runs)
            if !runs.has_original_distributions()
                && options.selected(Check::Fidelity)
                && r.blocked(Check::Fidelity).is_none() =>
        {
            r.skip(
                Check::Fidelity,
                format!("not run: {}", no_original_distributions(runs.bundle)),
            );
        }
        _ => r.run_on(Check::Fidelity, runs, |runs| fidelity(runs, options)),
    }
    retention_value
}

/// Runs the reference check when asked for (`--reference`, or `--only reference`).
pub(crate) fn run_reference(
    r: &mut Runner<'_>,
    runs: Option<&ModelRuns<'_>>,
    options: &VerifyOptions,
) {
    if !options.selected(Check::Reference) {
        r.skip(Check::Reference, "not selected");
    } else if options.reference.is_some() || !options.only.is_empty() {
        r.run_on(Check::Reference, runs, reference);
    } else {
        r.skip(Check::Reference, "not run: no --reference given");
    }
}

/// Check 8, agreement: the ternary and FP16 paths agree on the inputs' argmaxes.
fn agreement(runs: &ModelRuns<'_>, options: &VerifyOptions) -> Outcome {
    let samples = runs.samples()?;
    let paths = runs.both_paths()?;
    let (n, source, unit) = (samples.len(), samples.source(), samples.unit());
    let agree = same_share(&paths.ternary, &paths.fp16);
    let diff = paths.max_logit_difference;
    let figures = json!({ "samples": n, "inputs": source, "seed": options.seed, "agreement": agree, "min_agreement": options.min_agreement, "max_logit_difference": diff, "ternary_seconds": paths.ternary_seconds, "fp16_seconds": paths.fp16_seconds });
    let detail = format!(
        "ternary and FP16 paths agree on {:.2}% of argmaxes (minimum {:.2}%) on {n} {source} {unit}; max logit difference {diff:.3e}",
        agree * 100.0,
        options.min_agreement * 100.0,
    );
    if agree >= options.min_agreement {
        Ok((detail, figures))
    } else {
        Err((detail, figures))
    }
}

/// Check 9, retention: the share of inputs on which the FP16 model predicts what the original model
/// predicted (stored predictions, or recomputed from `--reference`).
fn retention(runs: &ModelRuns<'_>, options: &VerifyOptions, value: &mut Option<f64>) -> Outcome {
    let samples = runs.samples()?;
    let fp16 = runs.fp16()?;
    let (original, from) = runs.original()?;
    let (n, source, unit) = (samples.len(), samples.source(), samples.unit());
    let retention = same_share(original, fp16);
    *value = Some(retention);
    let changed = n - original.iter().zip(fp16).filter(|(a, b)| a == b).count();
    let figures = json!({
        "samples": n, "inputs": source, "original": from.name(), "retention": retention,
        "min_retention": options.min_retention, "changed": changed,
        "by_difficulty": by_difficulty(samples, original, fp16),
    });
    let detail = format!(
        "the FP16 model keeps {:.2}% of the original model's decisions (minimum {:.2}%) on {n} {source} {unit}, {changed} changed; original predictions {}",
        retention * 100.0,
        options.min_retention * 100.0,
        from.describe()
    );
    if retention >= options.min_retention {
        Ok((detail, figures))
    } else {
        Err((detail, figures))
    }
}

/// The largest KL(stored || recomputed) of one sample that summation order explains (spec
/// section 16.3): f32 logits recomputed in another order differ by about 1e-6 of their size,
/// a KL of about 1e-12.
const REFERENCE_KL: f64 = 1e-4;

/// The largest difference of a stored log-sum-exp or label log-probability (top-K form) from
/// the recomputed one, relative to 1 + |stored value|, that summation order explains.
const REFERENCE_SCALARS: f64 = 1e-3;

/// Check 12, reference: the original checkpoint, run again, against the FP16 model and against the
/// predictions the bundle stores.
fn reference(runs: &ModelRuns<'_>) -> Outcome {
    let samples = runs.samples()?;
    let recomputed = runs.reference()?;
    let fp16 = runs.fp16()?;
    let (n, source, unit) = (samples.len(), samples.source(), samples.unit());
    let agree = same_share(&recomputed.predictions, fp16);
    // The original's own digest when it is not the source (format 4.0, rule 2.16).
    let provenance = &runs.bundle.manifest().provenance;
    let (declared, key) = match provenance.original.as_ref().and_then(|o| o.sha256.as_ref()) {
        Some(d) => (Some(d), "provenance.original.sha256"),
        None => (
            provenance.source_sha256.as_ref(),
            "provenance.source_sha256",
        ),
    };
    let same_file = declared.map(|d| *d == recomputed.sha256);
    let provenance = match same_file {
        Some(true) => format!("its sha256 is the bundle's {key}"),
        Some(false) => format!("its sha256 differs from the bundle's {key}"),
        None => "the bundle records no digest of it to compare".to_string(),
    };
    let compare = samples
        .original_predictions()
        .map(|s| recomputed.compare(s));
    // KL(stored || recomputed) of the stored distributions (format 5.0), when there are any.
    let kl = &recomputed.stored_kl;
    let stored_kl = (!kl.is_empty()).then(|| {
        let max = kl.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (max, kl.iter().sum::<f64>() / kl.len() as f64)
    });
    let figures = json!({
        "samples": n, "inputs": source, "agreement": agree, "sha256": recomputed.sha256,
        "matches_provenance": same_file,
        "stored_predictions": compare.as_ref().map(|c| json!({ "differ": c.differ, "near_ties": c.near_ties })),
        "stored_distributions": stored_kl.map(|(max, mean)| json!({ "max_kl": max, "mean_kl": mean, "max_scalar_difference": recomputed.stored_scalars })),
    });
    if let Some(d) = recomputed
        .stored_scalars
        .filter(|d| d.is_nan() || *d > REFERENCE_SCALARS)
    {
        return Err((
            format!(
                "the checkpoint's log-sum-exp or label log-probabilities differ from the stored ones (original_log_sum_exp, original_label_log_probs) by {d:.3e} relative to 1 + |stored|, more than the {REFERENCE_SCALARS:e} summation order explains: not the model this bundle was made from?"
            ),
            figures,
        ));
    }
    if let Some((max, _)) = stored_kl.filter(|(max, _)| max.is_nan() || *max > REFERENCE_KL) {
        return Err((
            format!(
                "the checkpoint's distributions differ from the stored ones: KL(stored || recomputed) reaches {max:.3e} nats (at most {REFERENCE_KL:e} from summation order): not the model this bundle was made from?"
            ),
            figures,
        ));
    }
    let head = format!(
        "original vs FP16 argmax agreement {:.2}% on {n} {source} {unit}; {provenance}",
        agree * 100.0
    );
    match compare {
        Some(c) if c.differ > 0 => Err((
            format!(
                "the checkpoint's predictions differ from the stored original_predictions on {} of {n} inputs (first: input {}, stored class {}, recomputed {}): not the model this bundle was made from? {head}",
                c.differ, c.first.0, c.first.1, c.first.2
            ),
            figures,
        )),
        Some(c) => Ok((
            format!(
                "{head}; its predictions equal the stored original_predictions{}{}",
                if c.near_ties > 0 {
                    format!(" ({} differ only at near-ties)", c.near_ties)
                } else {
                    String::new()
                },
                match stored_kl {
                    Some((max, _)) => format!(" and its distributions the stored ones (KL at most {max:.1e})"),
                    None => String::new(),
                }
            ),
            figures,
        )),
        None => Ok((format!("{head}; it supplies the original predictions"), figures)),
    }
}

/// Per difficulty level (when the validation set has one): samples, retention, and the label
/// accuracy of the original and FP16 models.
fn by_difficulty(samples: &Samples<'_>, original: &[usize], fp16: &[usize]) -> Value {
    let Some(levels) = samples.difficulty() else {
        return Value::Null;
    };
    let labels = samples.labels();
    let present: BTreeSet<u8> = levels.iter().copied().collect();
    let rows = present.into_iter().map(|level| {
        let idx: Vec<usize> = (0..levels.len()).filter(|&i| levels[i] == level).collect();
        let share = |f: &dyn Fn(usize) -> bool| {
            idx.iter().filter(|&&i| f(i)).count() as f64 / idx.len() as f64
        };
        json!({
            "difficulty": level, "samples": idx.len(),
            "retention": share(&|i| original[i] == fp16[i]),
            "accuracy_original": share(&|i| original[i] == labels[i]),
            "accuracy_fp16": share(&|i| fp16[i] == labels[i]),
        })
    });
    Value::Array(rows.collect())
}
