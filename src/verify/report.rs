//! What `bundle verify` reports: one result per check, and the handoff metrics, for people
//! (the CLI renders them), for machines (`--json`, `spec/verify.schema.json`) and for CI
//! (JUnit XML).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::verify::check::Check;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The check ran and passed.
    Pass,
    /// The check ran and failed.
    Fail,
    /// The check did not run (not selected, or a prerequisite failed).
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The check.
    pub name: Check,
    /// Outcome.
    pub status: Status,
    /// One line for people.
    pub detail: String,
    /// Numbers behind the detail.
    pub figures: Value,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// The handoff metrics under the names the pipeline logs (fields in the order of those names).
/// A figure is computed by its definition or is `None`; the report's `null_reasons` says why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// Label accuracy of the FP16 model on the validation set.
    pub accuracy_fp16: Option<f64>,
    /// Label accuracy of the original model (its stored or recomputed predictions).
    pub accuracy_original: Option<f64>,
    /// Label accuracy of the ternary path.
    pub accuracy_ternary: Option<f64>,
    /// The model in FP32 (4 bytes per parameter) over the size of `ternary.safetensors`.
    pub compression_ratio: Option<f64>,
    /// Worst relative error of the gradient check.
    pub gradient_check_max_relative_error: Option<f64>,
    /// Bytes of the data files over `integrity_seconds`, in GB/s.
    pub integrity_gb_per_s: f64,
    /// Wall time of the integrity checks.
    pub integrity_seconds: f64,
    /// Largest |logit difference| between the two paths.
    pub max_logit_difference: Option<f64>,
    /// Retention: the share of inputs on which the FP16 model predicts what the original did.
    #[serde(rename = "phase4_to_5/dequantization_accuracy_retention")]
    pub retention: Option<f64>,
    /// Size of `fp16.safetensors` in MB (10^6 bytes).
    #[serde(rename = "phase4_to_5/dequantized_model_size_mb")]
    pub dequantized_model_size_mb: Option<f64>,
    /// Whether the gradient flow check passed.
    #[serde(rename = "phase4_to_5/gradient_flow_test_passed")]
    pub gradient_flow_test_passed: Option<bool>,
    /// Size of `ternary.safetensors` in MB (10^6 bytes).
    #[serde(rename = "phase4_to_5/quantized_model_size_mb")]
    pub quantized_model_size_mb: Option<f64>,
    /// Argmax agreement of the ternary and FP16 paths (not retention).
    pub ternary_fp16_agreement: Option<f64>,
}

/// The name the pipeline logs retention under.
pub const RETENTION_METRIC: &str = "phase4_to_5/dequantization_accuracy_retention";

impl Metrics {
    /// The names of the metrics that are null.
    pub fn null_names(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m
                .into_iter()
                .filter(|(_, v)| v.is_null())
                .map(|(k, _)| k)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The whole verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// True when no selected check failed.
    pub ok: bool,
    /// The bundle directory.
    pub bundle: String,
    /// Every check in order (skipped ones included).
    pub checks: Vec<CheckResult>,
    /// Handoff metrics under the names the pipeline logs.
    pub metrics: Metrics,
    /// For each metric that is null, why it could not be computed by its definition.
    pub null_reasons: BTreeMap<String, String>,
}

impl VerifyReport {
    /// The result of `check`.
    pub fn check(&self, check: Check) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.name == check)
    }

    /// How many checks ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

impl VerifyReport {
    /// JUnit XML: one test case per check (skipped checks as `<skipped/>`).
    pub fn to_junit(&self) -> String {
        let esc = |s: &str| -> String {
            s.chars()
                .filter(|&c| matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{7f}'))
                .map(|c| match c {
                    '&' => "&amp;".into(),
                    '<' => "&lt;".into(),
                    '>' => "&gt;".into(),
                    '"' => "&quot;".into(),
                    '\'' => "&apos;".into(),
                    c => c.to_string(),
                })
                .collect()
        };
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        let time: f64 = self.checks.iter().map(|c| c.seconds).sum();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str(&format!(
            "<testsuites name=\"bundle verify\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{time:.3}\">\n",
            self.checks.len(),
            count(Status::Fail),
            count(Status::Skip)
        ));
        x.push_str(&format!(
            "  <testsuite name=\"bundle verify {}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{time:.3}\">\n",
            esc(&self.bundle),
            self.checks.len(),
            count(Status::Fail),
            count(Status::Skip)
        ));
        for c in &self.checks {
            x.push_str(&format!(
                "    <testcase classname=\"bundle.verify\" name=\"{}\" time=\"{:.3}\">",
                c.name, c.seconds
            ));
            match c.status {
                Status::Pass => x.push_str(&format!("<system-out>{}</system-out>", esc(&c.detail))),
                Status::Fail => x.push_str(&format!(
                    "<failure message=\"{0}\">{0}</failure>",
                    esc(&c.detail)
                )),
                Status::Skip => x.push_str(&format!("<skipped message=\"{}\"/>", esc(&c.detail))),
            }
            x.push_str("</testcase>\n");
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }
}
