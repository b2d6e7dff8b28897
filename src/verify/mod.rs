//! `bundle verify`: the CI gate. Runs the checks of a handoff in order ([`Check`]: manifest,
//! files, checksums, structure, encoding, scales, dequantization, signature, agreement,
//! retention, fidelity, gradient_check, gradient_flow, reference), each with a status, a
//! one-line detail and figures, and computes the handoff metrics the pipeline logs. A check whose prerequisite
//! failed is reported as not run, never as passed; a metric that cannot be computed by its
//! definition is null, with the reason in the report.
//!
//! The modules follow the order of the checks: [`integrity`] (1 to 7, the bytes), `models`
//! (agreement, retention, reference, on inputs from [`samples`] and predictions shared through
//! `runs`), `gradients` (the f64 gradient checks), then `metrics` and the [`report`].

mod check;
mod fidelity;
mod gradients;
pub mod integrity;
mod metrics;
mod models;
mod options;
pub mod report;
mod runner;
mod runs;
pub mod samples;
mod signature;

use std::path::Path;
use std::time::Instant;

pub use check::Check;
pub use options::{
    VerifyOptions, DEFAULT_MAX_KL, DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_RETENTION, DEFAULT_SAMPLES,
    DEFAULT_SEED, FLOW_BATCH, GRADCHECK_BATCH,
};
pub use report::{CheckResult, Metrics, Status, VerifyReport, RETENTION_METRIC};

use crate::read::{open_manifest, Bundle};
use runner::Runner;
use runs::ModelRuns;

/// Verifies the bundle in `dir`.
pub fn verify(dir: &Path, options: &VerifyOptions) -> VerifyReport {
    let mut r = Runner::new(options);
    let integrity_start = Instant::now();
    // Open the whole bundle first (headers only): when it opens, every check reads this one
    // manifest, even if the bundle is replaced meanwhile. When it does not, the manifest alone
    // is read, to tell a manifest failure from a files or structure failure.
    let bundle = Bundle::open_with(dir, &options.open);
    let loaded;
    let manifest = match &bundle {
        Ok(b) => Ok((b.manifest(), b.facts())),
        Err(_) => {
            loaded = open_manifest(dir);
            loaded.as_ref().map(|(m, facts)| (m, facts))
        }
    };
    integrity::run(&mut r, dir, &bundle, manifest, options);
    let integrity_seconds = integrity_start.elapsed().as_secs_f64();

    let runs = bundle.as_ref().ok().map(|b| ModelRuns::new(b, options));
    let retention = models::run(&mut r, runs.as_ref(), options);
    let gradients = gradients::run(&mut r, runs.as_ref(), options);
    models::run_reference(&mut r, runs.as_ref(), options);

    let (metrics, null_reasons) = metrics::metrics(metrics::Inputs {
        manifest: manifest.ok().map(|(m, _)| m),
        results: &r.results,
        runs: runs.as_ref(),
        retention,
        gradients,
        integrity_seconds,
    });
    VerifyReport {
        ok: r.results.iter().all(|c| c.status != Status::Fail),
        bundle: dir.display().to_string(),
        checks: r.results,
        metrics,
        null_reasons,
    }
}
