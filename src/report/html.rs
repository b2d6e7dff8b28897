//! The report page: summary, verify checks, handoff metrics, the charts and the assessment.
//! Everything from the bundle goes through maud's escaping; the page carries its own style and
//! a Content-Security-Policy that allows no script, font, image or connection.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::report::{charts, ReportData};
use crate::verify::{Check, Status};
use serde_json::Value;

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1000px; color: #1d2330; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #d7dbe3; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .2em .8em .2em 0; text-align: left; vertical-align: top; }
th { color: #5b6475; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #0a7a35; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; } .skip { color: #6b7280; }
.verdict { font-size: 1.1em; padding: .6em .9em; border-radius: 6px; display: inline-block; }
.verdict.ok { background: #e3f4e8; } .verdict.bad { background: #fbe4e2; }
.detail { word-break: break-word; max-width: 640px; } .note { color: #5b6475; }
svg.chart { display: block; margin: .5em 0 1.5em; max-width: 100%; height: auto; }
svg .label, svg .value { font: 12px system-ui, sans-serif; fill: #1d2330; } svg .end { text-anchor: end; } svg .middle { text-anchor: middle; }
svg .neg { fill: #d1495b; } svg .zero { fill: #c9ced8; } svg .pos { fill: #2f6fb5; } svg .bar { fill: #5a8fd0; }
svg .axis { stroke: #8a93a3; stroke-width: 1; } svg .zone { fill: #dff3e4; } svg .target { stroke: #0a7a35; stroke-dasharray: 5 4; stroke-width: 1.5; }
svg .acc { fill: none; stroke: #2f6fb5; stroke-width: 2; } svg .var { fill: none; stroke: #c56a1a; stroke-width: 2; }
svg .acc-point { fill: #2f6fb5; } svg .var-point { fill: #c56a1a; } svg .chosen { stroke: #1d2330; stroke-width: 1; stroke-dasharray: 2 3; }
"#;

/// The whole page.
pub fn page(d: &ReportData) -> String {
    let title = format!("bundle report: {}", d.dir.display());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Handoff report" }
                p class="note" { "Bundle " code { (d.dir.display().to_string()) } ", written by " code { "bundle report" } " " (env!("CARGO_PKG_VERSION")) "." }
                (verdict(d))
                (summary(d))
                (checks(d))
                (metrics(d))
                (fidelity(d))
                (tensor_charts(d))
                (assessment(d))
            }
        }
    }
    .into_string()
}

fn verdict(d: &ReportData) -> Markup {
    let (class, text) = if d.verify.ok {
        ("verdict ok", "verify passed: no check failed")
    } else {
        ("verdict bad", "verify: the bundle FAILED a check")
    };
    html! { p id="verdict" class=(class) { (text) } }
}

fn summary(d: &ReportData) -> Markup {
    html! {
        h2 id="summary" { "Summary" }
        @match &d.inspection {
            Err(e) => p class="fail" { "The bundle does not open: " (e) },
            Ok(i) => {
                table {
                    tr { th { "format" } td { (i.format) " " (i.format_version) } }
                    tr { th { "model" } td { (i.model.describe()) } }
                    tr { th { "parameters" } td { (i.totals.parameters) " (" (i.totals.quantized_parameters) " ternary)" } }
                    tr { th { "quantization" } td { (i.quantization.method) ", " (i.quantization.encoding) ", " (i.quantization.granularity) } }
                    tr { th { "ternary.safetensors" } td { (size(i.totals.ternary_bytes)) " (" (format!("{:.2}", i.totals.bits_per_weight)) " bits per ternary weight)" } }
                    tr { th { "fp16.safetensors" } td { (size(i.totals.fp16_bytes)) } }
                    tr { th { "compression" } td { (format!("{:.1}x vs FP32, {:.1}x vs FP16", i.totals.compression_vs_fp32, i.totals.compression_vs_fp16)) } }
                    @if let Some(n) = i.validation_samples { tr { th { "validation set" } td { (n) " samples" @for e in &i.validation_extras { ", " (e) } } } }
                }
                table {
                    tr { th { "layer" } th { "shape" } th { "activation" } th { "" } }
                    @for l in i.model.layers.as_deref().unwrap_or_default() {
                        tr { td { (l.name) } td { (l.in_features) " → " (l.out_features) } td { (l.activation) } td { @if l.rmsnorm { "rmsnorm " } @if l.bias { "bias" } } }
                    }
                }
            }
        }
    }
}

fn checks(d: &ReportData) -> Markup {
    html! {
        h2 id="checks" { "Verify checks" }
        table id="verify-checks" {
            tr { th { "check" } th { "status" } th { "detail" } }
            @for c in &d.verify.checks {
                @let (class, status) = match c.status { Status::Pass => ("pass", "PASS"), Status::Fail => ("fail", "FAIL"), Status::Skip => ("skip", "SKIP") };
                tr { td { (c.name.name()) } td class=(class) { (status) } td class="detail" { (c.detail) } }
            }
        }
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |a| format!("{:.2}%", a * 100.0))
}

fn metrics(d: &ReportData) -> Markup {
    let m = &d.verify.metrics;
    let reason = |k: &str| d.verify.null_reasons.get(k).cloned().unwrap_or_default();
    html! {
        h2 id="metrics" { "Handoff metrics" }
        table {
            tr { th { "retention" } td class="num" { (percent(m.retention)) } td class="note" { @if m.retention.is_none() { (reason(crate::verify::RETENTION_METRIC)) } @else { "decisions of the original model the FP16 model keeps" } } }
            tr { th { "accuracy, original" } td class="num" { (percent(m.accuracy_original)) } td class="note" { (reason("accuracy_original")) } }
            tr { th { "accuracy, FP16" } td class="num" { (percent(m.accuracy_fp16)) } td class="note" { (reason("accuracy_fp16")) } }
            tr { th { "accuracy, ternary" } td class="num" { (percent(m.accuracy_ternary)) } td class="note" { (reason("accuracy_ternary")) } }
            tr { th { "gradient flow" } td class="num" { (m.gradient_flow_test_passed.map_or("n/a", |b| if b { "passed" } else { "FAILED" })) } td {} }
        }
    }
}

/// A figure of the fidelity check's JSON, formatted; "n/a" when null or absent.
fn num(v: &Value, fmt: fn(f64) -> String) -> String {
    v.as_f64().map_or_else(|| "n/a".to_string(), fmt)
}

fn fidelity(d: &ReportData) -> Markup {
    let check = d.verify.check(Check::Fidelity);
    let figures = check
        .map(|c| &c.figures)
        .filter(|f| f.get("fp16").is_some());
    let sci = |x: f64| format!("{x:.3e}");
    let fixed = |x: f64| format!("{x:.4}");
    html! {
        h2 id="fidelity" { "Fidelity: KL divergence and perplexity" }
        @match figures {
            None => p class="note" id="no-fidelity" { "No fidelity figures: " (check.map_or("there is no fidelity check", |c| c.detail.as_str())) },
            Some(f) => {
                p class="note" { "KL(original || path) in nats per scored sample (spec section 16.3), against the original model's distributions (" (if f["original"] == "reference" { "recomputed from --reference" } else { "stored in the bundle" }) ", " (f["form"].as_str().unwrap_or("")) " form" @if let Some(k) = f["top_k"].as_u64() { ", top " (k) ": a lower bound" } "); gate: FP16 mean at most " (num(&f["max_kl"], |x| if x > 0.0 { format!("{x}") } else { "(disabled)".into() })) "." }
                table id="fidelity-summary" {
                    tr { th { "path" } th { "mean KL" } th { "median" } th { "p99" } th { "max" } th { "error bound (mean)" } th { "cross-entropy" } th { "perplexity" } th { "same top-1" } }
                    @for path in ["fp16", "ternary"] {
                        @let p = &f[path];
                        tr { td { (path) } td class="num" { (num(&p["kl"]["mean"], sci)) } td class="num" { (num(&p["kl"]["median"], sci)) } td class="num" { (num(&p["kl"]["p99"], sci)) } td class="num" { (num(&p["kl"]["max"], sci)) } td class="num" { (num(&p["kl_error_bound"]["mean"], sci)) } td class="num" { (num(&p["cross_entropy"], fixed)) } td class="num" { (num(&p["perplexity"], fixed)) } td class="num" { (percent(p["same_top"].as_f64())) } }
                    }
                    tr { td { "original" } td {} td {} td {} td {} td {} td class="num" { (num(&f["original_model"]["cross_entropy"], fixed)) } td class="num" { (num(&f["original_model"]["perplexity"], fixed)) } td {} }
                }
                @let edges: Vec<f64> = f["histogram_edges"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
                @let counts = |path: &str| -> Vec<u64> { f[path]["histogram"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default() };
                @if !edges.is_empty() {
                    (charts::kl_histogram(&edges, &[("FP16", counts("fp16")), ("ternary", counts("ternary"))]))
                }
                @if let Some(levels) = f["by_difficulty"].as_array() {
                    h3 { "Per difficulty level" }
                    table id="fidelity-levels" {
                        tr { th { "level" } th { "samples" } th { "mean KL, FP16" } th { "mean KL, ternary" } th { "perplexity (CE), original" } th { "FP16" } th { "ternary" } }
                        @for l in levels {
                            @let shown = |model: &str| -> String { match l[format!("perplexity_{model}")].as_f64() { Some(p) => format!("{p:.4}"), None => num(&l[format!("cross_entropy_{model}")], fixed) } };
                            tr { td { (l["difficulty"]) } td class="num" { (l["samples"]) } td class="num" { (num(&l["mean_kl_fp16"], sci)) } td class="num" { (num(&l["mean_kl_ternary"], sci)) } td class="num" { (shown("original")) } td class="num" { (shown("fp16")) } td class="num" { (shown("ternary")) } }
                        }
                    }
                }
            }
        }
    }
}

fn tensor_charts(d: &ReportData) -> Markup {
    html! {
        h2 id="tensors" { "Tensors" }
        @if d.tensors.is_empty() {
            p class="note" { "No quantized tensor to chart." }
        } @else {
            h3 { "Trit distribution" }
            (charts::trit_distribution(&d.tensors))
            h3 { "Scale distribution" }
            (charts::scale_distribution(&d.tensors))
        }
        h3 { "Gradient norm per tensor" }
        @if d.gradients.is_empty() {
            p class="note" { "No gradient figures: the gradient_flow check did not run." }
        } @else {
            (charts::gradient_norms(&d.gradients))
        }
    }
}

fn assessment(d: &ReportData) -> Markup {
    html! {
        h2 id="assessment" { "Edge-of-chaos assessment" }
        @match &d.assessment {
            Err(why) => p class="note" id="no-assessment" { "No assessment: " (why) },
            Ok(r) => {
                p class=(if r.ok { "verdict ok" } else { "verdict bad" }) { (r.detail) }
                (charts::assessment(r))
                table {
                    tr { th { "level" } th { "examples" } th { "FP16 accuracy" } th { "ternary accuracy" } th { "mean CE" } th { "perplexity" } th { "gradient variance" } }
                    @for l in &r.levels {
                        tr { td { (l.difficulty) @if l.difficulty == r.chosen { " (chosen)" } } td class="num" { (l.examples) } td class="num" { (format!("{:.1}%", l.accuracy_fp16 * 100.0)) } td class="num" { (format!("{:.1}%", l.accuracy_ternary * 100.0)) } td class="num" { (format!("{:.4}", l.mean_cross_entropy)) } td class="num" { (l.perplexity_fp16.map_or_else(|| "-".to_string(), |p| format!("{p:.3}"))) } td class="num" { (format!("{:.4e}", l.gradient_variance)) } }
                    }
                }
            }
        }
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
