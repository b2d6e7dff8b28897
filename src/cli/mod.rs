//! The `bundle` command: parses arguments (see [`args`]), calls the library, prints.

pub mod args;
pub mod print;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ternary_bundle::error::printable;
use ternary_bundle::format::activation::Activation;
use ternary_bundle::model::gradcheck::GradCheckOptions;
use ternary_bundle::read::inspect::{inspect, Inspection};
use ternary_bundle::read::mmap::Backing;
use ternary_bundle::source::ValidationSet;
use ternary_bundle::source::{load_validation_set, CheckpointSource, SourceTensor, TensorSource};
use ternary_bundle::verify::{
    verify, Check, Status, VerifyOptions, VerifyReport, RETENTION_METRIC,
};
use ternary_bundle::write::arch::{infer_arch, load_arch};
use ternary_bundle::write::demo::DemoSource;
use ternary_bundle::write::export::{export, ExportDtype};
use ternary_bundle::{
    read::checks, write_bundle_with_progress, Bundle, BundlePlan, Encoding, Error, Granularity,
    OpenOptions, QuantParams, Result, WriteOptions, WriteReport,
};

use args::{Cli, Command, CreateArgs, DtypeArg, EncodingArg, GranularityArg, QuantFlags};

/// Runs the command line; returns the process exit code (0 success, 1 failure; clap exits
/// with 2 on usage errors).
pub fn run() -> ExitCode {
    // matrixmultiply counts physical cores, which some VMs report as one; the reference model's
    // matmuls should use every core unless the user chose otherwise.
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
    }
    let cli = Cli::parse();
    let open = OpenOptions {
        backing: if cli.no_mmap {
            Backing::Read
        } else {
            Backing::Map
        },
    };
    let outcome = match cli.command {
        Command::Create(a) => create(a, &open),
        Command::Demo(a) => demo(&a.dir, a.seed, &open),
        Command::Inspect(a) => Bundle::open_with(&a.dir, &open).map(|b| {
            let i = inspect(&b);
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&i).expect("inspection serializes")
                );
            } else {
                print_inspection(&i, a.tensors);
            }
            true
        }),
        Command::Verify(a) => verify_cmd(a, open),
        Command::Export(a) => export_cmd(a, &open),
        Command::Requantize(a) => requantize_cmd(a, &open),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn quant_params(q: &QuantFlags) -> Result<QuantParams> {
    let granularity = match q.granularity {
        GranularityArg::Tensor => Granularity::Tensor,
        GranularityArg::Channel => Granularity::Channel,
        GranularityArg::Group => Granularity::Group(q.group_size.unwrap_or(0)),
    };
    if q.group_size.is_some() && q.granularity != GranularityArg::Group {
        return Err(Error::InvalidArgument(
            "--group-size needs --granularity group".into(),
        ));
    }
    let params = QuantParams {
        encoding: match q.encoding {
            EncodingArg::Trit5 => Encoding::Trit5,
            EncodingArg::Trit2 => Encoding::Trit2,
        },
        granularity,
        epsilon: q.epsilon,
        sparsity_threshold: q.sparsity_threshold,
    };
    params.check().map_err(Error::InvalidArgument)?;
    Ok(params)
}

/// The tensors to quantize: `--quantize` globs, or every 2-D layer weight of the model.
fn select_quantized(
    tensors: &[SourceTensor],
    model: &ternary_bundle::format::manifest::ModelSpec,
    patterns: &[String],
) -> Result<BTreeSet<String>> {
    if patterns.is_empty() {
        let layer_weights: BTreeSet<&str> =
            model.layers.iter().map(|l| l.weight.as_str()).collect();
        return Ok(tensors
            .iter()
            .filter(|t| {
                t.shape.len() == 2
                    && t.name.ends_with(".weight")
                    && layer_weights.contains(t.name.as_str())
            })
            .map(|t| t.name.clone())
            .collect());
    }
    let mut chosen = BTreeSet::new();
    for p in patterns {
        let glob = glob::Pattern::new(p)
            .map_err(|e| Error::InvalidArgument(format!("--quantize {p}: {e}")))?;
        let before = chosen.len();
        chosen.extend(
            tensors
                .iter()
                .filter(|t| glob.matches(&t.name))
                .map(|t| t.name.clone()),
        );
        if chosen.len() == before && !tensors.iter().any(|t| glob.matches(&t.name)) {
            return Err(Error::InvalidArgument(format!(
                "--quantize {p}: matches no tensor of the checkpoint"
            )));
        }
    }
    Ok(chosen)
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {percent}% ({eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Writes a bundle with a progress bar on a terminal (none otherwise).
fn write_with_progress(
    dest: &Path,
    source: &dyn TensorSource,
    plan: &BundlePlan,
    options: &WriteOptions,
) -> Result<WriteReport> {
    let total: u64 = source
        .tensors()
        .iter()
        .map(|t| t.shape.iter().product::<u64>())
        .sum();
    let bar = progress_bar(total, "quantizing");
    let report = write_bundle_with_progress(dest, source, plan, options, &|n| bar.inc(n));
    bar.finish_and_clear();
    report
}

fn create(a: CreateArgs, open: &OpenOptions) -> Result<bool> {
    let params = quant_params(&a.quant)?;
    let created = a.timestamp.then(now_rfc3339);
    let report = if a.demo {
        let demo = match &a.demo_widths {
            Some(w) if w.len() >= 2 && w.iter().all(|&d| d >= 1) => {
                DemoSource::with_widths(a.seed, w).with_random_readout()
            }
            Some(w) => {
                return Err(Error::InvalidArgument(format!(
                    "--demo-widths needs at least two widths >= 1, found {w:?}"
                )))
            }
            None => DemoSource::new(a.seed),
        };
        // Custom sizes (benchmarks) have a random readout: no task, so no validation set.
        let validation = a.demo_widths.is_none().then(|| demo.validation_set());
        let options = WriteOptions {
            force: a.force,
            created,
            validation,
            ..Default::default()
        };
        write_with_progress(&a.out, &demo, &demo.plan(params), &options)?
    } else {
        let from = a.from.expect("clap requires --from or --demo");
        let ckpt = CheckpointSource::open(&from)?;
        let tensors = ckpt.tensors();
        let model = match &a.arch {
            Some(p) => load_arch(p)?,
            None => infer_arch(&tensors, &from, Activation::Identity)?,
        };
        let quantize = select_quantized(&tensors, &model, &a.quantize)?;
        let validation: Option<ValidationSet> = a
            .validation
            .as_deref()
            .map(load_validation_set)
            .transpose()?;
        let options = WriteOptions {
            force: a.force,
            created,
            validation,
            source_sha256: Some(ckpt.sha256()),
            ..Default::default()
        };
        write_with_progress(
            &a.out,
            &ckpt,
            &BundlePlan {
                model,
                params,
                quantize,
            },
            &options,
        )?
    };
    let bundle = Bundle::open_with(&a.out, open)?;
    print_create_summary(&a.out, &report, &inspect(&bundle));
    Ok(true)
}

/// The current time as RFC 3339 UTC, from the system clock (civil-from-days conversion).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn print_create_summary(dest: &Path, report: &WriteReport, i: &Inspection) {
    let q = &i.quantization;
    let granularity = match q.group_size {
        Some(g) => format!("per-group scales (G = {g})"),
        None => format!("per-{} scales", q.granularity),
    };
    println!(
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
                format!("{:.3}", s.relative_error),
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
    print!("{}", print::table(&rows));
    print_totals(i);
}

fn print_totals(i: &Inspection) {
    let t = &i.totals;
    println!(
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

fn print_inspection(i: &Inspection, tensors: bool) {
    let newer = if i.newer_minor {
        " (newer minor version than this tool; unknown fields ignored)"
    } else {
        ""
    };
    println!(
        "bundle {}: {} {}{newer}",
        i.path, i.format, i.format_version
    );
    let widths: Vec<String> = std::iter::once(i.model.input_dim)
        .chain(i.model.layers.iter().map(|l| l.out_features))
        .map(|w| w.to_string())
        .collect();
    println!(
        "model: {} ({} layers, {} parameters)",
        widths.join(" -> "),
        i.model.layers.len(),
        print::count(i.totals.parameters)
    );
    let mut rows = Vec::new();
    for l in &i.model.layers {
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
    print!("{}", print::table(&rows));
    let q = &i.quantization;
    let granularity = match q.group_size {
        Some(g) => format!("group (G = {g})"),
        None => q.granularity.clone(),
    };
    println!(
        "quantization: {}, {}, granularity {granularity}, epsilon {}, sparsity threshold {}, zero point {}",
        q.method, q.encoding, q.epsilon, q.sparsity_threshold, q.zero_point
    );
    println!("files:");
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
    print!("{}", print::table(&rows));
    if let Some(n) = i.validation_samples {
        let with: Vec<&str> = i
            .validation_extras
            .iter()
            .map(|e| match e.as_str() {
                "difficulty" => "difficulty tags",
                _ => "the original model's predictions",
            })
            .collect();
        match with.is_empty() {
            true => println!("validation set: {n} samples"),
            false => println!("validation set: {n} samples, with {}", with.join(" and ")),
        }
    }
    if !i.extras.is_empty() {
        let names: Vec<String> = i.extras.iter().map(|e| printable(e).into_owned()).collect();
        println!("undeclared files (ignored): {}", names.join(", "));
    }
    if tensors {
        println!("tensors:");
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
        print!("{}", print::table(&rows));
    }
    println!("totals:");
    print_totals(i);
}

/// Prints a verify report for people: one line per check, then a summary.
fn print_verify(report: &VerifyReport) {
    for c in &report.checks {
        let status = match c.status {
            Status::Pass => print::status("PASS", true),
            Status::Fail => print::status("FAIL", false),
            Status::Skip => "SKIP".to_string(),
        };
        println!("  {:<15} {status}  {}", c.name, c.detail);
    }
    let m = &report.metrics;
    println!(
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
        println!(
            "accuracy on the validation labels: original {}, FP16 {}, ternary {}",
            percent(m.accuracy_original),
            percent(m.accuracy_fp16),
            percent(m.accuracy_ternary)
        );
    }
    match m.retention {
        Some(_) => println!(
            "retention (decisions of the original model the FP16 model keeps): {}",
            percent(m.retention)
        ),
        None => println!(
            "retention: unknown ({})",
            report
                .null_reasons
                .get(RETENTION_METRIC)
                .map_or("not computed", String::as_str)
        ),
    }
    if let (Some(q), Some(d)) = (m.quantized_model_size_mb, m.dequantized_model_size_mb) {
        println!(
            "metrics: quantized {}, dequantized {}, compression {:.1}x vs FP32, gradient flow {}",
            print::size((q * 1e6) as u64),
            print::size((d * 1e6) as u64),
            m.compression_ratio.unwrap_or(0.0),
            m.gradient_flow_test_passed
                .map_or("n/a", |b| if b { "passed" } else { "FAILED" }),
        );
    }
}

fn verify_cmd(a: args::VerifyArgs, open: OpenOptions) -> Result<bool> {
    let options = VerifyOptions {
        only: Check::parse_list(&a.only)?,
        skip: Check::parse_list(&a.skip)?,
        strict: a.strict,
        min_agreement: a.min_agreement,
        min_retention: a.min_retention,
        samples: a.samples,
        seed: a.seed,
        grad: GradCheckOptions {
            tolerance: a.grad_tol,
            ..GradCheckOptions::default()
        },
        reference: a.reference,
        open,
    };
    options.check()?;
    let report = verify(&a.dir, &options);
    if let Some(path) = &a.junit {
        std::fs::write(path, report.to_junit()).map_err(|e| Error::io(path, "write", e))?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        println!("bundle verify {}", a.dir.display());
        print_verify(&report);
    }
    Ok(report.ok)
}

fn demo(dir: &Path, seed: u64, open: &OpenOptions) -> Result<bool> {
    let demo = DemoSource::new(seed);
    let options = WriteOptions {
        force: true,
        validation: Some(demo.validation_set()),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    write_with_progress(dir, &demo, &demo.plan(QuantParams::default()), &options)?;
    println!(
        "Wrote the demo bundle to {} in {:.1} s (seed {seed}).\n",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    let bundle = Bundle::open_with(dir, open)?;
    print_inspection(&inspect(&bundle), false);
    println!("\nbundle verify {}", dir.display());
    let report = verify(
        dir,
        &VerifyOptions {
            open: *open,
            ..VerifyOptions::default()
        },
    );
    print_verify(&report);
    let ok = report.ok;
    println!(
        "\n{}\nNext: `bundle inspect {1} --tensors`, `bundle export {1} --out model.safetensors`.",
        if ok {
            "The demo bundle is intact, its FP16 weights are exactly the dequantized trits, and the FP16 model keeps\nthe original model's decisions (retention above the handoff's 99.5%)."
        } else {
            "The demo bundle FAILED a check."
        },
        dir.display()
    );
    Ok(ok)
}

fn export_cmd(a: args::ExportArgs, open: &OpenOptions) -> Result<bool> {
    let bundle = Bundle::open_with(&a.dir, open)?;
    // Never export from a damaged or inconsistent bundle: the data checks read every byte once
    // (about 0.1 s for the demo) and name the file, tensor and rule of the first problem.
    checks::check_all(&bundle)?;
    let dtype = match a.dtype {
        DtypeArg::F16 => ExportDtype::F16,
        DtypeArg::F32 => ExportDtype::F32,
    };
    let bytes = export(&bundle, &a.out, dtype, a.force)?;
    println!(
        "Wrote {} ({} tensors, {} of {} data)",
        a.out.display(),
        bundle.manifest().tensors.len(),
        print::size(bytes),
        dtype.dtype()
    );
    Ok(true)
}

fn requantize_cmd(a: args::RequantizeArgs, open: &OpenOptions) -> Result<bool> {
    let old = Bundle::open_with(&a.dir, open)?;
    let src = CheckpointSource::open(&a.from)?;
    let options = WriteOptions {
        force: a.force,
        source_sha256: Some(src.sha256()),
        ..Default::default()
    };
    let (_, changes) =
        ternary_bundle::write::requantize::requantize(&old, &src, &a.out, a.keep_scales, options)?;
    let how = if a.keep_scales {
        "the original scales"
    } else {
        "fresh absmean scales"
    };
    println!(
        "Wrote bundle {} from {} with {how}",
        a.out.display(),
        a.from.display()
    );
    let mut rows = vec![vec![
        "tensor".into(),
        "trits".into(),
        "changed".into(),
        "share".into(),
    ]];
    for c in &changes {
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
    print!("{}", print::table(&rows));
    Ok(true)
}
