//! Rendering for people: the create summary, `inspect`, the `verify` report and the
//! `requantize` table. Every string that comes from a bundle is escaped before it is printed.

use std::path::Path;

use ternary_bundle::assess::AssessReport;
use ternary_bundle::error::{escape_name, printable};
use ternary_bundle::read::inspect::Inspection;
use ternary_bundle::verify::{Check, Status, VerifyReport, RETENTION_METRIC};
use ternary_bundle::write::requantize::TritChanges;
use ternary_bundle::WriteReport;

use super::print;

/// What `create` wrote.
pub fn create_summary(dest: &Path, report: &WriteReport, i: &Inspection) {
    let q = &i.quantization;
    let granularity = match q.group_size {
        Some(g) => format!("per-group scales (G = {g})"),
        None => format!("per-{} scales", q.granularity),
    };
    outln!(
        "Wrote bundle {} ({}, {granularity})",
        dest.display(),
        q.encoding
    );
    let mut rows = vec![vec![
        "tensor".into(),
        "shape".into(),
        "storage".into(),
        "sparsity".into(),
        "rel. error".into(),
    ]];
    for t in &report.tensors {
        let (storage, sparsity, err) = match &t.stats {
            Some(s) => (
                q.encoding.clone(),
                format!("{:.1}%", s.sparsity() * 100.0),
                if q.method == "given" {
                    "given".into()
                } else {
                    format!("{:.3}", s.relative_error)
                },
            ),
            None => ("F32".into(), "-".into(), "-".into()),
        };
        rows.push(vec![
            printable(&t.name).into_owned(),
            ternary_bundle::format::safetensors::shape_string(&t.shape),
            storage,
            sparsity,
            err,
        ]);
    }
    out!("{}", print::table(&rows));
    totals(i);
}

fn totals(i: &Inspection) {
    let t = &i.totals;
    outln!(
        "  parameters: {} ({} ternary)\n  ternary.safetensors: {} ({:.2} bits per ternary weight)\n  fp16.safetensors: {}\n  compression vs FP32: {:.1}x, vs FP16: {:.1}x",
        print::count(t.parameters),
        print::count(t.quantized_parameters),
        print::size(t.ternary_bytes),
        t.bits_per_weight,
        print::size(t.fp16_bytes),
        t.compression_vs_fp32,
        t.compression_vs_fp16
    );
}

/// What `inspect` found.
pub fn inspection(i: &Inspection, tensors: bool) {
    let newer = if i.newer_minor {
        " (newer minor version than this tool; unknown fields ignored)"
    } else {
        ""
    };
    outln!(
        "bundle {}: {} {}{newer}",
        i.path,
        i.format,
        i.format_version
    );
    outln!(
        "model: {}, {} parameters",
        i.model.describe(),
        print::count(i.totals.parameters)
    );
    let layers = i.model.layers.as_deref().unwrap_or_default();
    let mut rows = Vec::new();
    for l in layers {
        let mut extra = Vec::new();
        if l.rmsnorm {
            extra.push("rmsnorm");
        }
        if l.bias {
            extra.push("bias");
        }
        rows.push(vec![
            printable(&l.name).into_owned(),
            format!("{} -> {}", l.in_features, l.out_features),
            l.activation.clone(),
            extra.join(", "),
        ]);
    }
    out!("{}", print::table(&rows));
    let q = &i.quantization;
    let granularity = match q.group_size {
        Some(g) => format!("group (G = {g})"),
        None => q.granularity.clone(),
    };
    match (q.epsilon, q.sparsity_threshold) {
        (Some(e), Some(t)) => outln!(
            "quantization: {}, {}, granularity {granularity}, epsilon {e}, sparsity threshold {t}, zero point {}",
            q.method, q.encoding, q.zero_point
        ),
        _ => outln!(
            "quantization: {}, {}, granularity {granularity}, zero point {}",
            q.method, q.encoding, q.zero_point
        ),
    }
    if let Some(s) = &q.source {
        outln!(
            "  given by: {} (the source's {} {}: {})",
            escape_name(&s.format),
            escape_name(&s.scale_name),
            match s.scale_convention.as_str() {
                "divide" => "divides",
                _ => "multiplies",
            },
            match s.scale_convention.as_str() {
                "divide" => "bundle scale = 1 / source scale",
                _ => "bundle scale = source scale",
            }
        );
    }
    outln!("files:");
    let rows: Vec<Vec<String>> = i
        .files
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                print::size(f.size),
                f.sha256
                    .as_deref()
                    .map_or(String::new(), |d| format!("sha256 {d}")),
            ]
        })
        .collect();
    out!("{}", print::table(&rows));
    if let Some(n) = i.validation_samples {
        let with: Vec<&str> = i
            .validation_extras
            .iter()
            .map(|e| match e.as_str() {
                "difficulty" => "difficulty tags",
                "original_log_probs" => "its distributions (full)",
                "original_top_ids" => "its distributions (top K)",
                _ => "the original model's predictions",
            })
            .collect();
        match with.is_empty() {
            true => outln!("validation set: {n} samples"),
            false => outln!("validation set: {n} samples, with {}", with.join(", ")),
        }
    }
    if let Some(o) = &i.provenance.original {
        let how = match o.forward.as_str() {
            "ternary" => "its quantized tensors as t x scale (the model quantization-aware training runs)",
            "bitnet-online" => "as transformers runs online BitNet quantization (ternary weights, 8-bit activations)",
            _ => "its weights as read",
        };
        outln!(
            "original model: {} ({how}){}",
            printable(&o.forward),
            o.sha256
                .as_deref()
                .map_or(String::new(), |d| format!(", sha256 {}", printable(d)))
        );
    }
    if !i.extras.is_empty() {
        let names: Vec<String> = i.extras.iter().map(|e| printable(e).into_owned()).collect();
        outln!("undeclared files (ignored): {}", names.join(", "));
    }
    if tensors {
        outln!("tensors:");
        let mut rows = vec![vec![
            "name".into(),
            "shape".into(),
            "storage".into(),
            "ternary".into(),
            "fp16".into(),
            "sparsity".into(),
            "scales".into(),
            "scale range".into(),
        ]];
        for t in &i.tensors {
            rows.push(vec![
                printable(&t.name).into_owned(),
                ternary_bundle::format::safetensors::shape_string(&t.shape),
                t.storage.clone(),
                print::size(t.ternary_bytes),
                print::size(t.fp16_bytes),
                t.sparsity
                    .map_or("-".into(), |s| format!("{:.1}%", s * 100.0)),
                t.scales.map_or("-".into(), |n| n.to_string()),
                match (t.scale_min, t.scale_max) {
                    (Some(a), Some(b)) => format!("{a:.3e} .. {b:.3e}"),
                    _ => "-".into(),
                },
            ]);
        }
        out!("{}", print::table(&rows));
    }
    outln!("totals:");
    totals(i);
}

/// A verify report for people: one line per check, then a summary and the metrics.
pub fn verify_report(report: &VerifyReport) {
    for c in &report.checks {
        let status = match c.status {
            Status::Pass => print::status("PASS", true),
            Status::Fail => print::status("FAIL", false),
            Status::Skip => "SKIP".to_string(),
        };
        outln!("  {:<15} {status}  {}", c.name, c.detail);
    }
    let m = &report.metrics;
    outln!(
        "{}: {} passed, {} failed, {} skipped",
        if report.ok {
            print::status("OK", true)
        } else {
            print::status("FAILED", false)
        },
        report.count(Status::Pass),
        report.count(Status::Fail),
        report.count(Status::Skip)
    );
    let percent = |v: Option<f64>| v.map_or("n/a".to_string(), |a| format!("{:.2}%", a * 100.0));
    let accuracies = [m.accuracy_original, m.accuracy_fp16, m.accuracy_ternary];
    if accuracies.iter().any(Option::is_some) {
        outln!(
            "accuracy on the validation labels: original {}, FP16 {}, ternary {}",
            percent(m.accuracy_original),
            percent(m.accuracy_fp16),
            percent(m.accuracy_ternary)
        );
    }
    match m.retention {
        Some(_) => outln!(
            "retention (decisions of the original model the FP16 model keeps): {}",
            percent(m.retention)
        ),
        None => outln!(
            "retention: unknown ({})",
            report
                .null_reasons
                .get(RETENTION_METRIC)
                .map_or("not computed", String::as_str)
        ),
    }
    // The fidelity check's headline: the FP16 model's distribution against the original's.
    if let Some(f) = report
        .check(Check::Fidelity)
        .map(|c| &c.figures)
        .filter(|f| f["fp16"]["kl"]["mean"].is_number())
    {
        let perplexity = |v: &serde_json::Value| v.as_f64().map(|p| format!("{p:.4}"));
        let ppl = match (
            perplexity(&f["original_model"]["perplexity"]),
            perplexity(&f["fp16"]["perplexity"]),
        ) {
            (Some(o), Some(p)) => format!("; perplexity original {o}, FP16 {p}"),
            _ => String::new(),
        };
        outln!(
            "fidelity (mean KL of the FP16 model's distribution from the original's): {:.3e} nats{ppl}",
            f["fp16"]["kl"]["mean"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if let (Some(q), Some(d)) = (m.quantized_model_size_mb, m.dequantized_model_size_mb) {
        outln!(
            "metrics: quantized {}, dequantized {}, compression {:.1}x vs FP32, gradient flow {}",
            print::size((q * 1e6) as u64),
            print::size((d * 1e6) as u64),
            m.compression_ratio.unwrap_or(0.0),
            m.gradient_flow_test_passed
                .map_or("n/a", |b| if b { "passed" } else { "FAILED" }),
        );
    }
}

/// The per-tensor trit changes of `requantize`, as a table.
pub fn trit_changes(changes: &[TritChanges]) -> String {
    let mut rows = vec![vec![
        "tensor".into(),
        "trits".into(),
        "changed".into(),
        "share".into(),
    ]];
    for c in changes {
        let share = if c.trits == 0 {
            0.0
        } else {
            c.changed as f64 / c.trits as f64 * 100.0
        };
        rows.push(vec![
            printable(&c.name).into_owned(),
            print::count(c.trits),
            print::count(c.changed),
            format!("{share:.2}%"),
        ]);
    }
    print::table(&rows)
}

/// An assessment for people: a row per level, the chosen level, the metrics.
pub fn assessment(r: &AssessReport) {
    let batch = r
        .batch_size
        .map_or("the whole level".to_string(), |n| format!("{n} examples"));
    outln!(
        "bundle assess {} (data {}; gradients in {}, batch {batch})",
        r.bundle,
        r.data,
        r.gradient_precision
    );
    let mut rows = vec![vec![
        "level".to_string(),
        "examples".into(),
        "FP16 acc".into(),
        "ternary acc".into(),
        "mean CE".into(),
        "perplexity".into(),
        "gradient variance".into(),
    ]];
    for l in &r.levels {
        let mark = if l.difficulty == r.chosen { " <" } else { "" };
        rows.push(vec![
            l.difficulty.to_string(),
            l.examples.to_string(),
            format!("{:.1}%", l.accuracy_fp16 * 100.0),
            format!("{:.1}%", l.accuracy_ternary * 100.0),
            format!("{:.4}", l.mean_cross_entropy),
            l.perplexity_fp16
                .map_or_else(|| "-".to_string(), |p| format!("{p:.3}")),
            format!("{:.4e}{mark}", l.gradient_variance),
        ]);
    }
    out!("{}", print::table(&rows));
    let verdict = if r.ok {
        print::status("OK", true)
    } else {
        print::status("NOT IN ZONE", false)
    };
    outln!("{verdict}: {}", r.detail);
    let m = &r.metrics;
    outln!(
        "metrics: optimal level {}, target accuracy {}, gradient variance {:.4e}, model {} {}",
        m.optimal_level,
        m.target_accuracy,
        m.gradient_variance_optimal,
        m.model_format,
        print::size((m.model_size_mb * 1e6) as u64)
    );
}

/// What `bundle export --format hf|hf-bitnet` wrote.
pub fn hf_export(out: &Path, s: &ternary_bundle::hf::export::ExportSummary) {
    outln!(
        "Wrote {} ({} tensors, {} of tensor data in {} weight file{})",
        out.display(),
        s.tensors,
        print::size(s.total_size),
        s.shards,
        if s.shards == 1 { "" } else { "s" }
    );
    for (name, size) in &s.files {
        outln!("  {:<32} {}", printable(name), print::size(*size));
    }
}
