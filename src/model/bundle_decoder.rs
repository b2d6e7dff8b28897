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
use crate::model::reference::{self, tensor_f32, Stored, WeightPath};
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
    /// Streamed a block of rows at a time ([`reference::bundle_linear`]).
    fn linear(&self, name: &str, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let shape = self.matrix_shape(name)?;
        reference::bundle_linear(self.bundle, name, shape, self.path, x)
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>> {
        tensor_f32(self.bundle, name, self.path)
    }

    /// Only the rows looked up are converted, when the table is stored as values (F16, or F32
    /// on the ternary path); a quantized table is converted whole (its scales applied).
    fn rows(&self, name: &str, ids: &[usize]) -> Result<Array2<f32>> {
        let shape = self.matrix_shape(name)?;
        match Stored::of(self.bundle, name, self.path)? {
            Some(stored @ (Stored::Fp16(_) | Stored::F32(_))) => {
                stored.check(self.bundle, name, shape)?;
                let mut out = Array2::<f32>::zeros((ids.len(), shape.1));
                for (mut row, &id) in out.rows_mut().into_iter().zip(ids) {
                    if id >= shape.0 {
                        return Err(Error::InvalidArgument(format!(
                            "{}: tensor {name}: token id {id} beyond its {} rows",
                            self.bundle.dir().display(),
                            shape.0
                        )));
                    }
                    let dst = row.as_slice_mut().expect("standard layout");
                    stored.rows_into(self.bundle, name, (id, id + 1), shape.1, dst)?;
                }
                Ok(out)
            }
            _ => {
                let table =
                    Array2::from_shape_vec(shape, tensor_f32(self.bundle, name, self.path)?)
                        .map_err(|e| Error::InvalidArgument(format!("tensor {name}: {e}")))?;
                select_rows(self.bundle.dir(), name, table.view(), ids)
            }
        }
    }
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
