//! A source seen through the quantizer: every tensor of a chosen set replaced by f32(t × scale)
//! of its own quantization (spec section 7), the others as they are. It is the weights of a
//! model that ternarizes in its own forward pass: quantization-aware training's BitLinear
//! (spec section 7.2) and transformers' online BitNet quantization (section 18.3).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::error::{Error, Result, Violation};
use crate::format::quantization::QuantParams;
use crate::quant::dequantize::dequantize_row_f32;
use crate::quant::quantize::quantize;
use crate::source::{SourceTensor, TensorSource};

/// `inner`'s tensors, those named in `names` quantized with `params` and dequantized to f32.
pub struct Ternarized<'a> {
    inner: &'a dyn TensorSource,
    names: BTreeSet<String>,
    params: QuantParams,
    shapes: HashMap<String, Vec<u64>>,
}

impl<'a> Ternarized<'a> {
    /// `inner` with the tensors `names` ternarized by `params`; every name must be a tensor of
    /// `inner`.
    pub fn new(
        inner: &'a dyn TensorSource,
        names: BTreeSet<String>,
        params: QuantParams,
    ) -> Result<Ternarized<'a>> {
        params.check().map_err(Error::InvalidArgument)?;
        let shapes: HashMap<String, Vec<u64>> = inner
            .tensors()
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        if let Some(missing) = names.iter().find(|n| !shapes.contains_key(*n)) {
            return Err(Error::InvalidArgument(format!(
                "{}: no tensor {missing} to ternarize",
                inner.path().display()
            )));
        }
        Ok(Ternarized {
            inner,
            names,
            params,
            shapes,
        })
    }

    /// The tensors it ternarizes.
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }
}

impl TensorSource for Ternarized<'_> {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.inner.tensors()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let values = self.inner.load_f32(name)?;
        if !self.names.contains(name) {
            return Ok(values);
        }
        let shape = &self.shapes[name];
        let q = quantize(&values, shape, &self.params).map_err(|e| {
            let (expected, found) = e.expected_found();
            Error::from(Violation::new(self.path(), e.rule(), expected, found).tensor(name))
        })?;
        let bpr = self.params.encoding.bytes_per_row(q.cols as u64) as usize;
        let (_, group) = self.params.granularity.row_layout(q.cols);
        let mut out = vec![0f32; q.rows * q.cols];
        for (r, row) in out.chunks_mut(q.cols.max(1)).enumerate() {
            let scales = self.params.granularity.row_scales(&q.scales, r, q.cols);
            dequantize_row_f32(
                self.params.encoding,
                &q.packed[r * bpr..(r + 1) * bpr],
                scales,
                group,
                row,
            )
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "{}: tensor {name}: {e}",
                    self.inner.path().display()
                ))
            })?;
        }
        Ok(out)
    }

    fn sha256(&self) -> Option<String> {
        self.inner.sha256()
    }
}
