//! What `bundle create` reads, decided in one place: the kind of source (a checkpoint of real
//! weights, the quantizing stage's state dict of trits, a Hugging Face model directory with or
//! without BitNet quantization), the settings it implies, its original model, the files carried
//! with it and its validation set. Each source format lives in its own module
//! ([`crate::source`], [`crate::hf`]); this module only picks one and hands the writer a
//! [`BundlePlan`], a source and an [`OriginalModel`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::activation::Activation;
use crate::format::encoding::Encoding;
use crate::format::manifest::{ModelSpec, OriginalForward};
use crate::format::quantization::{Granularity, QuantParams};
use crate::gguf::import::{is_gguf, tokenizer_assets, GgufModel};
use crate::hf::bitnet::{online_converted, BitnetQuantization, PackedBitnet};
use crate::hf::tokenizer::{carried_assets, validation_from_text};
use crate::model::original::{bitnet_online_params, OriginalModel};
use crate::signing::SigningKey;
use crate::source::hf::{Dtypes, HfModel, CONFIG_FILE};
use crate::source::quantization_metadata::{QuantizationMetadata, StageHandoff, METADATA_FILE};
use crate::source::{
    load_validation_set, AssetFile, BorrowedSource, CheckpointSource, RawTensors, TensorSource,
    ValidationSet,
};
use crate::write::arch::{infer_arch, load_arch};
use crate::write::bundle::{write_bundle_from, SourceDigest, WriteOptions, WriteReport};
use crate::write::plan::{select_quantized, BundlePlan};

/// Quantization settings as the user gave them: `None` takes the source's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Settings {
    /// The trit packing.
    pub encoding: Encoding,
    /// Which weights share a scale.
    pub granularity: Option<Granularity>,
    /// The smallest scale.
    pub epsilon: Option<f32>,
    /// The rounding threshold.
    pub sparsity_threshold: Option<f32>,
}

/// Everything `bundle create --from` was asked.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// A checkpoint file or a model directory.
    pub from: PathBuf,
    /// An architecture file for a chain of layers.
    pub arch: Option<PathBuf>,
    /// The quantizing stage's metadata for a state dict of trits (spec section 18.1).
    pub quantization_metadata: Option<PathBuf>,
    /// The original model, when it is not `from`.
    pub original: Option<PathBuf>,
    /// Run the original model's quantized tensors as t × scale (spec section 7.2).
    pub ternary_original: bool,
    /// Glob patterns of the tensors to quantize (replacing the default choice).
    pub quantize: Vec<String>,
    /// Quantization settings.
    pub settings: Settings,
    /// A validation set file.
    pub validation: Option<PathBuf>,
    /// A validation set from plain text, and the tokens per sequence (spec section 18.5).
    pub validation_text: Option<(PathBuf, usize)>,
    /// Which form of the original model's distributions to store
    /// ([`WriteOptions::original_top_k`]).
    pub original_top_k: Option<u64>,
}

/// What [`CreateInputs::from_memory`] takes: tensors the caller lends in place.
pub struct MemoryInputs<'a> {
    /// The weights: floats, or with `metadata` a state dict of trits.
    pub weights: BorrowedSource<'a>,
    /// The quantizing stage's metadata, when `weights` hold its trits (spec section 18.1).
    pub metadata: Option<QuantizationMetadata>,
    /// The original (pre-quantization) model, when it is not `weights` run as the request
    /// says: its float weights, run dense (or through the quantizer with `ternary_original`).
    pub original: Option<BorrowedSource<'a>>,
    /// A validation set to embed.
    pub validation: Option<ValidationSet>,
}

/// Whose decisions `original_predictions` record.
enum Original<'a> {
    /// The weights source itself, run with this forward pass (and these converted tensors for
    /// bitnet-online).
    Source(OriginalForward, BTreeSet<String>),
    /// Another model, with its forward pass, converted tensors and file digest.
    Other(
        Box<dyn TensorSource + 'a>,
        OriginalForward,
        BTreeSet<String>,
        Option<String>,
    ),
    /// None known: no original predictions.
    None,
}

/// The sources and plan of a `bundle create`, opened and checked.
pub struct CreateInputs<'a> {
    weights: Box<dyn TensorSource + 'a>,
    plan: BundlePlan,
    original: Original<'a>,
    validation: Option<ValidationSet>,
    assets: Vec<AssetFile>,
    original_top_k: Option<u64>,
    notes: Vec<String>,
    sign_key: Option<SigningKey>,
}

impl<'a> CreateInputs<'a> {
    /// Opens what `request` names and decides the plan: a model directory by its config.json
    /// (a `quantization_metadata.json` beside it, a packed or online BitNet
    /// `quantization_config`, or plain weights), a file by `--quantization-metadata`.
    pub fn open(request: &CreateRequest) -> Result<CreateInputs<'static>> {
        let from = &request.from;
        let metadata = match (&request.quantization_metadata, from.is_dir()) {
            (Some(m), _) => Some(QuantizationMetadata::read(m)?),
            (None, true) if from.join(METADATA_FILE).is_file() => {
                Some(QuantizationMetadata::read(&from.join(METADATA_FILE))?)
            }
            (None, _) => None,
        };
        let mut notes = Vec::new();
        let (opened, assets) = if from.is_dir() {
            (open_directory(request, metadata)?, carried_assets(from)?)
        } else if is_gguf(from) {
            if metadata.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{}: --quantization-metadata is for a state dict of trits; a GGUF file states its own scales",
                    from.display()
                )));
            }
            open_gguf(request, &mut notes)?
        } else {
            (open_file(request, metadata)?, Vec::new())
        };
        let Opened {
            weights,
            plan,
            forward,
            converted,
        } = opened;
        let original = open_original(request, &plan, forward, converted)?;
        let validation = match (&request.validation, &request.validation_text) {
            (Some(p), _) => Some(load_validation_set(p)?),
            (None, Some((text, t))) => {
                let tokenizer = assets
                    .iter()
                    .find(|a| a.name == "tokenizer.json")
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "--validation-text needs a tokenizer: {} has no tokenizer.json",
                            from.display()
                        ))
                    })?;
                let vocab = plan
                    .model
                    .decoder
                    .as_ref()
                    .map(|d| d.vocab_size as usize)
                    .ok_or_else(|| {
                        Error::InvalidArgument(
                            "--validation-text is for a language model (a model directory)".into(),
                        )
                    })?;
                Some(validation_from_text(&tokenizer.bytes, text, *t, vocab)?)
            }
            (None, None) => None,
        };
        Ok(CreateInputs {
            weights,
            plan,
            original,
            validation,
            assets,
            original_top_k: request.original_top_k,
            notes,
            sign_key: None,
        })
    }

    /// A chain of layers held in memory (the Python package's `create`), read as `bundle create
    /// --from` reads the same tensors in a checkpoint file: float weights quantized with the
    /// request's settings, or with `inputs.metadata` the stage's trits as given (spec section
    /// 18.1). `request.from` is ignored; `arch`, `quantize`, `settings`, `original`,
    /// `ternary_original` and `original_top_k` apply, and an original model in memory
    /// (`inputs.original`) takes the place of `--original`.
    pub fn from_memory(inputs: MemoryInputs<'a>, request: &CreateRequest) -> Result<Self> {
        let MemoryInputs {
            weights,
            metadata,
            original,
            validation,
        } = inputs;
        let Opened {
            weights,
            plan,
            forward,
            converted,
        } = open_tensors(request, weights, metadata)?;
        let original = match original {
            Some(_) if request.original.is_some() => {
                return Err(Error::InvalidArgument(
                    "an original model in memory and one in a file (--original): give one".into(),
                ))
            }
            Some(o) => Original::Other(
                Box::new(o),
                dense_or_ternary(request),
                BTreeSet::new(),
                None,
            ),
            None => open_original(request, &plan, forward, converted)?,
        };
        Ok(CreateInputs {
            weights,
            plan,
            original,
            validation,
            assets: Vec::new(),
            original_top_k: request.original_top_k,
            notes: Vec::new(),
            sign_key: None,
        })
    }

    /// Signs the bundle with `key` when it is written (`create --sign-key`, spec section 10.1).
    pub fn sign_with(&mut self, key: Option<SigningKey>) {
        self.sign_key = key;
    }

    /// Replaces the validation set to embed (the Python package's in-memory one).
    pub fn set_validation(&mut self, validation: ValidationSet) {
        self.validation = Some(validation);
    }

    /// What the user should know about how the source was read (printed by the CLI).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// What will be written.
    pub fn plan(&self) -> &BundlePlan {
        &self.plan
    }

    /// The weights source.
    pub fn weights(&self) -> &dyn TensorSource {
        &*self.weights
    }

    /// Writes the bundle to `dest` (`force` replaces one, `created` is a timestamp to record),
    /// calling `progress` per tensor.
    pub fn write(
        &self,
        dest: &Path,
        force: bool,
        created: Option<String>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<WriteReport> {
        let weights = &*self.weights;
        let (source, forward, converted, sha) = match &self.original {
            Original::Source(f, c) => (Some(weights), *f, c, None),
            Original::Other(s, f, c, sha) => (Some(&**s), *f, c, sha.clone()),
            Original::None => (None, OriginalForward::Dense, &BTreeSet::new(), None),
        };
        let elsewhere = matches!(self.original, Original::Other(..));
        let original = match source {
            None => None,
            Some(s) => Some(match forward {
                OriginalForward::Dense => OriginalModel::dense(s),
                OriginalForward::Ternary => {
                    OriginalModel::ternary(s, self.plan.quantize.clone(), self.plan.params)?
                }
                OriginalForward::BitnetOnline => {
                    OriginalModel::bitnet_online(s, converted.clone())?
                }
            }),
        };
        let options = WriteOptions {
            force,
            created,
            source_sha256: SourceDigest::Compute,
            validation: self.validation.clone(),
            assets: self.assets.clone(),
            original_sha256: sha,
            original_elsewhere: elsewhere,
            original_top_k: self.original_top_k,
            sign_key: self.sign_key.clone(),
            ..Default::default()
        };
        write_bundle_from(
            dest,
            weights,
            original.as_ref(),
            &self.plan,
            &options,
            progress,
        )
    }
}

/// `--original-forward`'s choice for a source of real weights.
fn dense_or_ternary(request: &CreateRequest) -> OriginalForward {
    if request.ternary_original {
        OriginalForward::Ternary
    } else {
        OriginalForward::Dense
    }
}

/// A weights source, opened, with its plan and how its own original model runs.
struct Opened<'a> {
    weights: Box<dyn TensorSource + 'a>,
    plan: BundlePlan,
    /// The forward pass of the source as its original model (when `--original` is not given).
    forward: OriginalForward,
    /// For bitnet-online: the weights of the modules it converts.
    converted: BTreeSet<String>,
}

/// A model directory, by what it holds (spec section 18): a `quantization_metadata.json` (the
/// stage's trits), a packed BitNet `quantization_config`, an online one (the BF16 master), or
/// plain float weights.
fn open_directory(
    request: &CreateRequest,
    metadata: Option<QuantizationMetadata>,
) -> Result<Opened<'static>> {
    let from = &request.from;
    if request.arch.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{}: --arch describes a chain of layers; a model directory's {CONFIG_FILE} describes its decoder",
            from.display()
        )));
    }
    // A directory without config.json is refused by the model reader, naming what a model
    // directory holds.
    let config_path = from.join(CONFIG_FILE);
    let bitnet = match std::fs::read_to_string(&config_path) {
        Ok(text) => BitnetQuantization::from_config(&text)
            .map_err(|m| Error::InvalidArgument(format!("{}: {m}", config_path.display())))?,
        Err(_) => None,
    };
    if let Some(meta) = metadata {
        let model = HfModel::open_with(from, Dtypes::Any, true)?;
        let spec = ModelSpec::of_decoder(model.spec());
        return given_plan(request, StageHandoff::new(Box::new(model), meta)?, spec);
    }
    let online = match bitnet {
        Some(q) if !q.online => {
            no_quantize_patterns(request)?;
            let packed = PackedBitnet::open(from)?;
            let plan = BundlePlan {
                model: ModelSpec::of_decoder(packed.spec()),
                params: given_params(request, Granularity::Tensor)?,
                quantize: packed.converted().clone(),
                given: Some(packed.quantization().record()),
            };
            return Ok(Opened {
                weights: Box::new(packed),
                plan,
                forward: OriginalForward::Dense,
                converted: BTreeSet::new(),
            });
        }
        online => online,
    };
    let model = HfModel::open_with(from, Dtypes::Float, online.is_none())?;
    let model_spec = ModelSpec::of_decoder(model.spec());
    let quantize = select_quantized(&model.tensors(), &model_spec, &request.quantize)?;
    let (defaults, forward, converted) = match online {
        Some(_) if request.ternary_original => {
            return Err(Error::InvalidArgument(format!(
                "{}: --original-forward ternary: this directory's online BitNet quantization already decides how its original model runs",
                from.display()
            )))
        }
        Some(q) => (
            bitnet_online_params(),
            OriginalForward::BitnetOnline,
            q.converted(model.spec()).map_err(|m| {
                Error::InvalidArgument(format!("{}: {m}", config_path.display()))
            })?,
        ),
        None => (QuantParams::default(), dense_or_ternary(request), BTreeSet::new()),
    };
    let plan = BundlePlan {
        model: model_spec,
        params: absmean_params(request, defaults)?,
        quantize,
        given: None,
    };
    Ok(Opened {
        weights: Box::new(model),
        plan,
        forward,
        converted,
    })
}

/// A checkpoint file: the stage's trits (with `--quantization-metadata`) or float weights, its
/// chain of layers inferred or given (`--arch`).
fn open_file(
    request: &CreateRequest,
    metadata: Option<QuantizationMetadata>,
) -> Result<Opened<'static>> {
    open_tensors(request, CheckpointSource::open(&request.from)?, metadata)
}

/// The tensors of a chain of layers (a checkpoint file, or tensors lent in memory): the stage's
/// trits with `metadata`, float weights without.
fn open_tensors<'a>(
    request: &CreateRequest,
    tensors: impl RawTensors + 'a,
    metadata: Option<QuantizationMetadata>,
) -> Result<Opened<'a>> {
    if let Some(meta) = metadata {
        let model = chain_model(request, &tensors)?;
        return given_plan(request, StageHandoff::new(Box::new(tensors), meta)?, model);
    }
    open_chain(request, Box::new(tensors))
}

/// The chain of layers of `weights`: `--arch`, or inferred from the tensor names.
fn chain_model(request: &CreateRequest, weights: &dyn TensorSource) -> Result<ModelSpec> {
    match &request.arch {
        Some(p) => load_arch(p),
        None => infer_arch(&weights.tensors(), weights.path(), Activation::Identity),
    }
}

/// Float weights of a chain of layers (a checkpoint file, or tensors in memory): the plan of
/// the absmean quantizer with the request's settings.
fn open_chain<'a>(
    request: &CreateRequest,
    weights: Box<dyn TensorSource + 'a>,
) -> Result<Opened<'a>> {
    let model = chain_model(request, &*weights)?;
    let quantize = select_quantized(&weights.tensors(), &model, &request.quantize)?;
    let plan = BundlePlan {
        model,
        params: absmean_params(request, QuantParams::default())?,
        quantize,
        given: None,
    };
    Ok(Opened {
        weights,
        plan,
        forward: dense_or_ternary(request),
        converted: BTreeSet::new(),
    })
}

/// A GGUF file (spec section 18.6): its ternary tensors as given trits and scales, its
/// tokenizer as a carried asset where it converts.
fn open_gguf(
    request: &CreateRequest,
    notes: &mut Vec<String>,
) -> Result<(Opened<'static>, Vec<AssetFile>)> {
    if request.arch.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{}: --arch describes a chain of layers; a GGUF file's hyperparameters describe its decoder",
            request.from.display()
        )));
    }
    no_quantize_patterns(request)?;
    let model = GgufModel::open(&request.from)?;
    let assets = tokenizer_assets(&model, notes)?;
    let plan = BundlePlan {
        model: ModelSpec::of_decoder(model.spec()),
        params: given_params(request, model.granularity()?)?,
        quantize: model.quantized(),
        given: Some(model.record()),
    };
    Ok((
        Opened {
            weights: Box::new(model),
            plan,
            forward: OriginalForward::Dense,
            converted: BTreeSet::new(),
        },
        assets,
    ))
}

/// The plan of given trits from the stage's handoff (spec section 18.1).
fn given_plan<'a>(
    request: &CreateRequest,
    stage: StageHandoff<'a>,
    model: ModelSpec,
) -> Result<Opened<'a>> {
    no_quantize_patterns(request)?;
    let plan = BundlePlan {
        model,
        params: given_params(request, stage.granularity()?)?,
        quantize: stage.quantized(),
        given: Some(stage.metadata().record()),
    };
    Ok(Opened {
        weights: Box::new(stage),
        plan,
        forward: OriginalForward::Dense,
        converted: BTreeSet::new(),
    })
}

fn no_quantize_patterns(request: &CreateRequest) -> Result<()> {
    if !request.quantize.is_empty() {
        return Err(Error::InvalidArgument(
            "--quantize: the source's trits decide what is quantized (they are taken as given)"
                .into(),
        ));
    }
    Ok(())
}

/// Settings of given trits: their granularity, the requested encoding; a quantizer setting is
/// an error (no quantizer runs).
fn given_params(request: &CreateRequest, granularity: Granularity) -> Result<QuantParams> {
    let s = &request.settings;
    if s.granularity.is_some() || s.epsilon.is_some() || s.sparsity_threshold.is_some() {
        return Err(Error::InvalidArgument(
            "--granularity, --epsilon and --sparsity-threshold set a quantizer, and given trits are not quantized: they keep their own scales (only --encoding applies)".into(),
        ));
    }
    if request.ternary_original {
        return Err(Error::InvalidArgument(
            "--original-forward ternary runs the source through this bundle's quantizer, and given trits have none: give their original model with --original".into(),
        ));
    }
    Ok(QuantParams {
        encoding: s.encoding,
        granularity,
        ..QuantParams::default()
    })
}

/// Settings of the absmean quantizer: the user's, else `defaults`.
fn absmean_params(request: &CreateRequest, defaults: QuantParams) -> Result<QuantParams> {
    request.settings.absmean(defaults)
}

impl Settings {
    /// The absmean quantizer's settings: these where given, else `defaults` (rule 2.8 checked).
    pub fn absmean(&self, defaults: QuantParams) -> Result<QuantParams> {
        let params = QuantParams {
            encoding: self.encoding,
            granularity: self.granularity.unwrap_or(defaults.granularity),
            epsilon: self.epsilon.unwrap_or(defaults.epsilon),
            sparsity_threshold: self
                .sparsity_threshold
                .unwrap_or(defaults.sparsity_threshold),
        };
        params.check().map_err(Error::InvalidArgument)?;
        Ok(params)
    }
}

/// The original model: `--original` (a checkpoint, run dense or through the quantizer, or a
/// model directory, run as its config says), else the source with `forward`, except given
/// trits, which have none.
fn open_original(
    request: &CreateRequest,
    plan: &BundlePlan,
    forward: OriginalForward,
    converted: BTreeSet<String>,
) -> Result<Original<'static>> {
    let Some(path) = &request.original else {
        return Ok(match plan.given {
            Some(_) => Original::None,
            None => Original::Source(forward, converted),
        });
    };
    if path.is_dir() {
        let model = HfModel::open_with(path, Dtypes::Float, false)?;
        if let Some(c) = online_converted(&model)? {
            if request.ternary_original {
                return Err(Error::InvalidArgument(format!(
                    "{}: --original-forward ternary: this directory's online BitNet quantization already decides how it runs",
                    path.display()
                )));
            }
            return Ok(Original::Other(
                Box::new(model),
                OriginalForward::BitnetOnline,
                c,
                None,
            ));
        }
        // A plain directory has no quantization_config (HfModel refused any other).
        let model = HfModel::open(path)?;
        return Ok(Original::Other(
            Box::new(model),
            dense_or_ternary(request),
            BTreeSet::new(),
            None,
        ));
    }
    let ckpt = CheckpointSource::open(path)?;
    let sha = Some(ckpt.sha256());
    Ok(Original::Other(
        Box::new(ckpt),
        dense_or_ternary(request),
        BTreeSet::new(),
        sha,
    ))
}
