//! What `bundle assess` reports: a row per difficulty level, the chosen level, the verdict and
//! the receiving stage's metrics (`--json`: `spec/assess.schema.json`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::assess::AssessOptions;

/// The figures of one difficulty level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelFigures {
    /// The level.
    pub difficulty: u8,
    /// Examples at this level.
    pub examples: usize,
    /// Batches the gradient variance is averaged over.
    pub batches: usize,
    /// Share of the level's labels the FP16 model predicts.
    pub accuracy_fp16: f64,
    /// Share of the level's labels the ternary path predicts.
    pub accuracy_ternary: f64,
    /// Mean cross-entropy of the FP16 model over the level's examples.
    pub mean_cross_entropy: f64,
    /// A language model's perplexity at this level, exp(mean cross-entropy) of the next-token
    /// predictions; null for a chain of layers (a classifier's figure is its cross-entropy).
    pub perplexity_fp16: Option<f64>,
    /// Sum over parameter tensors of the unbiased variance of their gradient entries, averaged
    /// over the level's batches.
    pub gradient_variance: f64,
    /// Parameter tensors with a single entry, left out of the sum (no unbiased variance).
    pub skipped_tensors: usize,
}

/// Where the model stands against the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The level closest to the target lies in the zone.
    InZone,
    /// Every level is more accurate than the zone: the data is too easy for the model.
    TooEasy,
    /// Every level is less accurate than the zone: the data is too hard.
    TooHard,
    /// Some levels are above the zone and some below, none inside.
    Gap,
}

/// The receiving stage's metrics, under its names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase5Metrics {
    /// The assessment ran to the end.
    #[serde(rename = "phase5/edge_of_chaos_assessment_completed")]
    pub completed: bool,
    /// The chosen level.
    #[serde(rename = "phase5/edge_of_chaos_optimal_level")]
    pub optimal_level: u8,
    /// The target accuracy.
    #[serde(rename = "phase5/edge_of_chaos_target_accuracy")]
    pub target_accuracy: f64,
    /// The gradient variance at the chosen level.
    #[serde(rename = "phase5/gradient_variance_optimal")]
    pub gradient_variance_optimal: f64,
    /// The format the stage trains (always "FP16").
    #[serde(rename = "phase5/model_format")]
    pub model_format: &'static str,
    /// Size of `fp16.safetensors` in MB (10^6 bytes).
    #[serde(rename = "phase5/model_size_mb")]
    pub model_size_mb: f64,
}

/// The whole assessment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssessReport {
    /// True when the chosen level lies in the zone.
    pub ok: bool,
    /// The bundle directory.
    pub bundle: String,
    /// The labelled data assessed on.
    pub data: String,
    /// The target accuracy.
    pub target_accuracy: f64,
    /// The zone `[lo, hi]`.
    pub zone: [f64; 2],
    /// Examples per batch (null: the whole level).
    pub batch_size: Option<usize>,
    /// The precision of the gradients.
    pub gradient_precision: &'static str,
    /// One row per level present, in increasing order.
    pub levels: Vec<LevelFigures>,
    /// The level whose FP16 accuracy is closest to the target (ties: the lower level).
    pub chosen: u8,
    /// Where the model stands.
    pub verdict: Verdict,
    /// One line for people.
    pub detail: String,
    /// The receiving stage's metrics.
    pub metrics: Phase5Metrics,
}

impl AssessReport {
    /// Chooses the level and the verdict from the figures of every level (at least one).
    pub(crate) fn new(
        dir: &Path,
        data: PathBuf,
        levels: Vec<LevelFigures>,
        options: &AssessOptions,
        model_size_mb: f64,
    ) -> Self {
        let (lo, hi) = options.zone;
        let distance = |l: &LevelFigures| (l.accuracy_fp16 - options.target).abs();
        // The first level with the smallest distance: ties go to the lower level.
        let best = levels
            .iter()
            .fold(None::<&LevelFigures>, |best, l| match best {
                Some(b) if distance(b) <= distance(l) => Some(b),
                _ => Some(l),
            })
            .cloned();
        let in_zone = |l: &LevelFigures| (lo..=hi).contains(&l.accuracy_fp16);
        let (chosen, variance, accuracy) = best.as_ref().map_or((0, f64::NAN, f64::NAN), |b| {
            (b.difficulty, b.gradient_variance, b.accuracy_fp16)
        });
        let verdict = match best {
            Some(b) if in_zone(&b) => Verdict::InZone,
            _ if levels.iter().all(|l| l.accuracy_fp16 > hi) => Verdict::TooEasy,
            _ if levels.iter().all(|l| l.accuracy_fp16 < lo) => Verdict::TooHard,
            _ => Verdict::Gap,
        };
        let zone = format!("{:.0}-{:.0}%", lo * 100.0, hi * 100.0);
        let detail = match verdict {
            Verdict::InZone => format!(
                "level {chosen} (FP16 accuracy {:.1}%) is the closest to the {:.0}% target and lies in the {zone} zone",
                accuracy * 100.0,
                options.target * 100.0
            ),
            Verdict::TooEasy => format!(
                "no level in the {zone} zone: the model is too accurate at every level (lowest {:.1}%); harder data is needed",
                min_accuracy(&levels) * 100.0
            ),
            Verdict::TooHard => format!(
                "no level in the {zone} zone: the model is too inaccurate at every level (highest {:.1}%); easier data is needed",
                max_accuracy(&levels) * 100.0
            ),
            Verdict::Gap => format!(
                "no level in the {zone} zone: accuracy jumps across it between levels (closest: level {chosen}, {:.1}%); levels in between are needed",
                accuracy * 100.0
            ),
        };
        AssessReport {
            ok: verdict == Verdict::InZone,
            bundle: dir.display().to_string(),
            data: data.display().to_string(),
            target_accuracy: options.target,
            zone: [lo, hi],
            batch_size: options.batch_size,
            gradient_precision: "f64",
            chosen,
            verdict,
            detail,
            metrics: Phase5Metrics {
                completed: true,
                optimal_level: chosen,
                target_accuracy: options.target,
                gradient_variance_optimal: variance,
                model_format: "FP16",
                model_size_mb,
            },
            levels,
        }
    }
}

fn min_accuracy(levels: &[LevelFigures]) -> f64 {
    levels
        .iter()
        .map(|l| l.accuracy_fp16)
        .fold(f64::INFINITY, f64::min)
}

fn max_accuracy(levels: &[LevelFigures]) -> f64 {
    levels
        .iter()
        .map(|l| l.accuracy_fp16)
        .fold(f64::NEG_INFINITY, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(difficulty: u8, accuracy: f64) -> LevelFigures {
        LevelFigures {
            difficulty,
            examples: 10,
            batches: 1,
            accuracy_fp16: accuracy,
            accuracy_ternary: accuracy,
            mean_cross_entropy: 1.0,
            perplexity_fp16: None,
            gradient_variance: difficulty as f64,
            skipped_tensors: 0,
        }
    }

    fn report(accuracies: &[f64]) -> AssessReport {
        let levels = accuracies
            .iter()
            .enumerate()
            .map(|(i, &a)| level(i as u8 + 1, a))
            .collect();
        AssessReport::new(
            Path::new("b"),
            "v".into(),
            levels,
            &AssessOptions::default(),
            1.0,
        )
    }

    #[test]
    fn the_closest_level_is_chosen_ties_to_the_lower_and_the_verdict_says_where() {
        let r = report(&[0.99, 0.9, 0.76, 0.74, 0.5]);
        // 0.76 and 0.74 are equally close to 0.75: the lower level wins.
        assert_eq!((r.chosen, r.verdict, r.ok), (3, Verdict::InZone, true));
        assert_eq!(r.metrics.gradient_variance_optimal, 3.0);
        assert_eq!(report(&[0.95, 0.9, 0.85]).verdict, Verdict::TooEasy);
        assert_eq!(report(&[0.6, 0.3]).verdict, Verdict::TooHard);
        let gap = report(&[0.95, 0.6]);
        assert_eq!((gap.verdict, gap.ok), (Verdict::Gap, false));
        assert!(gap.detail.contains("jumps across it"), "{}", gap.detail);
        // The zone is closed: its bounds are in it.
        assert_eq!(report(&[0.8]).verdict, Verdict::InZone);
        assert_eq!(report(&[0.7]).verdict, Verdict::InZone);
    }
}
