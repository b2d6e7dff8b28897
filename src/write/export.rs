//! `bundle export`: the dequantized weights as one plain safetensors state dict.
//!
//! F16 export copies the tensors of `fp16.safetensors` (already the exact dequantization);
//! F32 export decodes the trits and applies the scales in f32 (`f32(t) * scale`, exact), and
//! carries non-quantized tensors as their stored F32 values.

use std::path::Path;

use crate::error::Result;
use crate::format::manifest::FileRole;
use crate::format::safetensors::Dtype;
use crate::model::reference::{tensor_f32, WeightPath};
use crate::read::Bundle;
use crate::write::safetensors::write_safetensors_file;

/// Element type of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportDtype {
    /// IEEE half precision (the FP16 file's values).
    #[default]
    F16,
    /// Single precision: `t * scale` exactly.
    F32,
}

impl ExportDtype {
    /// The safetensors dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            ExportDtype::F16 => Dtype::F16,
            ExportDtype::F32 => Dtype::F32,
        }
    }
}

/// Writes every tensor of `bundle` to `out` as `dtype` (atomically; `force` replaces an
/// existing file). Returns the number of bytes written.
pub fn export(bundle: &Bundle, out: &Path, dtype: ExportDtype, force: bool) -> Result<u64> {
    let m = bundle.manifest();
    let tensors: Vec<_> = m
        .tensors
        .iter()
        .map(|t| (t.name.clone(), dtype.dtype(), t.shape.clone()))
        .collect();
    let mut written = 0u64;
    write_safetensors_file(
        out,
        tensors,
        &[("format".into(), "pt".into())],
        force,
        |name| {
            let bytes = match dtype {
                ExportDtype::F16 => bundle.fp16_bytes(name).map(|b| {
                    let copy = b.to_vec();
                    // Copied: its mapped pages leave the resident set.
                    bundle.release(b);
                    copy
                }),
                // The ternary path's values: f32(t) * scale for quantized tensors, the stored
                // F32 values otherwise.
                ExportDtype::F32 => Some(
                    tensor_f32(bundle, name, WeightPath::Ternary)?
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                ),
            };
            let bytes = bytes.ok_or_else(|| bundle.missing_tensor(FileRole::Fp16, name))?;
            written += bytes.len() as u64;
            Ok(bytes)
        },
    )?;
    Ok(written)
}
