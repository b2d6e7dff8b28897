//! `bundle report`: the page has every section and chart, escapes every name from the bundle
//! (tensor and layer names are untrusted input rendered into HTML), still reports a bundle that
//! fails a check or does not open, and is written atomically without replacing a file unless
//! forced. The browser test (scripts/check_report.py, run by scripts/test.sh) loads the pages in
//! headless Chromium.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{tiny_bundle, validation_set, values};
use ternary_bundle::format::manifest::{LayerSpec, ModelSpec};
use ternary_bundle::report::{report, write_report, ReportOptions};
use ternary_bundle::source::MemorySource;
use ternary_bundle::{write_bundle, BundlePlan, Error, QuantParams, WriteOptions};

/// Every section and chart a full report has.
const IDS: [&str; 16] = [
    "verdict",
    "summary",
    "checks",
    "verify-checks",
    "metrics",
    "fidelity",
    "fidelity-summary",
    "chart-kl",
    "fidelity-levels",
    "tensors",
    "chart-trits",
    "chart-scales",
    "chart-gradients",
    "assessment",
    "chart-assessment",
    "chosen-level",
];

/// Layer names that would inject markup if rendered raw: a script element, an attribute break
/// with an event handler, an entity and the end of the SVG text and chart.
const HOSTILE: [&str; 3] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(2)>",
    "a&amp;b 'q' </text></svg><svg onload=alert(3)>",
];

/// The report with verify's retention threshold at 0 and its KL gate disabled: the tiny models
/// are random, so the FP16 model keeps only some of the original's decisions and its
/// distributions lie far from the original's (the demo, in the browser test, passes at the
/// default thresholds).
fn options() -> ReportOptions {
    let mut o = ReportOptions::default();
    o.verify.min_retention = 0.0;
    o.verify.max_kl = 0.0;
    o
}

/// The part of `html` from the element `id` to the next `end` (exclusive).
fn element<'h>(html: &'h str, id: &str, end: &str) -> &'h str {
    let from = html
        .split(&format!("id=\"{id}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no element #{id}"));
    &from[..from
        .find(end)
        .unwrap_or_else(|| panic!("#{id} has no {end}"))]
}

fn page(dir: &Path) -> (String, bool) {
    report(dir, &options())
}

/// Markup the page must never contain, whatever the bundle holds.
fn assert_inert(html: &str) {
    for bad in [
        "<script",
        "<img",
        "<iframe",
        "<object",
        "<embed",
        "<link",
        "javascript:",
    ] {
        assert!(!html.contains(bad), "the page contains {bad:?}");
    }
    assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"));
}

/// maud's escaping of text: what a name looks like in the page.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bundle of a three-layer MLP whose layers are named [`HOSTILE`], with a validation set whose
/// difficulty column makes the assessment run.
fn hostile_bundle(dir: &Path) -> PathBuf {
    let dims = [7u64, 6, 5, 5];
    let mut src = MemorySource::new("hostile.safetensors");
    let mut layers = Vec::new();
    let mut quantize = BTreeSet::new();
    for (i, name) in HOSTILE.iter().enumerate() {
        let (fan_in, fan_out) = (dims[i], dims[i + 1]);
        let weight = format!("{name}.weight");
        let bias = format!("{name}.bias");
        src = src
            .with(
                weight.clone(),
                vec![fan_out, fan_in],
                values(i as u64, (fan_in * fan_out) as usize),
            )
            .with(
                bias.clone(),
                vec![fan_out],
                values(10 + i as u64, fan_out as usize),
            );
        quantize.insert(weight.clone());
        layers.push(LayerSpec {
            name: name.to_string(),
            weight,
            bias: Some(bias),
            in_features: fan_in,
            out_features: fan_out,
            activation: if i + 1 < HOSTILE.len() {
                "relu"
            } else {
                "identity"
            }
            .into(),
            rmsnorm: None,
        });
    }
    let plan = BundlePlan {
        model: ModelSpec {
            decoder: None,
            input_dim: dims[0],
            layers,
        },
        params: QuantParams::default(),
        quantize,
        given: None,
    };
    let dest = dir.join("hostile");
    let options = WriteOptions {
        validation: Some(validation_set(40)),
        ..Default::default()
    };
    write_bundle(&dest, &src, &plan, &options).unwrap();
    dest
}

#[test]
fn a_report_has_every_section_and_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "b", |_, o| o.validation = Some(validation_set(40)));
    let (html, ok) = page(&dir);
    assert!(ok);
    for id in IDS {
        assert!(html.contains(&format!("id=\"{id}\"")), "no element #{id}");
    }
    assert_inert(&html);
    // One row per verify check, plus the heading row; every check passed or was skipped.
    let checks = html.split("id=\"verify-checks\"").nth(1).unwrap();
    let table = &checks[..checks.find("</table>").unwrap()];
    let rows = table.matches("<tr>").count();
    assert_eq!(rows, 1 + ternary_bundle::verify::Check::ALL.len());
    assert!(!table.contains("FAIL"));
    // One bar of each trit value per quantized tensor, one gradient bar per parameter tensor.
    let trits = html.split("id=\"chart-trits\"").nth(1).unwrap();
    assert_eq!(
        trits[..trits.find("</svg>").unwrap()]
            .matches("class=\"neg\"")
            .count(),
        2 + 1
    );
    let grads = html.split("id=\"chart-gradients\"").nth(1).unwrap();
    assert_eq!(
        grads[..grads.find("</svg>").unwrap()]
            .matches("class=\"bar\"")
            .count(),
        4
    );
    // Fidelity: a row per path and one for the original model; a KL histogram of 9 bins per
    // path; a row per difficulty level (validation_set has levels 0 to 3), plus the headings.
    assert_eq!(
        element(&html, "fidelity-summary", "</table>")
            .matches("<tr>")
            .count(),
        1 + 3
    );
    assert_eq!(
        element(&html, "chart-kl", "</svg>")
            .matches("class=\"bar\"")
            .count(),
        2 * 9
    );
    assert_eq!(
        element(&html, "fidelity-levels", "</table>")
            .matches("<tr>")
            .count(),
        1 + 4
    );
    assert!(!html.contains("id=\"no-fidelity\""));

    // At verify's default KL gate the same bundle fails fidelity, and only fidelity: the page
    // says so, and still shows the figures.
    let mut gated = options();
    gated.verify.max_kl = ReportOptions::default().verify.max_kl;
    assert!(gated.verify.max_kl > 0.0);
    let (html, ok) = report(&dir, &gated);
    assert!(!ok);
    assert!(html.contains("the bundle FAILED a check"));
    let checks = element(&html, "verify-checks", "</table>");
    assert_eq!(checks.matches("FAIL").count(), 1, "{checks}");
    let failed = checks
        .split("<tr>")
        .find(|row| row.contains("FAIL"))
        .unwrap();
    assert!(failed.contains("fidelity"), "{failed}");
    for id in ["fidelity-summary", "chart-kl", "fidelity-levels"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no element #{id}");
    }
}

#[test]
fn every_name_from_the_bundle_is_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = hostile_bundle(tmp.path());
    let (html, ok) = page(&dir);
    assert!(ok, "the hostile-name bundle is a valid bundle");
    assert_inert(&html);
    for name in HOSTILE {
        assert!(!html.contains(name), "{name:?} appears unescaped");
        let weight = escaped(&format!("{name}.weight"));
        assert!(
            html.contains(&weight),
            "{name:?}: its escaped weight name {weight:?} is not on the page"
        );
    }
    for id in IDS {
        assert!(html.contains(&format!("id=\"{id}\"")), "no element #{id}");
    }
}

#[test]
fn a_damaged_bundle_still_gets_a_page_that_says_so() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/broken");
    let (html, ok) = page(&fixtures.join("nan-scale"));
    assert!(!ok);
    assert!(html.contains("the bundle FAILED a check"));
    assert!(html.contains("class=\"fail\">FAIL"));
    assert_inert(&html);

    let (html, ok) = page(&fixtures.join("manifest-not-json"));
    assert!(!ok);
    assert!(html.contains("The bundle does not open"));
    assert!(html.contains("id=\"no-assessment\""));
    assert!(!html.contains("id=\"chart-trits\""));
    assert!(html.contains("id=\"no-fidelity\""));
    assert!(!html.contains("id=\"chart-kl\""));
    assert_inert(&html);
}

#[test]
fn a_bundle_without_difficulty_says_why_there_is_no_assessment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    let (html, _) = page(&dir);
    let why = html
        .split("id=\"no-assessment\"")
        .nth(1)
        .expect("no #no-assessment");
    assert!(why.contains("difficulty"), "{}", &why[..200.min(why.len())]);
    assert!(!html.contains("id=\"chart-assessment\""));
    // Nor a validation set: no original distributions, no fidelity figures, and the page says
    // why.
    assert!(html.contains("id=\"fidelity\""));
    let why = element(&html, "no-fidelity", "</p>");
    assert!(
        why.contains("no original predictions: the bundle has no validation set"),
        "{why}"
    );
    for id in ["fidelity-summary", "chart-kl", "fidelity-levels"] {
        assert!(!html.contains(&format!("id=\"{id}\"")), "#{id}");
    }
}

#[test]
fn the_page_is_written_atomically_and_replaced_only_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    let out = tmp.path().join("report.html");
    std::fs::write(&out, "keep me").unwrap();
    let e = write_report(&dir, &out, &options(), false).unwrap_err();
    assert!(matches!(e, Error::DestinationExists { .. }), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");

    let (bytes, ok) = write_report(&dir, &out, &options(), true).unwrap();
    assert!(ok);
    let html = std::fs::read_to_string(&out).unwrap();
    assert_eq!(html.len() as u64, bytes);
    assert!(html.starts_with("<!DOCTYPE html>"));
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // A directory is never replaced.
    let e = write_report(&dir, tmp.path(), &options(), true).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn the_command_exits_1_when_the_bundle_fails_a_check() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &Path, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_bundle"))
            .arg("report")
            .arg(dir)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let good = tiny_bundle(&tmp, "b", |_, _| {});
    let o = run(&good, &tmp.path().join("good.html"));
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("every verify check passed"));

    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/broken/nan-scale");
    let out = tmp.path().join("broken.html");
    let o = run(&broken, &out);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(std::fs::read_to_string(&out).unwrap().contains("FAIL"));

    // An existing page is not replaced without --force.
    let o = run(&good, &out);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}
