//! A bundle's decoder (format 3.0, rule 2.13) read along one weight path: the weights of the
//! f32 reference decoder ([`DecoderWeights`], spec section 16.2) and a tensor source for the f64
//! decoder of the gradient checks ([`TensorSource`]). Every tensor is read from the open bundle
//! when it is used and its pages are released after, so a forward pass holds one tensor at a
//! time beside the activations.

use std::path::Path;

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::format::safetensors::Dtype;
use crate::model::decoder::{select_rows, DecoderSpec, DecoderWeights};
use crate::model::reference::{self, bundle_weight, tensor_f32, WeightPath};
use crate::read::Bundle;
use crate::source::{SourceTensor, TensorSource};

/// The decoder of an open bundle along `path`: the ternary path multiplies by the trits and
/// applies the scales after the product; the FP16 path reads `fp16.safetensors` only.
pub struct BundleDecoder<'b> {
    bundle: &'b Bundle,
    spec: &'b DecoderSpec,
    path: WeightPath,
}

impl<'b> BundleDecoder<'b> {
    /// The decoder of `bundle` along `path`, or an error if the bundle holds a chain of layers.
    pub fn new(bundle: &'b Bundle, path: WeightPath) -> Result<BundleDecoder<'b>> {
        let spec = bundle.decoder().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: the bundle holds a chain of layers, not a decoder",
                bundle.dir().display()
            ))
        })?;
        Ok(BundleDecoder { bundle, spec, path })
    }

    /// The decoder's shape and constants.
    pub fn spec(&self) -> &'b DecoderSpec {
        self.spec
    }

    /// The manifest shape of `name` as (rows, columns).
    fn matrix_shape(&self, name: &str) -> Result<(usize, usize)> {
        match self
            .bundle
            .manifest()
            .tensor(name)
            .map(|t| t.shape.as_slice())
        {
            // Rule 2.14 proved the shape, and rule 2.7 that its element count fits.
            Some(&[r, c]) => Ok((r as usize, c as usize)),
            Some(other) => Err(Error::InvalidArgument(format!(
                "{}: tensor {name}: expected a matrix, found shape {other:?}",
                self.bundle.dir().display()
            ))),
            None => Err(Error::InvalidArgument(format!(
                "{}: no tensor {name}",
                self.bundle.dir().display()
            ))),
        }
    }
}

impl DecoderWeights for BundleDecoder<'_> {
    /// Streamed a block of rows at a time ([`reference::bundle_linear`]); a weight with
    /// per-group scales is converted whole.
    fn linear(&self, name: &str, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let shape = self.matrix_shape(name)?;
        if let Some(y) = reference::bundle_linear(self.bundle, name, shape, self.path, x)? {
            return Ok(y);
        }
        let w = bundle_weight(self.bundle, name, shape, self.path)?;
        Ok(reference::linear(x, &w))
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>> {
        tensor_f32(self.bundle, name, self.path)
    }

    /// Only the rows looked up are converted (an unquantized table: F16 or F32 bytes).
    fn rows(&self, name: &str, ids: &[usize]) -> Result<Array2<f32>> {
        let shape = self.matrix_shape(name)?;
        let stored = match self.path {
            WeightPath::Fp16 => self.bundle.fp16_bytes(name).map(|b| (b, 2)),
            WeightPath::Ternary if self.bundle.packed(name).is_none() => {
                self.bundle.passthrough_bytes(name).map(|b| (b, 4))
            }
            WeightPath::Ternary => None,
        };
        if let Some((bytes, width)) = stored {
            return select_stored_rows(self.bundle, name, shape, bytes, width, ids);
        }
        let table = Array2::from_shape_vec(shape, tensor_f32(self.bundle, name, self.path)?)
            .map_err(|e| Error::InvalidArgument(format!("tensor {name}: {e}")))?;
        select_rows(self.bundle.dir(), name, table.view(), ids)
    }
}

/// Rows `ids` of the `[rows, cols]` table `name` stored as `bytes` of F16 (`width` 2) or F32
/// (4) values, each id checked against the table.
fn select_stored_rows(
    bundle: &Bundle,
    name: &str,
    (rows, cols): (usize, usize),
    bytes: &[u8],
    width: usize,
    ids: &[usize],
) -> Result<Array2<f32>> {
    let row_bytes = cols * width;
    if rows.checked_mul(row_bytes) != Some(bytes.len()) {
        return Err(Error::InvalidArgument(format!(
            "{}: tensor {name}: expected {rows} x {cols} values, found {} bytes",
            bundle.dir().display(),
            bytes.len()
        )));
    }
    let mut out = Array2::<f32>::zeros((ids.len(), cols));
    for (mut row, &id) in out.rows_mut().into_iter().zip(ids) {
        if id >= rows {
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {name}: token id {id} beyond its {rows} rows",
                bundle.dir().display()
            )));
        }
        let b = &bytes[id * row_bytes..(id + 1) * row_bytes];
        let dst = row.as_slice_mut().expect("standard layout");
        if width == 2 {
            crate::format::le::f16s_into(b, dst, |h, d| {
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(h, d)
            });
        } else {
            dst.iter_mut()
                .zip(crate::format::le::f32s(b))
                .for_each(|(v, f)| *v = f);
        }
    }
    Ok(out)
}

impl TensorSource for BundleDecoder<'_> {
    fn path(&self) -> &Path {
        self.bundle.dir()
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.bundle
            .manifest()
            .tensors
            .iter()
            .map(|t| SourceTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                dtype: match self.path {
                    WeightPath::Fp16 => Dtype::F16,
                    WeightPath::Ternary => Dtype::F32,
                },
            })
            .collect()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        tensor_f32(self.bundle, name, self.path)
    }
}
