//! The integrity checks, manifest to dequantization (spec rules 1.x to 7.x): they depend only
//! on the bytes, so a bundle the writer produced always passes them. Each takes what its
//! prerequisites proved: the parsed manifest, then the open bundle.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::error::{printable, Error, Result, Violation};
use crate::format::checksum::sha256_reader;
use crate::format::manifest::{FileRole, Manifest, ManifestFacts};
use crate::format::rules::Rule;
use crate::read::{checks, open_data_file_raw, Bundle};
use crate::verify::check::Check;
use crate::verify::options::VerifyOptions;
use crate::verify::runner::{Fail, Outcome, Runner};

/// The error of a failed check, and its rule in the figures.
pub(crate) fn fail_with(e: &Error) -> Fail {
    let rule = e.rule().map(|r| r.number());
    (e.to_string(), json!({ "rule": rule }))
}

/// Bytes of every file the manifest declares (data files and assets).
pub(crate) fn declared_bytes(m: &Manifest) -> u64 {
    // Sizes come from an untrusted manifest: saturate rather than overflow.
    FileRole::ALL
        .iter()
        .filter_map(|&f| m.files.get(f))
        .map(|e| e.size)
        .chain(m.files.assets.iter().flatten().map(|a| a.size))
        .fold(0u64, u64::saturating_add)
}

/// Runs checks 1 to 7 on the bundle in `dir`: `bundle` is the result of opening it (headers
/// only), `manifest` the manifest alone (read by itself when the bundle did not open).
pub(crate) fn run(
    r: &mut Runner<'_>,
    dir: &Path,
    bundle: &Result<Bundle>,
    manifest: std::result::Result<(&Manifest, &ManifestFacts), &Error>,
    options: &VerifyOptions,
) {
    r.run(Check::Manifest, || manifest_check(manifest));
    let m = manifest.ok().map(|(m, _)| m);
    // The bundle's open error, if any, belongs to files or structure.
    let open_error = bundle
        .as_ref()
        .err()
        .map(|e| (Check::for_open_error(e.rule()), e));
    r.run_on(Check::Files, m, |m| match open_error {
        Some((Check::Files, e)) => Err(fail_with(e)),
        _ => files(dir, m, bundle.as_ref().ok(), options.strict),
    });
    r.run_on(Check::Checksums, m, |m| {
        checksums(dir, m, bundle.as_ref().ok())
    });
    r.run(Check::Structure, || match bundle {
        Ok(b) => Ok(structure(b)),
        Err(e) => Err(fail_with(e)),
    });
    let b = bundle.as_ref().ok();
    r.run_on(Check::Encoding, b, encoding);
    r.run_on(Check::Scales, b, scales);
    r.run_on(Check::Dequantization, b, dequantization);
    let digests_checked = r.has_passed(Check::Checksums) && b.is_some();
    crate::verify::signature::run(r, dir, b, options, digests_checked);
}

/// Check 1, manifest (rules 2.x, and 1.1 to 1.3 for manifest.json).
fn manifest_check(manifest: std::result::Result<(&Manifest, &ManifestFacts), &Error>) -> Outcome {
    let (m, facts) = manifest.map_err(fail_with)?;
    let newer = if facts.version.is_newer_minor() {
        " (newer minor: unknown fields ignored)"
    } else {
        ""
    };
    Ok((
        format!("format {} {}{newer}", m.format, m.format_version),
        json!({ "format_version": m.format_version, "tensors": m.tensors.len(), "layers": m.model.layers.len() }),
    ))
}

/// Check 2, files (rules 1.x, 3.1; undeclared files fatal with --strict).
fn files(dir: &Path, m: &Manifest, bundle: Option<&Bundle>, strict: bool) -> Outcome {
    let extras = bundle.map(|b| b.extras().to_vec()).unwrap_or_default();
    let files: Vec<&str> = FileRole::ALL
        .iter()
        .filter(|&&f| m.files.get(f).is_some())
        .map(|f| f.file_name())
        .chain(m.files.assets.iter().flatten().map(|a| a.name.as_str()))
        .collect();
    let bytes = declared_bytes(m);
    let figures = json!({ "files": files, "bytes": bytes, "extras": extras });
    // File names come from the bundle: escaped before they reach a terminal.
    let listed = extras
        .iter()
        .map(|n| printable(n))
        .collect::<Vec<_>>()
        .join(", ");
    if !extras.is_empty() && strict {
        let e: Error = Violation::new(
            dir,
            Rule::ExtraFiles,
            "no undeclared files (--strict)",
            format!("{} undeclared: {listed}", extras.len()),
        )
        .into();
        return Err((e.to_string(), figures));
    }
    let note = if extras.is_empty() {
        String::new()
    } else {
        format!("; {} undeclared file(s) ignored: {listed}", extras.len())
    };
    Ok((
        format!(
            "{} present, sizes as declared ({bytes} bytes){note}",
            files.join(", ")
        ),
        figures,
    ))
}

/// Check 3, checksums (rules 7.1, 7.2). With a structurally broken file only whole-file digests can
/// be computed; they still name the damaged file.
fn checksums(dir: &Path, m: &Manifest, bundle: Option<&Bundle>) -> Outcome {
    let bytes = declared_bytes(m);
    let t = Instant::now();
    let outcome = match bundle {
        Some(b) => checks::check_digests(b),
        None => whole_file_digests(dir, m),
    };
    let secs = t.elapsed().as_secs_f64();
    let rate = bytes as f64 / secs.max(1e-9) / 1e9;
    let figures = json!({ "bytes": bytes, "seconds": secs, "gb_per_s": rate, "per_tensor": bundle.is_some() });
    match outcome {
        Ok(()) => Ok((
            format!(
                "SHA-256 of {} files and every tensor match ({rate:.2} GB/s)",
                if bundle.is_some() { "all" } else { "the" }
            ),
            figures,
        )),
        Err(e) => Err((e.to_string(), figures)),
    }
}

/// Whole-file SHA-256 of every declared file straight from disk (rule 7.1), for a bundle whose
/// headers could not be parsed.
fn whole_file_digests(dir: &Path, m: &Manifest) -> Result<()> {
    for role in FileRole::ALL {
        let Some(entry) = m.files.get(role) else {
            continue;
        };
        let path = dir.join(role.file_name());
        let Some((mut file, _)) = open_data_file_raw(dir, role)? else {
            continue;
        };
        let found = sha256_reader(&mut file).map_err(|e| Error::io(&path, "read", e))?;
        if found != entry.sha256 {
            return Err(Violation::new(
                &path,
                Rule::FileDigest,
                format!("sha256 {}", entry.sha256),
                format!("sha256 {found}"),
            )
            .into());
        }
    }
    Ok(())
}

/// Check 4, structure (rules 3.2 to 3.7, 4.1, 4.2, 5.1, 6.1, and the layer chain of 2.9): the bundle
/// opened.
fn structure(b: &Bundle) -> (String, serde_json::Value) {
    let m = b.manifest();
    if let Some(d) = b.decoder() {
        return (
            format!(
                "{} tensors in headers as declared: the {} decoder's {} layers in transformers' names and shapes (rule 2.14)",
                m.tensors.len(),
                d.family.name(),
                d.num_hidden_layers
            ),
            json!({ "tensors": m.tensors.len(), "layers": d.num_hidden_layers }),
        );
    }
    let widths: Vec<String> = std::iter::once(m.model.input_dim)
        .chain(m.model.layers.iter().map(|l| l.out_features))
        .map(|w| w.to_string())
        .collect();
    (
        format!(
            "{} tensors in headers as declared; layers chain {}",
            m.tensors.len(),
            widths.join(" -> ")
        ),
        json!({ "tensors": m.tensors.len(), "layers": m.model.layers.len() }),
    )
}

/// Check 5, encoding (rules 4.3, 4.4, 4.6 zeros).
fn encoding(b: &Bundle) -> Outcome {
    let packed: u64 = b.quantized().map(|p| p.packed.len() as u64).sum();
    let zeros: u64 = b.manifest().tensors.iter().filter_map(|t| t.zeros).sum();
    let figures = json!({ "packed_bytes": packed, "zero_trits": zeros });
    match checks::check_encoding(b) {
        Ok(()) => Ok((
            format!(
                "{packed} packed bytes valid and canonical ({}); zero counts exact",
                b.params().encoding
            ),
            figures,
        )),
        Err(e) => Err((e.to_string(), figures)),
    }
}

/// Check 6, scales (rules 4.5, 4.6 scale range).
fn scales(b: &Bundle) -> Outcome {
    let (mut n, mut lo, mut hi) = (0usize, f32::INFINITY, f32::NEG_INFINITY);
    for p in b.quantized() {
        let s = p.scales();
        n += s.len();
        lo = s.iter().copied().fold(lo, f32::min);
        hi = s.iter().copied().fold(hi, f32::max);
    }
    let figures = json!({ "scales": n, "min": lo, "max": hi });
    match checks::check_scales(b) {
        Ok(()) => Ok((
            format!("{n} scales finite, positive, F16-representable ({lo:.3e} .. {hi:.3e})"),
            figures,
        )),
        Err(e) => Err((e.to_string(), figures)),
    }
}

/// Check 7, dequantization (rules 4.7, 5.2, 5.3).
fn dequantization(b: &Bundle) -> Outcome {
    let values: u64 = b.manifest().tensors.iter().map(|t| t.elements()).sum();
    let figures = json!({ "values": values });
    match checks::check_passthrough(b).and_then(|()| checks::check_dequantization(b)) {
        Ok(()) => Ok((
            format!("all {values} FP16 values equal f16(t * scale) or f16(f32) bit for bit"),
            figures,
        )),
        Err(e) => Err((e.to_string(), figures)),
    }
}
