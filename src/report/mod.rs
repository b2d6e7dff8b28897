//! `bundle report`: one self-contained HTML page a person reads before accepting a handoff. It
//! gathers what the other commands find ([`crate::read::inspect`], [`crate::verify`],
//! [`crate::assess`]) and what only a picture shows (how the trits and scales of each tensor are
//! distributed, how strong each tensor's gradient is, how accuracy and gradient variance move
//! with difficulty), and renders them with [`maud`] (which escapes every string, so names from an
//! untrusted bundle cannot inject markup) as inline SVG. The page loads nothing: no scripts, no
//! fonts, no images, and a Content-Security-Policy that forbids them.

mod charts;
mod figures;
mod html;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::assess::{assess, AssessOptions, AssessReport};
use crate::error::{Error, Result};
use crate::read::inspect::{inspect, Inspection};
use crate::read::Bundle;
use crate::verify::{verify, VerifyOptions, VerifyReport};
use crate::write::staging::{check_file_destination, write_file_atomic};

pub use figures::{GradientNorm, TensorFigures};

/// Settings of a report: those of the verify run and of the assessment it shows. The bundle
/// is opened as `verify.open` says, for all three.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// The verify run (thresholds, `reference` checkpoint, how to open the bundle).
    pub verify: VerifyOptions,
    /// The assessment (target, zone, batch size, other labelled data).
    pub assess: AssessOptions,
}

/// Everything the page shows.
#[derive(Debug)]
pub struct ReportData {
    /// The bundle directory.
    pub dir: PathBuf,
    /// The bundle summary, when it opens.
    pub inspection: std::result::Result<Inspection, String>,
    /// The verify report.
    pub verify: VerifyReport,
    /// The assessment, or why there is none.
    pub assessment: std::result::Result<AssessReport, String>,
    /// Trit and scale distributions of the quantized tensors.
    pub tensors: Vec<TensorFigures>,
    /// Gradient norms per parameter tensor (from verify's gradient_flow check).
    pub gradients: Vec<GradientNorm>,
}

/// Gathers the figures of the bundle in `dir`: a bundle that does not open still gets a page,
/// with verify's findings.
pub fn gather(dir: &Path, options: &ReportOptions) -> ReportData {
    let open = options.verify.open;
    let bundle = Bundle::open_with(dir, &open);
    let verify = verify(dir, &options.verify);
    let assessment = match &bundle {
        Ok(_) => assess(
            dir,
            &AssessOptions {
                open,
                ..options.assess.clone()
            },
        )
        .map_err(|e| e.to_string()),
        Err(_) => Err("the bundle does not open".into()),
    };
    ReportData {
        dir: dir.to_path_buf(),
        tensors: bundle
            .as_ref()
            .map(figures::tensor_figures)
            .unwrap_or_default(),
        gradients: figures::gradient_norms(&verify),
        inspection: bundle.as_ref().map(inspect).map_err(|e| e.to_string()),
        verify,
        assessment,
    }
}

/// The report of the bundle in `dir` as one HTML document, with the verdict of its verify
/// run (`true`: every check passed).
pub fn report(dir: &Path, options: &ReportOptions) -> (String, bool) {
    let data = gather(dir, options);
    (html::page(&data), data.verify.ok)
}

/// Writes the report of the bundle in `dir` to `out`, atomically (an existing file is replaced
/// only with `force`). Returns the number of bytes written and verify's verdict.
pub fn write_report(
    dir: &Path,
    out: &Path,
    options: &ReportOptions,
    force: bool,
) -> Result<(u64, bool)> {
    // Refuse an existing destination before the minute of work, not after it.
    check_file_destination(out, force)?;
    let (page, ok) = report(dir, options);
    write_file_atomic(out, force, |tmp| {
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| Error::io(tmp, "create", e))?;
        file.write_all(page.as_bytes())
            .map_err(|e| Error::io(tmp, "write", e))?;
        Ok(file)
    })?;
    Ok((page.len() as u64, ok))
}
