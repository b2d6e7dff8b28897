//! `bundle export --format gguf`: a decoder bundle as one GGUF file that llama.cpp loads, its
//! quantized tensors as TQ1_0 or TQ2_0 blocks built from the stored trits and scales (never
//! re-quantized), the other tensors as F32 (or F16).
//!
//! A table, read from llama.cpp's `convert_hf_to_gguf.py` and gguf-py's `constants.py`:
//!
//! | bundle (rule 2.14)                          | GGUF                           |
//! | ------------------------------------------- | ------------------------------ |
//! | `model.embed_tokens.weight`                 | `token_embd.weight`            |
//! | `model.norm.weight`                         | `output_norm.weight`           |
//! | `lm_head.weight` (untied only)              | `output.weight`                |
//! | `model.layers.N.input_layernorm.weight`     | `blk.N.attn_norm.weight`       |
//! | `...self_attn.{q,k,v,o}_proj.weight`        | `blk.N.attn_{q,k,v,output}.weight` |
//! | `...self_attn.attn_sub_norm.weight` (BitNet)| `blk.N.attn_sub_norm.weight`   |
//! | `...post_attention_layernorm.weight`        | `blk.N.ffn_norm.weight`        |
//! | `...mlp.{gate,up,down}_proj.weight`         | `blk.N.ffn_{gate,up,down}.weight` |
//! | `...mlp.ffn_sub_norm.weight` (BitNet)       | `blk.N.ffn_sub_norm.weight`    |
//!
//! A row-major `[rows, cols]` tensor has GGUF dims `[cols, rows]`. For `llama`, the rows of
//! q_proj and k_proj are permuted to llama.cpp's interleaved RoPE as `LlamaModel.permute` does
//! (`reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2)`), each row with its scales;
//! `bitnet` runs NEOX RoPE on the rows as they are.
//!
//! Exact or refused: a block's `d` is `f16(scale)` of the scale that covers it (0 for a block
//! of zeros, as ggml's quantizer computes it), so the file dequantizes to the FP16 file's values
//! bit for bit (`f16(t × s) = t × f16(s)` for a trit `t`). Rows that are not a multiple of 256
//! columns, and groups not a multiple of 256, cannot be so written and are refused naming the
//! tensor. The file is published atomically (`write/staging.rs`), one tensor in memory at
//! a time.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use half::f16;

use crate::error::{escape_name, Error, Result};
use crate::format::decoder::{DecoderSpec, Family};
use crate::format::manifest::FileRole;
use crate::format::quantization::Granularity;
use crate::gguf::container::{self, Array, TensorInfo, Value, GGML_F16, GGML_F32};
use crate::gguf::ternary::{block_scale, pack_i2s, TernaryType, BLOCK};
use crate::gguf::types::I2S_BLOCK;
use crate::model::reference::{tensor_f32, WeightPath};
use crate::read::Bundle;
use crate::source::AssetFile;
use crate::write::staging::write_file_atomic;

/// The type of the tensors that are not quantized (`--float-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatType {
    /// The stored F32 values (the default).
    #[default]
    F32,
    /// Their f16 rounding (nearest even).
    F16,
}

/// The settings of a GGUF export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufExport {
    /// The block type of the quantized tensors.
    pub ternary: TernaryType,
    /// The type of the other tensors.
    pub float_type: FloatType,
    /// Write no tokenizer: `tokenizer.ggml.model` `"none"` with `<arch>.vocab_size`, which
    /// llama.cpp loads as a model without vocabulary. Without it the carried tokenizer is
    /// converted (`gguf::tokenizer`), and a bundle without one is refused.
    pub no_tokenizer: bool,
    /// `<arch>.context_length` (a bundle does not record it).
    pub context_length: u64,
    /// Keep a quantized tensor that the type cannot hold exactly (its shape or scales) as F16
    /// of the bundle's FP16 values, with a warning naming it, instead of refusing the export.
    pub allow_float_fallback: bool,
    /// Replace an existing regular file at the destination.
    pub force: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufSummary {
    /// The architecture name (`llama` or `bitnet`).
    pub arch: &'static str,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Tensors in the file.
    pub tensors: usize,
    /// Of them, the ternary ones.
    pub ternary_tensors: usize,
    /// Quantized tensors kept as F16 (`--allow-float-fallback`).
    pub fallback_tensors: usize,
    /// Weights of the ternary tensors.
    pub ternary_weights: u64,
    /// Bytes of the ternary tensors' blocks.
    pub ternary_bytes: u64,
    /// What the user should know about running the file (printed by the CLI).
    pub warnings: Vec<String>,
}

/// How one tensor is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A tensor the bundle does not quantize: F32 or F16 (`--float-type`).
    Float,
    /// A quantized tensor in the chosen ternary type.
    Ternary,
    /// A quantized tensor the type cannot hold: F16 of its FP16 values (`--allow-float-fallback`).
    Fallback,
}

/// One tensor of the file and where its bytes come from.
struct Planned {
    info: TensorInfo,
    source: String,
    /// For q/k of a `llama` export: the number of heads whose rows are permuted.
    permute_heads: Option<usize>,
    kind: Kind,
}

/// The key of the bundle's exact scales of GGUF tensor `name` (section 18.6).
pub fn scale_key(name: &str) -> String {
    format!("{SCALE_KEY_PREFIX}{name}")
}

/// The prefix of the scale keys: `bundle.scale.` then the GGUF tensor name.
pub const SCALE_KEY_PREFIX: &str = "bundle.scale.";
/// The key of the bundle's granularity (`"tensor"`, `"channel"`, `"group"`).
pub const GRANULARITY_KEY: &str = "bundle.granularity";
/// The key of the bundle's group size (granularity `"group"` only).
pub const GROUP_SIZE_KEY: &str = "bundle.group_size";

/// The GGUF name of bundle tensor `name` (rule 2.14 naming), if the table has it.
pub fn gguf_name(name: &str) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let gguf = match part {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "self_attn.attn_sub_norm.weight" => "attn_sub_norm",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        "mlp.ffn_sub_norm.weight" => "ffn_sub_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf}.weight"))
}

/// The source row of output row `r` of a q or k projection permuted for `n_head` heads
/// (`LlamaModel.permute`): output `h·hd + 2i + s` is source `h·hd + s·hd/2 + i`.
pub fn permuted_source_row(r: usize, rows: usize, n_head: usize) -> usize {
    let hd = rows / n_head;
    let (h, within) = (r / hd, r % hd);
    let (i, s) = (within / 2, within % 2);
    h * hd + s * (hd / 2) + i
}

/// `e` with `place` (a bundle or file) named first, when it is a message that does not.
pub(crate) fn in_file(place: &str, e: Error) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{place}: {m}")),
        other => other,
    }
}

/// The architecture a bundle's family is written as: llama.cpp's `llama` and `bitnet` for TQ1_0
/// and TQ2_0; for I2_S, bitnet.cpp's `llama` and `bitnet-b1.58`.
pub fn arch_name(family: Family, ternary: TernaryType) -> &'static str {
    match (family, ternary) {
        (Family::Llama, _) => "llama",
        (Family::Bitnet, TernaryType::I2S) => "bitnet-b1.58",
        (Family::Bitnet, _) => "bitnet",
    }
}

/// Writes decoder `bundle` to `out` as GGUF (see the module documentation). The caller ran the
/// data checks (`read::checks::check_all`).
pub fn export_gguf(bundle: &Bundle, out: &Path, options: &GgufExport) -> Result<GgufSummary> {
    let dir = bundle.dir().display().to_string();
    let decoder = bundle.decoder().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{dir}: a chain-of-layers bundle (model.layers) has no GGUF architecture: GGUF export needs a decoder (model.decoder)"
        ))
    })?;
    let model = bundle.manifest().model.decoder.as_ref().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{dir}: manifest.json: model.decoder missing from a decoder bundle"
        ))
    })?;
    let mut warnings = Vec::new();
    let arch = arch_name(decoder.family, options.ternary);
    if decoder.family == Family::Bitnet {
        if arch == "bitnet" && !decoder.tie_word_embeddings {
            return Err(Error::InvalidArgument(format!(
                "{dir}: tensor lm_head.weight: expected a tied BitNet model (llama.cpp's bitnet architecture has no output tensor: it reads logits off token_embd), found tie_word_embeddings false"
            )));
        }
        // llama.cpp's bitnet makes attn_q [hidden, hidden]: the manifest's rule for a
        // BitNet decoder (heads × head_dim = hidden_size) already guarantees it.
        warnings.push(format!(
            "{arch}: BitNet b1.58 uses relu² in its FFN; mainline llama.cpp's bitnet graph computes SiLU there (bitnet.hidden_activation \"relu2\" is written, but mainline does not read it), and bitnet.cpp's bitnet-b1.58 graph uses relu² only in versions that have it: check the runtime, or it computes a different model from the bundle's"
        ));
    }
    let tokenizer = if options.no_tokenizer {
        vec![(
            "tokenizer.ggml.model".to_string(),
            Value::Str("none".into()),
        )]
    } else {
        let assets: Vec<AssetFile> = bundle
            .assets()
            .iter()
            .map(|a| AssetFile {
                name: a.name().to_string(),
                bytes: a.bytes().to_vec(),
            })
            .collect();
        crate::gguf::tokenizer::to_gguf(&assets, decoder.vocab_size)
            .map_err(|e| in_file(&dir, e))?
    };
    let planned = plan(bundle, decoder, options, &mut warnings)?;

    let mut kvs: Vec<(String, Value)> = Vec::new();
    let u32_of = |key: &str, v: u64| -> Result<Value> {
        u32::try_from(v).map(Value::U32).map_err(|_| {
            Error::InvalidArgument(format!(
                "GGUF {key}: expected a value that fits UINT32, found {v}"
            ))
        })
    };
    let name = bundle
        .dir()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    kvs.push(("general.architecture".into(), Value::Str(arch.into())));
    kvs.push(("general.name".into(), Value::Str(name)));
    kvs.push((
        "general.alignment".into(),
        Value::U32(container::ALIGNMENT as u32),
    ));
    kvs.push((
        "general.file_type".into(),
        Value::U32(options.ternary.file_type()),
    ));
    let a = |k: &str| format!("{arch}.{k}");
    for (key, v) in [
        ("vocab_size", model.vocab_size),
        ("context_length", options.context_length),
        ("embedding_length", model.hidden_size),
        ("feed_forward_length", model.intermediate_size),
        ("block_count", model.num_hidden_layers),
        ("attention.head_count", model.num_attention_heads),
        ("attention.head_count_kv", model.num_key_value_heads),
        ("attention.key_length", model.head_dim),
        ("attention.value_length", model.head_dim),
        ("rope.dimension_count", model.head_dim),
    ] {
        kvs.push((a(key), u32_of(&a(key), v)?));
    }
    kvs.push((a("rope.freq_base"), Value::F32(model.rope_theta)));
    kvs.push((
        a("attention.layer_norm_rms_epsilon"),
        Value::F32(model.rms_norm_eps),
    ));
    if decoder.family == Family::Bitnet {
        // As convert_hf_to_gguf.py's BitnetModel writes them.
        kvs.push((a("rope.scaling.type"), Value::Str("linear".into())));
        kvs.push((a("rope.scaling.factor"), Value::F32(1.0)));
        // llama.cpp's LLM_KV_HIDDEN_ACT, which its bitnet loader reads (falling back to SiLU
        // for a value it does not know); transformers' name of BitNet's activation.
        kvs.push((a("hidden_activation"), Value::Str("relu2".into())));
    }
    kvs.extend(tokenizer);
    // The bundle's exact scales (section 18.6), so that reading the file back gives them.
    let granularity = bundle.params().granularity;
    kvs.push((
        GRANULARITY_KEY.into(),
        Value::Str(granularity.name().into()),
    ));
    if let Granularity::Group(g) = granularity {
        kvs.push((GROUP_SIZE_KEY.into(), u32_of(GROUP_SIZE_KEY, g)?));
    }
    for p in planned.iter().filter(|p| p.kind != Kind::Float) {
        kvs.push((
            scale_key(&p.info.name),
            Value::Array(Array::F32(file_scales(bundle, p)?)),
        ));
    }

    let infos: Vec<TensorInfo> = planned.iter().map(|p| p.info.clone()).collect();
    let (head, offsets) = container::header(&kvs, &infos);
    let data_len = infos.iter().map(|t| container::pad(t.nbytes)).sum::<u64>();
    let bytes = head.len() as u64 + data_len;

    write_file_atomic(out, options.force, |tmp| {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| Error::io(tmp, "create", e))?;
        let mut w = BufWriter::with_capacity(8 << 20, file);
        let io = |e| Error::io(tmp, "write", e);
        w.write_all(&head).map_err(io)?;
        let mut at = 0u64;
        for (p, &offset) in planned.iter().zip(&offsets) {
            debug_assert_eq!(at, offset);
            let data = tensor_bytes(bundle, p, options)?;
            if data.len() as u64 != p.info.nbytes {
                return Err(Error::InvalidArgument(format!(
                    "{}: tensor {}: made {} bytes, planned {}",
                    tmp.display(),
                    escape_name(&p.info.name),
                    data.len(),
                    p.info.nbytes
                )));
            }
            w.write_all(&data).map_err(io)?;
            let padded = container::pad(p.info.nbytes);
            w.write_all(&vec![0u8; (padded - p.info.nbytes) as usize])
                .map_err(io)?;
            at += padded;
        }
        w.into_inner()
            .map_err(|e| Error::io(tmp, "write", e.into_error()))
    })?;

    let ternary: Vec<&Planned> = planned.iter().filter(|p| p.kind == Kind::Ternary).collect();
    Ok(GgufSummary {
        arch,
        bytes,
        tensors: planned.len(),
        ternary_tensors: ternary.len(),
        fallback_tensors: planned.iter().filter(|p| p.kind == Kind::Fallback).count(),
        ternary_weights: ternary
            .iter()
            .map(|p| p.info.ne.iter().product::<u64>())
            .sum(),
        ternary_bytes: ternary.iter().map(|p| p.info.nbytes).sum(),
        warnings,
    })
}

/// Every tensor of the file in rule 2.14's order, after the checks that make it exact: a
/// quantized tensor that the type cannot hold is refused, or with `--allow-float-fallback`
/// planned as F16 with a warning in `warnings`.
fn plan(
    bundle: &Bundle,
    decoder: &DecoderSpec,
    options: &GgufExport,
    warnings: &mut Vec<String>,
) -> Result<Vec<Planned>> {
    let type_name = options.ternary.ggml_type().name();
    let refuse = |name: &str, expected: String, found: String| {
        Error::InvalidArgument(format!(
            "{}: tensor {}: expected {expected} to write it as {type_name} exactly, found {found}",
            bundle.dir().display(),
            escape_name(name),
        ))
    };
    let mut planned = Vec::new();
    for (name, shape) in decoder.tensors() {
        let gguf = gguf_name(&name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: tensor {}: no GGUF name for it",
                bundle.dir().display(),
                escape_name(&name)
            ))
        })?;
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let elements: u64 = ne.iter().product();
        let permute_heads = match (decoder.family, name.rsplit('.').nth(1)) {
            (Family::Llama, Some("q_proj")) => Some(decoder.num_attention_heads),
            (Family::Llama, Some("k_proj")) => Some(decoder.num_key_value_heads),
            _ => None,
        };
        let rows = shape.first().copied().unwrap_or(1);
        if let Some(n) = permute_heads {
            if n == 0 || rows % (2 * n) != 0 {
                return Err(refuse(
                    &name,
                    format!("rows a multiple of 2 × {n} heads (the RoPE permutation)"),
                    format!("{rows} rows"),
                ));
            }
        }
        let float = |ty: FloatType| match ty {
            FloatType::F32 => (GGML_F32, elements * 4),
            FloatType::F16 => (GGML_F16, elements * 2),
        };
        let (kind, (ggml_type, nbytes)) = match bundle.packed(&name) {
            Some(p) => match holds_exactly(&p, options.ternary) {
                Ok(()) => {
                    let ty = options.ternary.ggml_type();
                    let nbytes = ty
                        .nbytes(&ne)
                        .map_err(|m| refuse(&name, m, format!("dimensions {ne:?}")))?;
                    (Kind::Ternary, (ty.id(), nbytes))
                }
                Err((expected, found)) if options.allow_float_fallback => {
                    warnings.push(format!(
                        "tensor {}: kept as F16 (the bundle's FP16 values, exactly): {type_name} needs {expected}, found {found}",
                        escape_name(&name)
                    ));
                    (Kind::Fallback, float(FloatType::F16))
                }
                Err((expected, found)) => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: tensor {}: expected {expected} to write it as {type_name} exactly, found {found} (--allow-float-fallback keeps such tensors as F16)",
                        bundle.dir().display(),
                        escape_name(&name),
                    )))
                }
            },
            None => (Kind::Float, float(options.float_type)),
        };
        planned.push(Planned {
            info: TensorInfo {
                name: gguf,
                ne,
                ggml_type,
                nbytes,
            },
            source: name,
            permute_heads,
            kind,
        });
    }
    Ok(planned)
}

/// Whether `ternary` holds quantized tensor `p` exactly; if not, what it needs and what the
/// tensor has. TQ1_0 / TQ2_0: rows of whole blocks of 256, each block under one scale (groups
/// a multiple of 256). I2_S: rows of whole blocks of 128 and one scale for the tensor.
fn holds_exactly(
    p: &crate::read::bundle::PackedTensor<'_>,
    ternary: TernaryType,
) -> std::result::Result<(), (String, String)> {
    let shape = format!("{} columns (shape [{}, {}])", p.cols, p.rows, p.cols);
    match ternary {
        TernaryType::Tq1_0 | TernaryType::Tq2_0 => {
            if p.cols % BLOCK != 0 || p.cols == 0 {
                return Err((
                    format!("rows of a multiple of {BLOCK} columns (one block of {BLOCK} weights per scale d)"),
                    shape,
                ));
            }
            if let Granularity::Group(g) = p.granularity {
                if g % BLOCK as u64 != 0 {
                    return Err((
                        format!("a group size that is a multiple of {BLOCK} (each block under one scale)"),
                        format!("group size {g}"),
                    ));
                }
            }
            Ok(())
        }
        TernaryType::I2S => {
            let block = I2S_BLOCK as usize;
            if p.cols % block != 0 || p.cols == 0 {
                return Err((
                    format!("rows of a multiple of {block} columns (I2_S blocks of {block})"),
                    shape,
                ));
            }
            let scales = p.scales();
            if let Some(other) = scales.iter().find(|s| s.to_bits() != scales[0].to_bits()) {
                return Err((
                    "one scale for the whole tensor (I2_S has one f32 scale per tensor)".into(),
                    format!("scales {} and {other}", scales[0]),
                ));
            }
            Ok(())
        }
    }
}

/// The bundle's scales of quantized tensor `p` in the file's row order (a `llama` q or k
/// permuted like its rows), in the bundle's layout: one, one per row, or one per group of a row.
fn file_scales(bundle: &Bundle, p: &Planned) -> Result<Vec<f32>> {
    let packed = bundle
        .packed(&p.source)
        .ok_or_else(|| bundle.missing_tensor(FileRole::Ternary, &p.source))?;
    let scales = packed.scales();
    if packed.granularity == Granularity::Tensor {
        return Ok(scales);
    }
    let rows = packed.rows;
    let per_row = scales.len() / rows.max(1);
    let mut out = Vec::with_capacity(scales.len());
    for r in 0..rows {
        let src = match p.permute_heads {
            Some(h) => permuted_source_row(r, rows, h),
            None => r,
        };
        out.extend_from_slice(&scales[src * per_row..(src + 1) * per_row]);
    }
    Ok(out)
}

/// The data bytes of one planned tensor.
fn tensor_bytes(bundle: &Bundle, p: &Planned, options: &GgufExport) -> Result<Vec<u8>> {
    let name = p.source.as_str();
    let rows_of = |n_rows: usize, r: usize| match p.permute_heads {
        Some(h) => permuted_source_row(r, n_rows, h),
        None => r,
    };
    if p.kind != Kind::Ternary {
        let (values, ty) = match p.kind {
            // The FP16 file's values, exactly (f16 of an f32 that is an f16 is itself).
            Kind::Fallback => (tensor_f32(bundle, name, WeightPath::Fp16)?, FloatType::F16),
            _ => (
                tensor_f32(bundle, name, WeightPath::Ternary)?,
                options.float_type,
            ),
        };
        let cols = p.info.ne.first().copied().unwrap_or(1).max(1) as usize;
        let n_rows = values.len() / cols;
        let mut out = Vec::with_capacity(p.info.nbytes as usize);
        for r in 0..n_rows {
            let src = rows_of(n_rows, r);
            let row = &values[src * cols..(src + 1) * cols];
            match ty {
                FloatType::F32 => row.iter().for_each(|v| out.extend(v.to_le_bytes())),
                FloatType::F16 => row
                    .iter()
                    .for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
            }
        }
        return Ok(out);
    }
    let packed = bundle
        .packed(name)
        .ok_or_else(|| bundle.missing_tensor(FileRole::Ternary, name))?;
    let trits = packed
        .trits()
        .map_err(|(r, e)| bundle.row_error(name, r, e))?;
    bundle.release(packed.packed);
    let scales = packed.scales();
    let (rows, cols) = (packed.rows, packed.cols);
    if options.ternary == TernaryType::I2S {
        let mut ordered = Vec::with_capacity(trits.len());
        for r in 0..rows {
            let src = rows_of(rows, r);
            ordered.extend_from_slice(&trits[src * cols..(src + 1) * cols]);
        }
        return Ok(pack_i2s(&ordered, scales[0]));
    }
    let (_, group) = packed.granularity.row_layout(cols);
    let mut out = Vec::with_capacity(p.info.nbytes as usize);
    for r in 0..rows {
        let src = rows_of(rows, r);
        let row = &trits[src * cols..(src + 1) * cols];
        let row_scales = packed.granularity.row_scales(&scales, src, cols);
        for (b, block) in row.chunks_exact(BLOCK).enumerate() {
            let s = row_scales[(b * BLOCK / group).min(row_scales.len() - 1)];
            options
                .ternary
                .pack_block(block, block_scale(block, s), &mut out);
        }
    }
    Ok(out)
}
