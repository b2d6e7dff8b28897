//! What `bundle verify` is asked to do: which checks, with which bars and inputs.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::model::gradcheck::{GradCheckOptions, DEFAULT_GRAD_TOL};
use crate::read::OpenOptions;
use crate::signing::PublicKey;
use crate::verify::check::Check;

/// Default `--min-agreement`.
pub const DEFAULT_MIN_AGREEMENT: f64 = 0.995;
/// Default `--min-retention`: the handoff's threshold.
pub const DEFAULT_MIN_RETENTION: f64 = 0.995;
/// Default `--max-kl`: the largest mean KL(original || FP16) in nats of a passing handoff
/// (spec section 16.3 gives the rationale); 0 disables the gate.
pub const DEFAULT_MAX_KL: f64 = 0.05;
/// Default `--samples` (synthetic inputs when the bundle has no validation set).
pub const DEFAULT_SAMPLES: usize = 256;
/// Default `--seed`.
pub const DEFAULT_SEED: u64 = 0;
/// Samples in the gradient-check batch.
pub const GRADCHECK_BATCH: usize = 2;
/// Samples in the gradient-flow batch.
pub const FLOW_BATCH: usize = 32;

/// Settings of a verification.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Checks to run (all when empty).
    pub only: Vec<Check>,
    /// Checks not to run.
    pub skip: Vec<Check>,
    /// Fail the `files` check on undeclared files.
    pub strict: bool,
    /// Minimum argmax agreement of the two paths.
    pub min_agreement: f64,
    /// Minimum retention: the share of inputs on which the FP16 model's prediction is the
    /// original model's.
    pub min_retention: f64,
    /// Largest mean KL divergence of the FP16 model's distribution from the original model's,
    /// in nats (the `fidelity` check); 0 disables the gate.
    pub max_kl: f64,
    /// Synthetic samples when the bundle has no validation set.
    pub samples: usize,
    /// Seed of synthetic inputs, labels, coordinates and directions.
    pub seed: u64,
    /// Gradient-check settings (tolerance, steps).
    pub grad: GradCheckOptions,
    /// The pre-quantization checkpoint: the `reference` check, and the original predictions
    /// of the `retention` check when the bundle stores none.
    pub reference: Option<PathBuf>,
    /// How to open the bundle.
    pub open: OpenOptions,
    /// Public keys whose signature the `signature` check accepts (`--trusted-key`): any of
    /// them.
    pub trusted_keys: Vec<PublicKey>,
    /// Fail the `signature` check when the bundle is not signed, even without trusted keys.
    pub require_signature: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            only: Vec::new(),
            skip: Vec::new(),
            strict: false,
            min_agreement: DEFAULT_MIN_AGREEMENT,
            min_retention: DEFAULT_MIN_RETENTION,
            max_kl: DEFAULT_MAX_KL,
            samples: DEFAULT_SAMPLES,
            seed: DEFAULT_SEED,
            grad: GradCheckOptions {
                tolerance: DEFAULT_GRAD_TOL,
                ..GradCheckOptions::default()
            },
            reference: None,
            open: OpenOptions::default(),
            trusted_keys: Vec::new(),
            require_signature: false,
        }
    }
}

impl VerifyOptions {
    /// Checks that the numbers are sane.
    pub fn check(&self) -> Result<()> {
        for (flag, v) in [
            ("--min-agreement", self.min_agreement),
            ("--min-retention", self.min_retention),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::InvalidArgument(format!(
                    "{flag} must be in [0, 1], found {v}"
                )));
            }
        }
        if !(self.max_kl >= 0.0 && self.max_kl.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "--max-kl must be finite and >= 0 (0 disables the gate), found {}",
                self.max_kl
            )));
        }
        if self.samples == 0 {
            return Err(Error::InvalidArgument(
                "--samples must be at least 1".into(),
            ));
        }
        if !(self.grad.tolerance > 0.0 && self.grad.tolerance.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "--grad-tol must be finite and > 0, found {}",
                self.grad.tolerance
            )));
        }
        Ok(())
    }

    /// Whether `check` was asked for (`--only`, `--skip`).
    pub fn selected(&self, check: Check) -> bool {
        (self.only.is_empty() || self.only.contains(&check)) && !self.skip.contains(&check)
    }
}
