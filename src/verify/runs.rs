//! What the model checks share, each computed once by the first check that needs it: the
//! inputs, and the predictions of the bundle's two paths and of the original model on them.

use std::cell::OnceCell;
use std::time::Instant;

use serde_json::json;

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::format::decoder::DecoderSpec;
use crate::format::manifest::OriginalForward;
use crate::format::quantization::QuantMethod;
use crate::hf::bitnet::{online_converted, BitnetQuantization};
use crate::model::bundle_decoder::BundleDecoder;
use crate::model::chunks::{chunk_rows, decoder_sequences};
use crate::model::decoder::{self, next_token_predictions, scored_rows};
use crate::model::distribution::{Distributions, Form};
use crate::model::original::OriginalModel;
use crate::model::reference::{argmax_rows, forward_bundle, WeightPath};
use crate::read::Bundle;
use crate::source::hf::{Dtypes, HfModel};
use crate::source::{CheckpointSource, TensorSource};
use crate::verify::fidelity::PathsFidelity;
use crate::verify::integrity::fail_with;
use crate::verify::options::VerifyOptions;
use crate::verify::runner::Fail;
use crate::verify::samples::Samples;

/// Share of positions where `a` and `b` hold the same class (0 for none).
pub(crate) fn same_share(a: &[usize], b: &[usize]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// Why a bundle offers no original distributions to compare with.
pub(crate) fn no_original_distributions(bundle: &Bundle) -> String {
    let version = bundle.facts().version;
    match bundle.validation() {
        Some(v) if v.original_predictions.is_some() => format!(
            "no original distributions: the validation set stores the original model's predictions only (format {version}; distributions need 5.0, written unless create --original-top-k 0); give --reference ORIGINAL"
        ),
        _ => no_original_predictions(Some(bundle)).to_string(),
    }
}

/// Why a bundle offers no original predictions to compare with.
pub(crate) fn no_original_predictions(bundle: Option<&Bundle>) -> &'static str {
    let given =
        bundle.is_some_and(|b| b.facts().method == crate::format::quantization::QuantMethod::Given);
    match (bundle.and_then(Bundle::validation), given) {
        (Some(_), true) => "no original predictions: the bundle's trits were given by an already-ternary source and it was created without their original model (create --original); give --reference ORIGINAL",
        (Some(_), false) => "no original predictions: the validation set has no original_predictions (a format 1.x bundle); give --reference ORIGINAL.safetensors",
        (None, _) => "no original predictions: the bundle has no validation set; give --reference ORIGINAL.safetensors (compared on synthetic inputs)",
    }
}

/// Where the original model's predictions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginalSource {
    /// `original_predictions` in the validation file (rule 6.3).
    Stored,
    /// Recomputed from `--reference`.
    Reference,
}

impl OriginalSource {
    pub fn name(self) -> &'static str {
        match self {
            OriginalSource::Stored => "original_predictions",
            OriginalSource::Reference => "reference",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            OriginalSource::Stored => "stored in validation.safetensors",
            OriginalSource::Reference => "recomputed from --reference",
        }
    }
}

/// The predictions of the bundle's two paths on the inputs.
pub(crate) struct TwoPaths {
    pub ternary: Vec<usize>,
    pub fp16: Vec<usize>,
    pub max_logit_difference: f64,
    /// Seconds of the ternary path's forward passes (weight decoding included).
    pub ternary_seconds: f64,
    /// Seconds of the FP16 path's forward passes (weight conversion included).
    pub fp16_seconds: f64,
    /// Both paths' KL divergences and cross-entropies per sample (the fidelity check).
    pub fidelity: PathsFidelity,
}

impl TwoPaths {
    /// Adds a chunk: both paths' predictions, their logits (for the largest difference), and
    /// when the ternary pass started and the FP16 pass started (it ends now).
    fn record<'a>(
        &mut self,
        (ternary, fp16): (Vec<usize>, Vec<usize>),
        (t, f): (impl Iterator<Item = &'a f32>, impl Iterator<Item = &'a f32>),
        (start, middle): (Instant, Instant),
    ) {
        self.ternary_seconds += (middle - start).as_secs_f64();
        self.fp16_seconds += middle.elapsed().as_secs_f64();
        self.ternary.extend(ternary);
        self.fp16.extend(fp16);
        self.max_logit_difference = t
            .zip(f)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(self.max_logit_difference, f64::max);
    }
}

/// The original checkpoint's predictions, recomputed for `--reference`.
pub(crate) struct Recomputed {
    pub predictions: Vec<usize>,
    /// Its distributions, in the stored form when the bundle stores some (else the writer's
    /// choice), for the fidelity check of a bundle without them.
    pub distributions: Distributions,
    /// KL(stored || recomputed) per sample, when the bundle stores distributions.
    pub stored_kl: Vec<f64>,
    /// For the top-K form: the largest relative difference of the stored log-sum-exp and
    /// label log-probabilities from the recomputed ones.
    pub stored_scalars: Option<f64>,
    /// Per input, whether the stored prediction (if any) is within rounding of the recomputed
    /// maximum logit: a near-tie, where summation order may pick either class.
    pub near_tie: Vec<bool>,
    /// SHA-256 of the checkpoint file.
    pub sha256: String,
}

/// How recomputed predictions compare with stored ones.
pub(crate) struct Comparison {
    /// Inputs whose classes differ beyond a near-tie.
    pub differ: usize,
    /// Inputs whose classes differ at a near-tie only.
    pub near_ties: usize,
    /// The first input that differs: (index, stored, recomputed).
    pub first: (usize, usize, usize),
}

impl Recomputed {
    /// An empty recomputation of `samples`' original model (`sha256` its file's digest).
    fn new(samples: &Samples<'_>, classes: usize, sha256: String) -> Self {
        let form = samples
            .distributions()
            .map(Distributions::form)
            .unwrap_or_else(|| Form::default_for(samples.len() as u64, classes as u64));
        Recomputed {
            predictions: Vec::with_capacity(samples.len()),
            distributions: Distributions::new(form, classes),
            stored_kl: Vec::new(),
            stored_scalars: None,
            near_tie: Vec::with_capacity(samples.len()),
            sha256,
        }
    }

    /// Adds the predictions and distributions of `logits` (a row per sample, from the next
    /// sample on) and, against the stored predictions of the same samples (`stored[k]` for row
    /// k), which are near-ties; against stored distributions, KL(stored || recomputed).
    fn push(
        &mut self,
        logits: &ndarray::Array2<f32>,
        stored: Option<&[usize]>,
        samples: &Samples<'_>,
    ) -> Result<()> {
        let first = self.predictions.len();
        let labels: Vec<i64> = samples.labels()[first..first + logits.nrows()]
            .iter()
            .map(|&l| l as i64)
            .collect();
        self.distributions.push_rows(logits.view(), &labels)?;
        if let Some(d) = samples.distributions() {
            let rows = first..first + logits.nrows();
            if let Some(diff) = d.top_k_scalar_difference(&self.distributions, rows) {
                self.stored_scalars = Some(self.stored_scalars.unwrap_or(0.0).max(diff));
            }
            let mut scratch = Vec::new();
            for (k, row) in logits.rows().into_iter().enumerate() {
                let row = row.as_slice().map_or_else(
                    || std::borrow::Cow::Owned(row.to_vec()),
                    std::borrow::Cow::Borrowed,
                );
                let f = d.measure(first + k, &row, labels[k] as usize, &mut scratch);
                self.stored_kl.push(f.kl);
            }
        }
        let predictions = argmax_rows(logits);
        for (k, (row, &p)) in logits.rows().into_iter().zip(&predictions).enumerate() {
            let tie = stored.is_some_and(|s| {
                let scale = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                row[p] - row[s[k]] <= NEAR_TIE * scale
            });
            self.near_tie.push(tie);
        }
        self.predictions.extend(predictions);
        Ok(())
    }

    pub fn compare(&self, stored: &[usize]) -> Comparison {
        let mut c = Comparison {
            differ: 0,
            near_ties: 0,
            first: (0, 0, 0),
        };
        for (i, (&s, &p)) in stored.iter().zip(&self.predictions).enumerate() {
            if s == p {
                continue;
            }
            if self.near_tie[i] {
                c.near_ties += 1;
            } else {
                if c.differ == 0 {
                    c.first = (i, s, p);
                }
                c.differ += 1;
            }
        }
        c
    }
}

/// Relative size, against the largest |logit| of the row, of a logit difference that summation
/// order can produce in f32 (a 4096-term dot product rounds at about 1e-6 of its terms).
const NEAR_TIE: f32 = 1e-4;

/// What the model checks share, each computed once by the first check that needs it: the inputs,
/// and the predictions of the bundle's two paths and of the original model on them.
pub(crate) struct ModelRuns<'b> {
    pub bundle: &'b Bundle,
    options: &'b VerifyOptions,
    pub samples: OnceCell<Result<Samples<'b>>>,
    pub paths: OnceCell<Result<TwoPaths>>,
    pub fp16: OnceCell<Result<Vec<usize>>>,
    reference: OnceCell<Result<Recomputed>>,
}

impl<'b> ModelRuns<'b> {
    pub fn new(bundle: &'b Bundle, options: &'b VerifyOptions) -> Self {
        ModelRuns {
            bundle,
            options,
            samples: OnceCell::new(),
            paths: OnceCell::new(),
            fp16: OnceCell::new(),
            reference: OnceCell::new(),
        }
    }

    pub fn samples(&self) -> std::result::Result<&Samples<'b>, Fail> {
        self.samples
            .get_or_init(|| {
                Samples::of_bundle(self.bundle, self.options.samples, self.options.seed)
            })
            .as_ref()
            .map_err(fail_with)
    }

    /// Where the original predictions come from: stored, else `--reference`, else nowhere.
    pub fn original_source(&self) -> Option<OriginalSource> {
        let stored = self
            .bundle
            .validation()
            .is_some_and(|v| v.original_predictions.is_some());
        if stored {
            Some(OriginalSource::Stored)
        } else {
            self.options
                .reference
                .as_ref()
                .map(|_| OriginalSource::Reference)
        }
    }

    /// The original model's predictions on the inputs, and where they come from.
    pub fn original(&self) -> std::result::Result<(&[usize], OriginalSource), Fail> {
        match self.original_source() {
            Some(OriginalSource::Stored) => match self.samples()?.original_predictions() {
                Some(p) => Ok((p, OriginalSource::Stored)),
                None => Err((no_original_predictions(Some(self.bundle)).into(), json!({}))),
            },
            Some(OriginalSource::Reference) => {
                Ok((&self.reference()?.predictions, OriginalSource::Reference))
            }
            None => Err((no_original_predictions(Some(self.bundle)).into(), json!({}))),
        }
    }

    /// Whether the original model's distributions are stored or can be recomputed.
    pub fn has_original_distributions(&self) -> bool {
        self.bundle
            .validation()
            .is_some_and(|v| v.distributions.is_some())
            || self.options.reference.is_some()
    }

    /// The original model's distributions and where they come from: stored (format 5.0),
    /// else recomputed from `--reference` (running it if it has not run), else none.
    pub fn original_distributions(&self) -> Option<(&Distributions, OriginalSource)> {
        if let Some(d) = self.samples().ok()?.distributions() {
            return Some((d, OriginalSource::Stored));
        }
        self.options.reference.as_ref()?;
        Some((
            &self.reference().ok()?.distributions,
            OriginalSource::Reference,
        ))
    }

    /// The original model's predictions if they are stored or were already recomputed (never
    /// runs the checkpoint: metrics only report what a check computed).
    pub fn original_if_known(&self) -> Option<&[usize]> {
        match self.original_source()? {
            OriginalSource::Stored => self.samples.get()?.as_ref().ok()?.original_predictions(),
            OriginalSource::Reference => Some(&self.reference.get()?.as_ref().ok()?.predictions),
        }
    }

    /// Both paths on every input, a chunk of rows at a time.
    pub fn both_paths(&self) -> std::result::Result<&TwoPaths, Fail> {
        let samples = self.samples()?;
        self.paths
            .get_or_init(|| {
                let b = self.bundle;
                let mut p = TwoPaths {
                    ternary: Vec::with_capacity(samples.len()),
                    fp16: Vec::with_capacity(samples.len()),
                    max_logit_difference: 0.0,
                    ternary_seconds: 0.0,
                    fp16_seconds: 0.0,
                    fidelity: PathsFidelity::default(),
                };
                let original = self.original_distributions().map(|(d, _)| d);
                let labels = samples.labels();
                if let Some(spec) = b.decoder() {
                    let (ternary, fp16) = (
                        BundleDecoder::new(b, WeightPath::Ternary)?,
                        BundleDecoder::new(b, WeightPath::Fp16)?,
                    );
                    for seqs in sequence_chunks(samples, spec) {
                        let ids = samples.ids(seqs);
                        let start = Instant::now();
                        let t = decoder::forward(spec, &ternary, ids.view())?;
                        let middle = Instant::now();
                        let f = decoder::forward(spec, &fp16, ids.view())?;
                        // The scored positions once: the predictions and the fidelity figures.
                        let (ts, fs) = (scored_rows(&t)?, scored_rows(&f)?);
                        let first = p.fp16.len();
                        p.fidelity
                            .record(original, first, (ts.view(), fs.view()), labels);
                        p.record(
                            (argmax_rows(&ts), argmax_rows(&fs)),
                            (t.iter(), f.iter()),
                            (start, middle),
                        );
                    }
                    return Ok(p);
                }
                for rows in samples.chunks(chunk_rows(&b.manifest().model)) {
                    let x = samples.rows(rows);
                    let start = Instant::now();
                    let t = forward_bundle(b, WeightPath::Ternary, x.view())?;
                    let middle = Instant::now();
                    let f = forward_bundle(b, WeightPath::Fp16, x.view())?;
                    let first = p.fp16.len();
                    p.fidelity
                        .record(original, first, (t.view(), f.view()), labels);
                    p.record(
                        (argmax_rows(&t), argmax_rows(&f)),
                        (t.iter(), f.iter()),
                        (start, middle),
                    );
                }
                Ok(p)
            })
            .as_ref()
            .map_err(fail_with)
    }

    /// The FP16 model's predictions: from the agreement check's run when it ran, otherwise
    /// computed alone.
    pub fn fp16(&self) -> std::result::Result<&[usize], Fail> {
        let samples = self.samples()?;
        self.fp16
            .get_or_init(|| {
                if let Some(Ok(p)) = self.paths.get() {
                    return Ok(p.fp16.clone());
                }
                let mut out = Vec::with_capacity(samples.len());
                if let Some(spec) = self.bundle.decoder() {
                    let fp16 = BundleDecoder::new(self.bundle, WeightPath::Fp16)?;
                    for seqs in sequence_chunks(samples, spec) {
                        let ids = samples.ids(seqs);
                        out.extend(next_token_predictions(&decoder::forward(
                            spec,
                            &fp16,
                            ids.view(),
                        )?));
                    }
                    return Ok(out);
                }
                for rows in samples.chunks(chunk_rows(&self.bundle.manifest().model)) {
                    let x = samples.rows(rows);
                    out.extend(argmax_rows(&forward_bundle(
                        self.bundle,
                        WeightPath::Fp16,
                        x.view(),
                    )?));
                }
                Ok(out)
            })
            .as_ref()
            .map(Vec::as_slice)
            .map_err(fail_with)
    }

    /// The `--reference` checkpoint's predictions, a chunk of rows at a time with one layer in
    /// memory, and which of them sit at a near-tie with the stored prediction.
    pub fn reference(&self) -> std::result::Result<&Recomputed, Fail> {
        let samples = self.samples()?;
        let path = self.options.reference.as_ref().ok_or_else(|| {
            (
                "needs --reference ORIGINAL.safetensors".to_string(),
                json!({}),
            )
        })?;
        self.reference
            .get_or_init(|| {
                let reference = ReferenceModel::open(self.bundle, path)?;
                let original = reference.model(self.bundle)?;
                if let Some(spec) = self.bundle.decoder() {
                    return decoder_reference(samples, spec, &original);
                }
                let model = &self.bundle.manifest().model;
                let activations = &self.bundle.facts().activations;
                let stored = samples.original_predictions();
                let classes = self.bundle.classes() as usize;
                let mut r = Recomputed::new(
                    samples,
                    classes,
                    reference.source.sha256().unwrap_or_default(),
                );
                for rows in samples.chunks(chunk_rows(model)) {
                    let start = rows.start;
                    let x = samples.rows(rows);
                    let logits = original.chain_logits(model, activations, x.view())?;
                    r.push(&logits, stored.map(|s| &s[start..]), samples)?;
                }
                Ok(r)
            })
            .as_ref()
            .map_err(fail_with)
    }
}

/// Consecutive ranges of a decoder's sequences, as many per chunk as the memory bound allows.
fn sequence_chunks(
    samples: &Samples<'_>,
    spec: &DecoderSpec,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    let (n, t) = samples.sequence_shape().unwrap_or((0, 1));
    let step = decoder_sequences(spec, t);
    (0..n).step_by(step).map(move |s| s..(s + step).min(n))
}

/// The `--reference` model: its weights, and how the bundle says its original model runs
/// (`provenance.original`, rule 2.16).
struct ReferenceModel {
    source: Box<dyn TensorSource>,
    forward: OriginalForward,
    /// For bitnet-online: the modules its config converts.
    converted: BTreeSet<String>,
}

impl ReferenceModel {
    /// Opens `path` (a checkpoint, or a model directory) as the bundle's original model.
    fn open(bundle: &Bundle, path: &std::path::Path) -> Result<ReferenceModel> {
        let forward = bundle
            .manifest()
            .provenance
            .original
            .as_ref()
            .and_then(|o| OriginalForward::from_name(&o.forward))
            .unwrap_or_default();
        if !path.is_dir() {
            if forward == OriginalForward::BitnetOnline {
                return Err(Error::InvalidArgument(format!(
                    "{}: the bundle's original model runs as transformers' online BitNet (provenance.original): give its model directory, whose config.json says which modules it converts",
                    path.display()
                )));
            }
            return Ok(ReferenceModel {
                source: Box::new(CheckpointSource::open(path)?),
                forward,
                converted: BTreeSet::new(),
            });
        }
        let model = HfModel::open_with(path, Dtypes::Float, false)?;
        let converted = match (forward, online_converted(&model)?) {
            (OriginalForward::BitnetOnline, Some(c)) => c,
            (OriginalForward::BitnetOnline, None) => BitnetQuantization::default_converted(model.spec())
                .map_err(Error::InvalidArgument)?,
            (_, Some(_)) => {
                return Err(Error::InvalidArgument(format!(
                    "{}: online BitNet quantization, but the bundle's original model runs {} (provenance.original)",
                    path.display(),
                    forward.name()
                )))
            }
            (_, None) => BTreeSet::new(),
        };
        Ok(ReferenceModel {
            source: Box::new(model),
            forward,
            converted,
        })
    }

    /// The original model it runs.
    fn model(&self, bundle: &Bundle) -> Result<OriginalModel<'_>> {
        match self.forward {
            OriginalForward::Dense => Ok(OriginalModel::dense(&*self.source)),
            OriginalForward::Ternary => {
                if bundle.facts().method == QuantMethod::Given {
                    return Err(Error::InvalidArgument(
                        "provenance.original.forward \"ternary\" needs the bundle's quantizer, and its trits were given".into(),
                    ));
                }
                let names = bundle.quantized().map(|p| p.spec.name.clone()).collect();
                OriginalModel::ternary(&*self.source, names, *bundle.params())
            }
            OriginalForward::BitnetOnline => {
                OriginalModel::bitnet_online(&*self.source, self.converted.clone())
            }
        }
    }
}

/// The original decoder's next-token predictions, recomputed from `--reference` (a model
/// directory, or a safetensors checkpoint in transformers' naming), and the near-ties.
fn decoder_reference(
    samples: &Samples<'_>,
    spec: &DecoderSpec,
    original: &OriginalModel<'_>,
) -> Result<Recomputed> {
    let source = original.source();
    let stored = samples.original_predictions();
    let mut r = Recomputed::new(
        samples,
        spec.vocab_size,
        source.sha256().unwrap_or_default(),
    );
    for seqs in sequence_chunks(samples, spec) {
        let ids = samples.ids(seqs);
        let positions = scored_rows(&original.decoder_logits(spec, ids.view())?)?;
        let first = r.predictions.len();
        r.push(&positions, stored.map(|s| &s[first..]), samples)?;
    }
    Ok(r)
}
