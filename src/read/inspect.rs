//! What is inside a bundle, from the manifest and the safetensors headers alone (no tensor data
//! is read, so the cost does not depend on the bundle's size). `bundle inspect` prints this;
//! `--json` serializes [`Inspection`] as documented in `spec/inspect.schema.json`.

use serde::Serialize;

use crate::format::layout::{
    VALIDATION_DIFFICULTY, VALIDATION_ORIGINAL_LOG_PROBS, VALIDATION_ORIGINAL_PREDICTIONS,
    VALIDATION_ORIGINAL_TOP_IDS,
};
use crate::format::manifest::{QuantizationSpec, MANIFEST_FILE};
use crate::read::{Bundle, DistributionView, Stored};

/// Everything `bundle inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The bundle directory as given.
    pub path: String,
    /// `format` of the manifest.
    pub format: String,
    /// `format_version` of the manifest.
    pub format_version: String,
    /// True when the bundle was written by a newer MINOR version than this reader knows.
    pub newer_minor: bool,
    /// Architecture summary.
    pub model: ModelSummary,
    /// The manifest's quantization block.
    pub quantization: QuantizationSpec,
    /// Files with sizes and digests (manifest first).
    pub files: Vec<FileSummary>,
    /// Per-tensor details, in manifest order.
    pub tensors: Vec<TensorSummary>,
    /// Totals and ratios.
    pub totals: Totals,
    /// Samples in the validation set, if there is one.
    pub validation_samples: Option<u64>,
    /// The validation set's optional tensors present (`difficulty`, `original_predictions`, and
    /// the first tensor of the original distributions' form: `original_log_probs` or
    /// `original_top_ids`);
    /// empty without a validation set.
    pub validation_extras: Vec<String>,
    /// Undeclared directory entries (rule 1.5).
    pub extras: Vec<String>,
    /// Whether the bundle carries a signature (`model.sig`, section 10.1) and whose key it
    /// names; not verified here (`bundle verify --trusted-key` does).
    pub signature: SignatureSummary,
    /// The manifest's provenance block.
    pub provenance: crate::format::manifest::Provenance,
}

/// The model in brief: a chain of layers (`input_dim`, `layers`) or a decoder (`decoder`, the
/// manifest's description).
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Input width (a chain of layers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_dim: Option<u64>,
    /// Layers in order (a chain of layers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerSummary>>,
    /// The decoder-only language model (format 3.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder: Option<crate::format::manifest::DecoderModelSpec>,
}

impl ModelSummary {
    /// One line: the widths of a chain of layers, or a decoder's shape.
    pub fn describe(&self) -> String {
        if let Some(d) = &self.decoder {
            return format!(
                "{} decoder: {} layers, hidden {}, intermediate {}, {} heads ({} KV) of {}, vocab {}, {} embeddings, rms_norm_eps {}, rope_theta {}",
                d.family,
                d.num_hidden_layers,
                d.hidden_size,
                d.intermediate_size,
                d.num_attention_heads,
                d.num_key_value_heads,
                d.head_dim,
                d.vocab_size,
                if d.tie_word_embeddings { "tied" } else { "untied" },
                d.rms_norm_eps,
                d.rope_theta
            );
        }
        let layers = self.layers.as_deref().unwrap_or_default();
        let widths: Vec<String> = self
            .input_dim
            .into_iter()
            .chain(layers.iter().map(|l| l.out_features))
            .map(|w| w.to_string())
            .collect();
        format!("{} ({} layers)", widths.join(" -> "), layers.len())
    }
}

/// One layer in brief.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    /// Layer name.
    pub name: String,
    /// Input width.
    pub in_features: u64,
    /// Output width.
    pub out_features: u64,
    /// Activation name.
    pub activation: String,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// Whether an RMSNorm precedes the layer.
    pub rmsnorm: bool,
}

/// One file.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    /// File name in the bundle.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Declared SHA-256 (none for the manifest itself).
    pub sha256: Option<String>,
}

/// One tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    /// Tensor name (as in the file; escape before printing to a terminal).
    pub name: String,
    /// Original shape.
    pub shape: Vec<u64>,
    /// Elements.
    pub parameters: u64,
    /// Storage in ternary.safetensors: `"trit5"`, `"trit2"` or `"F32"`.
    pub storage: String,
    /// Bytes in ternary.safetensors (packed trits plus scales, or F32 values).
    pub ternary_bytes: u64,
    /// Bytes in fp16.safetensors.
    pub fp16_bytes: u64,
    /// Zero trits / elements, for quantized tensors.
    pub sparsity: Option<f64>,
    /// Number of scales, for quantized tensors.
    pub scales: Option<u64>,
    /// Smallest scale, for quantized tensors.
    pub scale_min: Option<f32>,
    /// Largest scale, for quantized tensors.
    pub scale_max: Option<f32>,
}

/// Totals over the bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// All parameters.
    pub parameters: u64,
    /// Parameters stored as trits.
    pub quantized_parameters: u64,
    /// Size of ternary.safetensors.
    pub ternary_bytes: u64,
    /// Size of fp16.safetensors.
    pub fp16_bytes: u64,
    /// The model in FP32: 4 bytes per parameter.
    pub fp32_bytes: u64,
    /// `fp32_bytes / ternary_bytes`.
    pub compression_vs_fp32: f64,
    /// `fp16_bytes / ternary_bytes`.
    pub compression_vs_fp16: f64,
    /// Bits per quantized weight: packed bytes * 8 / quantized parameters (scales excluded).
    pub bits_per_weight: f64,
    /// Whole ternary file in bits per parameter (scales, headers and F32 tensors included).
    pub ternary_bits_per_parameter: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// `model.sig` as read, not verified.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SignatureSummary {
    /// A `model.sig` is present.
    pub signed: bool,
    /// The signer's key hint (hex SHA-256 of its public key's PEM), when it parses.
    pub hint: Option<String>,
    /// Why the signature file does not parse (rule 9.1), when it does not.
    pub error: Option<String>,
}

fn signature_summary(dir: &std::path::Path) -> SignatureSummary {
    match crate::signing::read_signature(dir) {
        Ok(None) => SignatureSummary {
            signed: false,
            hint: None,
            error: None,
        },
        Ok(Some(f)) => SignatureSummary {
            signed: true,
            hint: Some(f.hint),
            error: None,
        },
        Err(e) => SignatureSummary {
            signed: true,
            hint: None,
            error: Some(e.to_string()),
        },
    }
}

/// Builds the inspection of an open bundle (manifest and headers only).
pub fn inspect(bundle: &Bundle) -> Inspection {
    let m = bundle.manifest();
    let mut tensors = Vec::with_capacity(m.tensors.len());
    let (mut params, mut qparams, mut packed_bytes) = (0u64, 0u64, 0u64);
    for t in bundle.tensors() {
        let n = t.spec.elements();
        params += n;
        let (storage, tbytes, scales) = match t.stored {
            Stored::Packed(p) => {
                qparams += n;
                packed_bytes += p.packed.len() as u64;
                (
                    p.encoding.name().to_string(),
                    (p.packed.len() + p.scale_bytes.len()) as u64,
                    Some((p.scale_bytes.len() / 4) as u64),
                )
            }
            Stored::F32(b) => ("F32".to_string(), b.len() as u64, None),
        };
        let spec = t.spec;
        tensors.push(TensorSummary {
            name: spec.name.clone(),
            shape: spec.shape.clone(),
            parameters: n,
            storage,
            ternary_bytes: tbytes,
            fp16_bytes: t.fp16.len() as u64,
            sparsity: spec.zeros.map(|z| ratio(z, n)),
            scales,
            scale_min: spec.scale_min,
            scale_max: spec.scale_max,
        });
    }
    let mut files = vec![FileSummary {
        name: MANIFEST_FILE.into(),
        size: bundle.manifest_size(),
        sha256: None,
    }];
    files.extend(bundle.files().map(|f| FileSummary {
        name: f.role().file_name().into(),
        size: f.bytes().len() as u64,
        sha256: Some(f.declared_sha256().to_string()),
    }));
    // The carried asset files (format 4.0, rule 1.6), in the manifest's order.
    files.extend(bundle.assets().iter().map(|a| FileSummary {
        name: a.name().into(),
        size: a.bytes().len() as u64,
        sha256: Some(a.declared_sha256().to_string()),
    }));
    let fp32_bytes = params * 4;
    let totals = Totals {
        parameters: params,
        quantized_parameters: qparams,
        ternary_bytes: m.files.ternary.size,
        fp16_bytes: m.files.fp16.size,
        fp32_bytes,
        compression_vs_fp32: ratio(fp32_bytes, m.files.ternary.size),
        compression_vs_fp16: ratio(m.files.fp16.size, m.files.ternary.size),
        bits_per_weight: ratio(packed_bytes * 8, qparams),
        ternary_bits_per_parameter: ratio(m.files.ternary.size * 8, params),
    };
    let validation = bundle.validation();
    let validation_samples = validation.map(|v| v.samples as u64);
    let validation_extras = validation
        .map(|v| {
            [
                (VALIDATION_DIFFICULTY, v.difficulty.is_some()),
                (
                    VALIDATION_ORIGINAL_PREDICTIONS,
                    v.original_predictions.is_some(),
                ),
                (
                    VALIDATION_ORIGINAL_LOG_PROBS,
                    matches!(v.distributions, Some(DistributionView::Full { .. })),
                ),
                (
                    VALIDATION_ORIGINAL_TOP_IDS,
                    matches!(v.distributions, Some(DistributionView::TopK { .. })),
                ),
            ]
            .iter()
            .filter(|(_, present)| *present)
            .map(|(n, _)| n.to_string())
            .collect()
        })
        .unwrap_or_default();
    Inspection {
        path: bundle.dir().display().to_string(),
        format: m.format.clone(),
        format_version: m.format_version.clone(),
        newer_minor: bundle.facts().version.is_newer_minor(),
        model: match &m.model.decoder {
            Some(d) => ModelSummary {
                input_dim: None,
                layers: None,
                decoder: Some(d.clone()),
            },
            None => ModelSummary {
                input_dim: Some(m.model.input_dim),
                layers: Some(
                    m.model
                        .layers
                        .iter()
                        .map(|l| LayerSummary {
                            name: l.name.clone(),
                            in_features: l.in_features,
                            out_features: l.out_features,
                            activation: l.activation.clone(),
                            bias: l.bias.is_some(),
                            rmsnorm: l.rmsnorm.is_some(),
                        })
                        .collect(),
                ),
                decoder: None,
            },
        },
        quantization: m.quantization.clone(),
        files,
        tensors,
        totals,
        validation_samples,
        validation_extras,
        extras: bundle.extras().to_vec(),
        signature: signature_summary(bundle.dir()),
        provenance: m.provenance.clone(),
    }
}
