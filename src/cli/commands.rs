//! The commands: each turns parsed arguments into library calls, then hands the results to
//! [`super::render`]. No format decisions here: the library makes them.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use ternary_bundle::assess::{assess, AssessOptions};
use ternary_bundle::create::{CreateInputs, CreateRequest, Settings};
use ternary_bundle::format::rfc3339::now_utc;
use ternary_bundle::gguf::export::{export_gguf, FloatType, GgufExport};
use ternary_bundle::gguf::ternary::TernaryType;
use ternary_bundle::hf::export::{export_hf, export_hf_bitnet, HfDtype, HfExport};
use ternary_bundle::model::gradcheck::GradCheckOptions;
use ternary_bundle::model::reference::WeightPath;
use ternary_bundle::read::checks;
use ternary_bundle::read::inspect::inspect;
use ternary_bundle::report::{write_report, ReportOptions};
use ternary_bundle::run;
use ternary_bundle::signing::{sign_bundle, PublicKey, SigningKey};
use ternary_bundle::source::{CheckpointSource, TensorSource};
use ternary_bundle::verify::{verify, Check, VerifyOptions};
use ternary_bundle::write::bundle::SourceDigest;
use ternary_bundle::write::demo::DemoSource;
use ternary_bundle::write::demo_lm::DemoLm;
use ternary_bundle::write::export::{export, ExportDtype};
use ternary_bundle::{
    write_bundle_qat, Bundle, BundlePlan, Encoding, Error, Granularity, OpenOptions, QuantParams,
    Result, WriteOptions, WriteReport,
};

use super::args::{self, CreateArgs, DemoModel, DtypeArg, EncodingArg, GranularityArg, QuantFlags};
use super::print;
use super::render;

/// The quantization settings the user gave (`None` where a flag was not given: the source
/// decides, `create::Settings`).
pub fn settings(q: &QuantFlags) -> Result<Settings> {
    let granularity = match q.granularity {
        None => None,
        Some(GranularityArg::Tensor) => Some(Granularity::Tensor),
        Some(GranularityArg::Channel) => Some(Granularity::Channel),
        Some(GranularityArg::Group) => Some(Granularity::Group(q.group_size.unwrap_or(0))),
    };
    if q.group_size.is_some() && q.granularity != Some(GranularityArg::Group) {
        return Err(Error::InvalidArgument(
            "--group-size needs --granularity group".into(),
        ));
    }
    Ok(Settings {
        encoding: match q.encoding {
            EncodingArg::Trit5 => Encoding::Trit5,
            EncodingArg::Trit2 => Encoding::Trit2,
        },
        granularity,
        epsilon: q.epsilon,
        sparsity_threshold: q.sparsity_threshold,
    })
}

/// The settings of a built-in model: the user's, else the defaults.
fn quant_params(q: &QuantFlags) -> Result<QuantParams> {
    settings(q)?.absmean(QuantParams::default())
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
    // The demos are latent weights of quantization-aware training: their original model is
    // their own ternary forward pass (spec section 7.2).
    let report = write_bundle_qat(dest, source, plan, options, &|n| bar.inc(n));
    bar.finish_and_clear();
    report
}

pub fn create(a: CreateArgs, open: &OpenOptions) -> Result<bool> {
    let created = a.timestamp.then(now_utc);
    // The key is read first: a bad key fails before any work.
    let sign_key = a.sign_key.as_deref().map(SigningKey::read).transpose()?;
    let report = if a.demo == Some(DemoModel::Lm) {
        let params = quant_params(&a.quant)?;
        if a.demo_widths.is_some() {
            return Err(Error::InvalidArgument(
                "--demo-widths shapes the MLP demo, not the language model".into(),
            ));
        }
        let lm = DemoLm::new(a.seed);
        let options = WriteOptions {
            force: a.force,
            created,
            validation: Some(lm.validation_set()),
            assets: lm.assets(),
            sign_key: sign_key.clone(),
            ..Default::default()
        };
        write_with_progress(&a.out, &lm, &lm.plan(params), &options)?
    } else if a.demo.is_some() {
        let params = quant_params(&a.quant)?;
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
            sign_key: sign_key.clone(),
            ..Default::default()
        };
        write_with_progress(&a.out, &demo, &demo.plan(params), &options)?
    } else {
        let request = CreateRequest {
            from: a.from.expect("clap requires --from or --demo"),
            arch: a.arch,
            quantization_metadata: a.quantization_metadata,
            original: a.original,
            ternary_original: a.original_forward == args::OriginalForwardArg::Ternary,
            quantize: a.quantize,
            settings: settings(&a.quant)?,
            validation: a.validation,
            validation_text: a.validation_text.zip(a.seq_len),
            original_top_k: a.original_top_k,
        };
        let mut inputs = CreateInputs::open(&request)?;
        inputs.sign_with(sign_key.clone());
        for note in inputs.notes() {
            eprintln!("note: {note}");
        }
        let total: u64 = inputs
            .weights()
            .tensors()
            .iter()
            .map(|t| t.shape.iter().product::<u64>())
            .sum();
        let bar = progress_bar(total, "writing");
        let report = inputs.write(&a.out, a.force, created, &|n| bar.inc(n));
        bar.finish_and_clear();
        report?
    };
    let bundle = Bundle::open_with(&a.out, open)?;
    render::create_summary(&a.out, &report, &inspect(&bundle));
    Ok(true)
}

pub fn verify_cmd(a: args::VerifyArgs, open: OpenOptions) -> Result<bool> {
    let options = VerifyOptions {
        only: Check::parse_list(&a.only)?,
        skip: Check::parse_list(&a.skip)?,
        strict: a.strict,
        min_agreement: a.min_agreement,
        min_retention: a.min_retention,
        max_kl: a.max_kl,
        samples: a.samples,
        seed: a.seed,
        grad: GradCheckOptions {
            tolerance: a.grad_tol,
            ..GradCheckOptions::default()
        },
        reference: a.reference,
        open,
        trusted_keys: a
            .trusted_key
            .iter()
            .map(|p| PublicKey::read(p))
            .collect::<Result<_>>()?,
        require_signature: a.require_signature,
    };
    options.check()?;
    let report = verify(&a.dir, &options);
    if let Some(path) = &a.junit {
        std::fs::write(path, report.to_junit()).map_err(|e| Error::io(path, "write", e))?;
    }
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        outln!("bundle verify {}", a.dir.display());
        render::verify_report(&report);
    }
    Ok(report.ok)
}

pub fn demo(dir: &Path, seed: u64, model: DemoModel, open: &OpenOptions) -> Result<bool> {
    let started = std::time::Instant::now();
    let write = |source: &dyn TensorSource, plan: BundlePlan, validation, assets| {
        let options = WriteOptions {
            force: true,
            validation: Some(validation),
            assets,
            ..Default::default()
        };
        write_with_progress(dir, source, &plan, &options)
    };
    match model {
        DemoModel::Mlp => {
            let demo = DemoSource::new(seed);
            write(
                &demo,
                demo.plan(QuantParams::default()),
                demo.validation_set(),
                Vec::new(),
            )?;
        }
        DemoModel::Lm => {
            let lm = DemoLm::new(seed);
            write(
                &lm,
                lm.plan(QuantParams::default()),
                lm.validation_set(),
                lm.assets(),
            )?;
        }
    }
    outln!(
        "Wrote the demo bundle to {} in {:.1} s (seed {seed}).\n",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    let bundle = Bundle::open_with(dir, open)?;
    render::inspection(&inspect(&bundle), false);
    outln!("\nbundle verify {}", dir.display());
    let report = verify(
        dir,
        &VerifyOptions {
            open: *open,
            ..VerifyOptions::default()
        },
    );
    render::verify_report(&report);
    let ok = report.ok;
    outln!(
        "\n{}\nNext: `bundle inspect {1} --tensors`, `bundle export {1} --out model.safetensors`.",
        if ok {
            "The demo bundle is intact, its FP16 weights are exactly the dequantized trits, and the FP16 model keeps\nthe original model's decisions (retention above the handoff's 99.5%) and its distribution (mean KL\nwithin the 0.05-nat gate)."
        } else {
            "The demo bundle FAILED a check."
        },
        dir.display()
    );
    Ok(ok)
}

pub fn export_cmd(a: args::ExportArgs, open: &OpenOptions) -> Result<bool> {
    let bundle = Bundle::open_with(&a.dir, open)?;
    // Never export from a damaged or inconsistent bundle: the data checks read every byte once
    // (about 0.1 s for the demo) and name the file, tensor and rule of the first problem.
    checks::check_all(&bundle)?;
    if a.format == args::FormatArg::Gguf {
        return export_gguf_cmd(&a, &bundle);
    }
    if a.gguf_type.is_some() || a.float_type.is_some() || a.no_tokenizer || a.allow_float_fallback {
        return Err(Error::InvalidArgument(
            "--type, --float-type, --no-tokenizer and --allow-float-fallback are for --format gguf"
                .into(),
        ));
    }
    if a.format != args::FormatArg::Safetensors {
        return export_hf_cmd(&a, &bundle);
    }
    let dtype = match a.dtype {
        DtypeArg::F16 => ExportDtype::F16,
        DtypeArg::F32 => ExportDtype::F32,
        DtypeArg::Bf16 => {
            return Err(Error::InvalidArgument(
                "--dtype bf16 is for --format hf (a state dict keeps F16 or F32 exactly)".into(),
            ))
        }
    };
    let bytes = export(&bundle, &a.out, dtype, a.force)?;
    outln!(
        "Wrote {} ({} tensors, {} of {} data)",
        a.out.display(),
        bundle.manifest().tensors.len(),
        print::size(bytes),
        dtype.dtype()
    );
    Ok(true)
}

/// `bundle export --format hf|hf-bitnet`: a model directory (spec sections 18.2 and 18.4).
fn export_hf_cmd(a: &args::ExportArgs, bundle: &Bundle) -> Result<bool> {
    let options = HfExport {
        dtype: match a.dtype {
            DtypeArg::F16 => HfDtype::F16,
            DtypeArg::Bf16 => HfDtype::Bf16,
            DtypeArg::F32 => HfDtype::F32,
        },
        max_shard_size: a.max_shard_size,
        max_position_embeddings: a.max_position_embeddings,
        force: a.force,
    };
    let summary = match a.format {
        args::FormatArg::HfBitnet => export_hf_bitnet(bundle, &a.out, &options)?,
        _ => export_hf(bundle, &a.out, &options)?,
    };
    render::hf_export(&a.out, &summary);
    Ok(true)
}

/// `bundle export --format gguf`: one GGUF file with TQ1_0 / TQ2_0 ternary tensors.
fn export_gguf_cmd(a: &args::ExportArgs, bundle: &Bundle) -> Result<bool> {
    let ternary = match a.gguf_type {
        Some(args::GgufTypeArg::Tq1_0) => TernaryType::Tq1_0,
        Some(args::GgufTypeArg::Tq2_0) => TernaryType::Tq2_0,
        Some(args::GgufTypeArg::I2S) => TernaryType::I2S,
        None => {
            return Err(Error::InvalidArgument(
                "--format gguf needs --type tq1_0, tq2_0 (llama.cpp) or i2_s (bitnet.cpp)".into(),
            ))
        }
    };
    if !matches!(a.dtype, DtypeArg::F16) {
        return Err(Error::InvalidArgument(
            "--dtype is for safetensors and hf; --format gguf takes --float-type f32|f16".into(),
        ));
    }
    let options = GgufExport {
        ternary,
        float_type: match a.float_type {
            None | Some(args::FloatTypeArg::F32) => FloatType::F32,
            Some(args::FloatTypeArg::F16) => FloatType::F16,
        },
        no_tokenizer: a.no_tokenizer,
        context_length: a.max_position_embeddings,
        allow_float_fallback: a.allow_float_fallback,
        force: a.force,
    };
    let summary = export_gguf(bundle, &a.out, &options)?;
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    // Bits per weight only of weights written in the type: with none, there is no figure.
    let detail = match summary.ternary_weights {
        0 => "no weights in that type".to_string(),
        n => format!(
            "{n} weights in {}, {:.4} bits per weight",
            print::size(summary.ternary_bytes),
            summary.ternary_bytes as f64 * 8.0 / n as f64
        ),
    };
    outln!(
        "Wrote {} (GGUF v3, arch {}): {} tensors, {} ternary as {}{} ({detail}), {} in all",
        a.out.display(),
        summary.arch,
        summary.tensors,
        summary.ternary_tensors,
        ternary.ggml_type().name(),
        if summary.fallback_tensors > 0 {
            format!(", {} kept as F16", summary.fallback_tensors)
        } else {
            String::new()
        },
        print::size(summary.bytes)
    );
    Ok(true)
}

pub fn run_cmd(a: args::RunArgs, open: &OpenOptions) -> Result<bool> {
    let bundle = Bundle::open_with(&a.dir, open)?;
    // As for export: never compute from a damaged bundle.
    checks::check_all(&bundle)?;
    let (path, name) = match a.path {
        args::PathArg::Fp16 => (WeightPath::Fp16, "FP16"),
        args::PathArg::Ternary => (WeightPath::Ternary, "ternary"),
    };
    let inputs = run::load_inputs(&a.input, &bundle)?;
    let shape = run::run_to_file(&bundle, path, &inputs, &a.out, a.force, a.top_k)?;
    let (rows, classes) = (shape.rows, shape.classes);
    let lead = match shape.tokens {
        None => format!("{rows}"),
        Some(t) => format!("{rows}, {t}"),
    };
    let what = match (shape.top_k, shape.tokens) {
        (None, _) => format!("logits F32 [{lead}, {classes}]"),
        (Some(k), _) => format!(
            "the {k} largest logits of {classes}: top_logits F32 [{lead}, {k}] and top_ids I64 [{lead}, {k}]"
        ),
    };
    let predictions = match shape.tokens {
        None => "predictions",
        Some(_) => "next-token predictions",
    };
    outln!(
        "Wrote {} ({} bytes): {what} and {predictions} I64 [{lead}] of the {name} weights",
        a.out.display(),
        shape.bytes
    );
    Ok(true)
}

pub fn requantize_cmd(a: args::RequantizeArgs, open: &OpenOptions) -> Result<bool> {
    let old = Bundle::open_with(&a.dir, open)?;
    let src = CheckpointSource::open(&a.from)?;
    let options = WriteOptions {
        force: a.force,
        source_sha256: SourceDigest::Compute,
        ..Default::default()
    };
    let (_, changes) =
        ternary_bundle::write::requantize::requantize(&old, &src, &a.out, a.keep_scales, options)?;
    let how = if a.keep_scales {
        "the original scales"
    } else {
        "fresh absmean scales"
    };
    outln!(
        "Wrote bundle {} from {} with {how}",
        a.out.display(),
        a.from.display()
    );
    out!("{}", render::trit_changes(&changes));
    Ok(true)
}

pub fn assess_cmd(a: args::AssessArgs, open: OpenOptions) -> Result<bool> {
    let options = AssessOptions {
        target: a.target_accuracy,
        zone: a.zone,
        batch_size: a.batch_size,
        data: a.data,
        open,
    };
    let report = assess(&a.dir, &options)?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        render::assessment(&report);
    }
    Ok(report.ok)
}

pub fn report_cmd(a: args::ReportArgs, open: OpenOptions) -> Result<bool> {
    let options = ReportOptions {
        verify: VerifyOptions {
            reference: a.reference,
            min_retention: a.min_retention,
            max_kl: a.max_kl,
            open,
            ..VerifyOptions::default()
        },
        ..ReportOptions::default()
    };
    options.verify.check()?;
    let (bytes, ok) = write_report(&a.dir, &a.out, &options, a.force)?;
    outln!(
        "Wrote {} ({}): {}",
        a.out.display(),
        print::size(bytes),
        if ok {
            "every verify check passed"
        } else {
            "the bundle FAILED a verify check (the page says which)"
        }
    );
    Ok(ok)
}

/// `bundle sign`: checks the bundle's digests, then writes `model.sig`.
pub fn sign_cmd(a: args::SignArgs) -> Result<bool> {
    let key = SigningKey::read(&a.key)?;
    let signed = sign_bundle(&a.dir, &key)?;
    outln!(
        "signed {} ({} files) with the {} key {}",
        a.dir
            .join(ternary_bundle::signing::SIGNATURE_FILE)
            .display(),
        signed.files.len(),
        signed.curve,
        signed.hint
    );
    Ok(true)
}

/// `bundle keygen`: a P-256 private key (PKCS#8 PEM, mode 0600) and its public key beside it.
pub fn keygen_cmd(a: args::KeygenArgs) -> Result<bool> {
    let key = SigningKey::generate_p256();
    let public_path = ternary_bundle::signing::keys::public_key_path(&a.out);
    ternary_bundle::signing::keys::write_key_pair(&key, &a.out, &public_path, a.force)?;
    outln!(
        "wrote {} (private: keep it secret) and {} (public: give it to verifiers)\nkey hint {}",
        a.out.display(),
        public_path.display(),
        key.public().hint()
    );
    Ok(true)
}
