//! Tensors held in memory rather than in a file: [`MemorySource`] owns f32 values (tests,
//! generated models); [`BorrowedSource`] borrows the caller's little-endian bytes in place (the
//! Python package's `create`: numpy arrays and torch tensors viewed, not copied) and reads them
//! as a checkpoint's tensors are read, one at a time.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Violation};
use crate::format::rules::Rule;
use crate::format::safetensors::{element_count, shape_string, Dtype};
use crate::source::{to_f32, RawTensors, SourceTensor, TensorSource};

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
        let (t, bytes) = self.find(name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: tensor {}: missing (the model needs it)",
                self.label.display(),
                crate::error::escape_name(name)
            ))
        })?;
        to_f32(t.dtype, bytes).ok_or_else(|| {
            Violation::new(
                &self.label,
                Rule::SourceDtype,
                "dtype F32, F16 or BF16",
                t.dtype.name(),
            )
            .tensor(name)
            .into()
        })
    }
}

impl RawTensors for BorrowedSource<'_> {
    fn raw(&self, name: &str) -> Option<(Dtype, &[u64], &[u8])> {
        self.find(name)
            .map(|(t, b)| (t.dtype, t.shape.as_slice(), *b))
    }

    fn release(&self, _bytes: &[u8]) {}
}
