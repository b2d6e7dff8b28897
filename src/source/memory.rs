//! Tensors held in memory rather than in a file: [`MemorySource`] owns f32 values (tests,
//! generated models); [`BorrowedSource`] borrows the caller's little-endian bytes in place (the
//! Python package's `create`: numpy arrays and torch tensors viewed, not copied) and reads them
//! as a checkpoint's tensors are read, one at a time.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Violation};
use crate::format::rules::Rule;
use crate::format::safetensors::{element_count, shape_string, Dtype};
use crate::source::{missing_tensor, weights_f32, RawTensors, SourceTensor, TensorSource};

/// Tensors held in memory (tests, generated models).
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    label: PathBuf,
    tensors: Vec<(SourceTensor, Vec<f32>)>,
}

impl MemorySource {
    /// An empty source; `label` names it in errors.
    pub fn new(label: impl Into<PathBuf>) -> Self {
        MemorySource {
            label: label.into(),
            tensors: Vec::new(),
        }
    }

    /// Adds an f32 tensor. Fails if the value count does not match the shape.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        shape: Vec<u64>,
        values: Vec<f32>,
    ) -> Result<()> {
        let name = name.into();
        if element_count(&shape) != Some(values.len() as u64) {
            return Err(Error::InvalidArgument(format!(
                "tensor {name}: {} values for shape {shape:?}",
                values.len()
            )));
        }
        self.tensors.push((
            SourceTensor {
                name,
                shape,
                dtype: Dtype::F32,
            },
            values,
        ));
        Ok(())
    }

    /// Adds an f32 tensor, builder style; panics if the count does not match the shape.
    pub fn with(mut self, name: impl Into<String>, shape: Vec<u64>, values: Vec<f32>) -> Self {
        self.push(name, shape, values)
            .expect("value count matches shape");
        self
    }
}

impl TensorSource for MemorySource {
    fn path(&self) -> &Path {
        &self.label
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.tensors.iter().map(|(t, _)| t.clone()).collect()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.tensors
            .iter()
            .find(|(t, _)| t.name == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                Error::InvalidArgument(format!("no tensor {name} in {}", self.label.display()))
            })
    }
}

/// Tensors lent by the caller as little-endian bytes of any safetensors dtype: float weights
/// (F32, F16, BF16) or a state dict of trits (with its scales given elsewhere, spec section
/// 18.1). Nothing is copied until a tensor is read, one at a time, exactly as a checkpoint's
/// are ([`crate::source::CheckpointSource`]), so the writer's memory stays bounded by the
/// largest tensor.
#[derive(Debug, Clone, Default)]
pub struct BorrowedSource<'a> {
    label: PathBuf,
    tensors: Vec<(SourceTensor, &'a [u8])>,
}

impl<'a> BorrowedSource<'a> {
    /// An empty source; `label` names it in errors.
    pub fn new(label: impl Into<PathBuf>) -> Self {
        BorrowedSource {
            label: label.into(),
            tensors: Vec::new(),
        }
    }

    /// Adds tensor `name`: `bytes` hold its values of `dtype`, C order. Fails, naming the
    /// tensor, if the name is taken or the byte count is not the shape's element count times
    /// the dtype's size (rule 3.4's condition, with checked arithmetic).
    pub fn push(
        &mut self,
        name: impl Into<String>,
        dtype: Dtype,
        shape: Vec<u64>,
        bytes: &'a [u8],
    ) -> Result<()> {
        let name = name.into();
        if self.tensors.iter().any(|(t, _)| t.name == name) {
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {}: given twice",
                self.label.display(),
                crate::error::escape_name(&name)
            )));
        }
        let expected = element_count(&shape).and_then(|n| n.checked_mul(dtype.size()));
        if expected != Some(bytes.len() as u64) {
            return Err(Violation::new(
                &self.label,
                Rule::DataOffsets,
                match expected {
                    Some(n) => format!("{n} bytes ({dtype} of shape {})", shape_string(&shape)),
                    None => format!("a shape whose byte size fits in 64 bits ({dtype})"),
                },
                format!("{} bytes", bytes.len()),
            )
            .tensor(&name)
            .into());
        }
        self.tensors
            .push((SourceTensor { name, shape, dtype }, bytes));
        Ok(())
    }

    fn find(&self, name: &str) -> Option<&(SourceTensor, &'a [u8])> {
        self.tensors.iter().find(|(t, _)| t.name == name)
    }
}

impl TensorSource for BorrowedSource<'_> {
    fn path(&self) -> &Path {
        &self.label
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        self.tensors.iter().map(|(t, _)| t.clone()).collect()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (t, bytes) = self
            .find(name)
            .ok_or_else(|| missing_tensor(&self.label, name))?;
        weights_f32(&self.label, name, t.dtype, bytes)
    }
}

impl RawTensors for BorrowedSource<'_> {
    fn raw(&self, name: &str) -> Option<(Dtype, &[u64], &[u8])> {
        self.find(name)
            .map(|(t, b)| (t.dtype, t.shape.as_slice(), *b))
    }

    fn release(&self, _bytes: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::validation_set;

    fn le_bytes<const N: usize>(values: impl IntoIterator<Item = [u8; N]>) -> Vec<u8> {
        values.into_iter().flatten().collect()
    }

    #[test]
    fn borrowed_tensors_read_as_a_checkpoints_do() {
        let f32s = le_bytes([1.5f32, -2.0, 0.25].map(f32::to_le_bytes));
        let f16s = le_bytes(
            [half::f16::from_f32(0.5), half::f16::from_f32(-3.0)].map(|v| v.to_le_bytes()),
        );
        let bf16s = le_bytes(
            [half::bf16::from_f32(1.0), half::bf16::from_f32(-0.125)].map(|v| v.to_le_bytes()),
        );
        let trits = [255u8, 0, 1, 1];
        let mut s = BorrowedSource::new("<memory>");
        s.push("a", Dtype::F32, vec![3], &f32s).unwrap();
        s.push("b", Dtype::F16, vec![1, 2], &f16s).unwrap();
        s.push("c", Dtype::BF16, vec![2, 1], &bf16s).unwrap();
        s.push("t", Dtype::I8, vec![2, 2], &trits).unwrap();
        assert_eq!(s.load_f32("a").unwrap(), [1.5, -2.0, 0.25]);
        assert_eq!(s.load_f32("b").unwrap(), [0.5, -3.0]);
        assert_eq!(s.load_f32("c").unwrap(), [1.0, -0.125]);
        let (d, shape, bytes) = s.raw("t").unwrap();
        assert_eq!((d, shape, bytes), (Dtype::I8, &[2u64, 2][..], &trits[..]));
        // An integer tensor is not a weight (rule 8.2), named; a missing one is named too.
        let e = s.load_f32("t").unwrap_err();
        let v = e.violation().expect("a rule violation");
        assert_eq!(
            (v.rule, v.tensor.as_deref()),
            (Rule::SourceDtype, Some("t"))
        );
        assert!(s.load_f32("zz").unwrap_err().to_string().contains("zz"));
        assert_eq!(s.tensors().len(), 4);
    }

    #[test]
    fn push_checks_bytes_against_shape_and_names() {
        let bytes = [0u8; 12];
        let mut s = BorrowedSource::new("<memory>");
        // 3 F32 values are 12 bytes: 2 or 4 are refused, naming the tensor.
        for shape in [vec![2u64], vec![4], vec![2, 2]] {
            let e = s.push("w", Dtype::F32, shape, &bytes).unwrap_err();
            let v = e.violation().expect("a rule violation");
            assert_eq!(v.tensor.as_deref(), Some("w"));
            assert_eq!(v.found, "12 bytes");
        }
        // A shape whose byte size overflows u64 is refused without wrapping around to 12.
        let e = s
            .push("w", Dtype::F32, vec![1 << 62, 1 << 2], &bytes)
            .unwrap_err();
        assert!(e.to_string().contains("fits in 64 bits"), "{e}");
        s.push("w", Dtype::F32, vec![3], &bytes).unwrap();
        let e = s.push("w", Dtype::F32, vec![3], &bytes).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn a_validation_set_lent_in_memory_is_read_as_a_files() {
        let inputs = le_bytes([0.5f32, 1.0, -1.0, 2.0].map(f32::to_le_bytes));
        let labels = le_bytes([1i64, 0].map(i64::to_le_bytes));
        let mut s = BorrowedSource::new("<memory validation>");
        s.push("inputs", Dtype::F32, vec![2, 2], &inputs).unwrap();
        s.push("labels", Dtype::I64, vec![2], &labels).unwrap();
        let v = validation_set(&s).unwrap();
        assert_eq!(v.inputs, [0.5, 1.0, -1.0, 2.0]);
        assert_eq!(v.labels, [1, 0]);
        // Token ids [1, 3]: the labels are derived, the next token of each position.
        let ids = le_bytes([4i64, 5, 6].map(i64::to_le_bytes));
        let mut s = BorrowedSource::new("<memory validation>");
        s.push("input_ids", Dtype::I64, vec![1, 3], &ids).unwrap();
        let v = validation_set(&s).unwrap();
        assert_eq!(
            (v.input_ids.unwrap().ids, v.labels),
            (vec![4, 5, 6], vec![5, 6])
        );
        // Labels of the wrong dtype: rule 6.1, named.
        let mut s = BorrowedSource::new("<memory validation>");
        s.push("inputs", Dtype::F32, vec![2, 2], &inputs).unwrap();
        s.push("labels", Dtype::F32, vec![4], &inputs).unwrap();
        let e = validation_set(&s).unwrap_err();
        assert_eq!(e.violation().unwrap().tensor.as_deref(), Some("labels"));
    }
}
