//! An open bundle and its borrowed, zero-copy views. Every view is built from byte ranges that
//! opening proved (rules 3.1 to 6.1), so looking a tensor up after opening cannot fail: the
//! accessors return views, not options to unwrap.

use std::ops::Range;
use std::path::{Path, PathBuf};

use half::f16;

use crate::error::{Error, Violation};
use crate::format::decoder::DecoderSpec;
use crate::format::encoding::{Encoding, RowError};
use crate::format::manifest::{AssetEntry, FileRole, Manifest, ManifestFacts, TensorSpec};
use crate::format::quantization::{Granularity, QuantParams};
use crate::format::rules::Rule;
use crate::format::safetensors::Header;
use crate::read::mmap::FileBytes;

/// A tensor of a data file as the manifest lists it: its name, the SHA-256 the manifest
/// declares for its bytes (rule 7.2) and where the bytes are.
#[derive(Debug, Clone)]
pub struct ListedTensor {
    /// Tensor name.
    pub name: String,
    /// The digest `files.<role>.tensors` declares.
    pub sha256: String,
    range: Range<usize>,
}

impl ListedTensor {
    pub(crate) fn new(name: String, sha256: String, range: Range<usize>) -> Self {
        ListedTensor {
            name,
            sha256,
            range,
        }
    }
}

/// One data file of an open bundle: its validated header, its bytes, and what the manifest
/// declares about it.
#[derive(Debug)]
pub struct DataFile {
    pub(crate) role: FileRole,
    pub(crate) path: PathBuf,
    pub(crate) header: Header,
    pub(crate) bytes: FileBytes,
    /// `files.<role>.sha256` (rule 7.1).
    pub(crate) sha256: String,
    /// `files.<role>.tensors`, in the manifest's order, each found in the header (rule 3.7).
    pub(crate) listed: Vec<ListedTensor>,
}

impl DataFile {
    /// Which file this is.
    pub fn role(&self) -> FileRole {
        self.role
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The SHA-256 the manifest declares for the whole file (rule 7.1).
    pub fn declared_sha256(&self) -> &str {
        &self.sha256
    }

    /// The tensors the manifest lists for this file, with their declared digests and bytes.
    pub fn listed(&self) -> impl Iterator<Item = (&ListedTensor, &[u8])> {
        self.listed
            .iter()
            .map(|t| (t, &self.bytes[t.range.clone()]))
    }

    /// The data bytes of tensor `name`, if the file has it.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.range(name).map(|r| &self.bytes[r])
    }

    /// Where tensor `name`'s bytes are: inside the file, because rule 3.6 proved the ranges
    /// tile the data buffer and loading proved the buffer has the validated length.
    pub(crate) fn range(&self, name: &str) -> Option<Range<usize>> {
        let e = self.header.get(name)?;
        let start = (self.header.data_start() + e.start) as usize;
        let end = start + e.byte_len() as usize;
        (end <= self.bytes.len()).then_some(start..end)
    }
}

/// Where one manifest tensor's bytes are, in both files.
#[derive(Debug, Clone)]
pub(crate) struct TensorRanges {
    /// Its F16 values in `fp16.safetensors`.
    pub fp16: Range<usize>,
    /// Packed trits (quantized) or F32 values (not quantized) in `ternary.safetensors`.
    pub stored: Range<usize>,
    /// Its scales in `ternary.safetensors`, when quantized.
    pub scales: Option<Range<usize>>,
}

/// Where the validation set's tensors are in `validation.safetensors`.
#[derive(Debug, Clone)]
pub(crate) struct ValidationRanges {
    pub samples: usize,
    /// Tokens per sequence (T) for a decoder, 0 for a chain of layers.
    pub tokens: usize,
    /// `inputs` (a chain of layers) or `input_ids` (a decoder).
    pub inputs: Range<usize>,
    pub labels: Range<usize>,
    pub difficulty: Option<Range<usize>>,
    pub original_predictions: Option<Range<usize>>,
    pub distributions: Option<DistributionRanges>,
}

/// Where the original model's distributions lie in the validation file (format 5.0).
#[derive(Debug, Clone)]
pub(crate) enum DistributionRanges {
    Full {
        log_probs: Range<usize>,
    },
    TopK {
        k: usize,
        ids: Range<usize>,
        log_probs: Range<usize>,
        log_sum_exp: Range<usize>,
        label_log_probs: Range<usize>,
    },
}

/// An open, structurally valid bundle.
#[derive(Debug)]
pub struct Bundle {
    pub(crate) dir: PathBuf,
    pub(crate) manifest: Manifest,
    pub(crate) facts: ManifestFacts,
    pub(crate) manifest_size: u64,
    pub(crate) ternary: DataFile,
    pub(crate) fp16: DataFile,
    pub(crate) validation: Option<(DataFile, ValidationRanges)>,
    /// The asset files of `files.assets` (rule 1.6), in the manifest's order.
    pub(crate) assets: Vec<AssetData>,
    pub(crate) extras: Vec<String>,
    /// One entry per manifest tensor, in manifest order.
    pub(crate) ranges: Vec<TensorRanges>,
}

/// An asset file of the bundle (format 4.0, rule 1.6), its size checked against the manifest.
#[derive(Debug)]
pub struct AssetData {
    pub(crate) path: PathBuf,
    pub(crate) entry: AssetEntry,
    pub(crate) bytes: FileBytes,
}

impl AssetData {
    /// Its name (one of [`crate::format::manifest::ASSET_NAMES`]).
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// Its path in the bundle directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its bytes (as opened; [`crate::read::checks::check_digests`] proves their digest).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The SHA-256 the manifest declares.
    pub fn declared_sha256(&self) -> &str {
        &self.entry.sha256
    }
}

/// A quantized tensor of `ternary.safetensors`: packed rows and scales, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct PackedTensor<'a> {
    /// The manifest's description.
    pub spec: &'a TensorSpec,
    /// Rows (first dimension).
    pub rows: usize,
    /// Columns (product of the other dimensions).
    pub cols: usize,
    /// Encoding of the rows.
    pub encoding: Encoding,
    /// Scale layout.
    pub granularity: Granularity,
    /// `rows * bytes_per_row` packed bytes.
    pub packed: &'a [u8],
    /// The scales as little-endian f32 bytes.
    pub scale_bytes: &'a [u8],
}

impl<'a> PackedTensor<'a> {
    /// Bytes per packed row.
    pub fn bytes_per_row(&self) -> usize {
        self.encoding.bytes_per_row(self.cols as u64) as usize
    }

    /// Packed bytes of row `r` (`r < rows`).
    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.bytes_per_row();
        &self.packed[r * n..(r + 1) * n]
    }

    /// The scales, decoded from little-endian f32.
    pub fn scales(&self) -> Vec<f32> {
        crate::format::le::f32s(self.scale_bytes).collect()
    }

    /// Every trit of the tensor, row-major, each row first checked for valid bytes (rule 4.3)
    /// and canonical padding (rule 4.4); on failure the row and its error.
    pub fn trits(&self) -> Result<Vec<i8>, (usize, RowError)> {
        let mut trits = vec![0i8; self.rows * self.cols];
        for (r, row) in trits.chunks_exact_mut(self.cols.max(1)).enumerate() {
            let packed = self.row(r);
            self.encoding
                .validate_row(packed, self.cols)
                .and_then(|()| self.encoding.unpack_row(packed, row))
                .map_err(|e| (r, e))?;
        }
        Ok(trits)
    }

    /// Dequantizes the whole tensor to F16 (rule 5.2); an invalid packed byte (rule 4.3) is an
    /// error.
    pub fn dequantize_f16(&self) -> Result<Vec<f16>, RowError> {
        crate::quant::dequantize::dequantize_tensor_f16(
            self.encoding,
            self.granularity,
            self.packed,
            &self.scales(),
            self.rows,
            self.cols,
        )
    }
}

/// How `ternary.safetensors` stores a tensor.
#[derive(Debug, Clone, Copy)]
pub enum Stored<'a> {
    /// Packed trits and scales.
    Packed(PackedTensor<'a>),
    /// F32 values, little-endian.
    F32(&'a [u8]),
}

/// A tensor of the bundle in both files.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// The manifest's description.
    pub spec: &'a TensorSpec,
    /// Its F16 values in `fp16.safetensors`, little-endian.
    pub fp16: &'a [u8],
    /// Its form in `ternary.safetensors`.
    pub stored: Stored<'a>,
}

/// The validation set, borrowed (rule 6.1 proved its layout).
#[derive(Debug, Clone, Copy)]
pub struct ValidationView<'a> {
    /// `validation.safetensors`.
    pub path: &'a Path,
    /// Samples (sequences for a decoder), N >= 1.
    pub samples: usize,
    /// Tokens per sequence, T >= 2, for a decoder; 0 for a chain of layers.
    pub tokens: usize,
    /// `inputs` F32 `[N, input_dim]` (a chain of layers) or `input_ids` I64 `[N, T]` (a
    /// decoder), little-endian.
    pub inputs: &'a [u8],
    /// `labels` I64 `[N]` (a decoder: `[N, T - 1]`), little-endian.
    pub labels: &'a [u8],
    /// `difficulty` U8 `[N]`, when present.
    pub difficulty: Option<&'a [u8]>,
    /// `original_predictions` I64 `[N]` (a decoder: `[N, T - 1]`), when present (format 2.0).
    pub original_predictions: Option<&'a [u8]>,
    /// The original model's distributions, when present (format 5.0, rule 6.1).
    pub distributions: Option<DistributionView<'a>>,
}

/// The original model's distributions at the scored samples, borrowed little-endian bytes
/// (format 5.0, rule 6.1 proved their shapes; rule 6.4 is a data check).
#[derive(Debug, Clone, Copy)]
pub enum DistributionView<'a> {
    /// `original_log_probs` F32 `[S, classes]` (S scored samples).
    Full {
        /// The log-probabilities.
        log_probs: &'a [u8],
    },
    /// The top-K form.
    TopK {
        /// K.
        k: usize,
        /// `original_top_ids` I64 `[S, K]`.
        ids: &'a [u8],
        /// `original_top_log_probs` F32 `[S, K]`.
        log_probs: &'a [u8],
        /// `original_log_sum_exp` F32 `[S]`.
        log_sum_exp: &'a [u8],
        /// `original_label_log_probs` F32 `[S]`.
        label_log_probs: &'a [u8],
    },
}

impl Bundle {
    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The asset files (format 4.0, rule 1.6), in the manifest's order.
    pub fn assets(&self) -> &[AssetData] {
        &self.assets
    }

    /// The asset file `name`, when the bundle carries it.
    pub fn asset(&self, name: &str) -> Option<&AssetData> {
        self.assets.iter().find(|a| a.name() == name)
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Typed facts validated from the manifest (version, quantization settings, activations).
    pub fn facts(&self) -> &ManifestFacts {
        &self.facts
    }

    /// Quantization settings.
    pub fn params(&self) -> &QuantParams {
        &self.facts.params
    }

    /// Size of manifest.json in bytes.
    pub fn manifest_size(&self) -> u64 {
        self.manifest_size
    }

    /// `ternary.safetensors`.
    pub fn ternary_file(&self) -> &DataFile {
        &self.ternary
    }

    /// `fp16.safetensors`.
    pub fn fp16_file(&self) -> &DataFile {
        &self.fp16
    }

    /// The data file of `role`, if the bundle has it.
    pub fn file(&self, role: FileRole) -> Option<&DataFile> {
        match role {
            FileRole::Ternary => Some(&self.ternary),
            FileRole::Fp16 => Some(&self.fp16),
            FileRole::Validation => self.validation.as_ref().map(|(f, _)| f),
        }
    }

    /// Tells the kernel this process is done with `part` (bytes borrowed from one of the
    /// bundle's files) for now: a mapped file's pages leave the resident set, and come back from
    /// the page cache when touched again ([`FileBytes::release`]). Readers call it after each
    /// tensor, so that memory stays near what one layer needs, not the whole bundle.
    pub fn release(&self, part: &[u8]) {
        for f in self.files() {
            f.bytes.release(part);
        }
    }

    /// The data files present, in role order.
    pub fn files(&self) -> impl Iterator<Item = &DataFile> {
        [
            Some(&self.ternary),
            Some(&self.fp16),
            self.validation.as_ref().map(|(f, _)| f),
        ]
        .into_iter()
        .flatten()
    }

    /// Directory entries that are not bundle files (rule 1.5), sorted.
    pub fn extras(&self) -> &[String] {
        &self.extras
    }

    /// The number of classes: `out_features` of the last layer (rule 2.9: there is one), or a
    /// decoder's vocabulary (every position predicts a token).
    pub fn classes(&self) -> u64 {
        if let Some(d) = &self.facts.decoder {
            return d.vocab_size as u64;
        }
        self.manifest
            .model
            .layers
            .last()
            .map_or(0, |l| l.out_features)
    }

    /// The decoder this bundle holds (format 3.0, rule 2.13), if it holds one.
    pub fn decoder(&self) -> Option<&DecoderSpec> {
        self.facts.decoder.as_ref()
    }

    /// Every tensor, in manifest order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        (0..self.ranges.len()).map(|i| self.view(i))
    }

    /// The quantized tensors, in manifest order.
    pub fn quantized(&self) -> impl Iterator<Item = PackedTensor<'_>> {
        self.tensors().filter_map(|t| match t.stored {
            Stored::Packed(p) => Some(p),
            Stored::F32(_) => None,
        })
    }

    /// Tensor `name` (indexed: O(1)).
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.facts.tensor_index.get(name).map(|&i| self.view(i))
    }

    /// The packed form of quantized tensor `name`.
    pub fn packed(&self, name: &str) -> Option<PackedTensor<'_>> {
        match self.tensor(name)?.stored {
            Stored::Packed(p) => Some(p),
            Stored::F32(_) => None,
        }
    }

    /// The F32 little-endian bytes of passthrough (not quantized) tensor `name`.
    pub fn passthrough_bytes(&self, name: &str) -> Option<&[u8]> {
        match self.tensor(name)?.stored {
            Stored::F32(b) => Some(b),
            Stored::Packed(_) => None,
        }
    }

    /// The F16 little-endian bytes of tensor `name` in `fp16.safetensors`.
    pub fn fp16_bytes(&self, name: &str) -> Option<&[u8]> {
        Some(self.tensor(name)?.fp16)
    }

    /// The validation set, if the bundle has one.
    pub fn validation(&self) -> Option<ValidationView<'_>> {
        let (f, r) = self.validation.as_ref()?;
        let b: &[u8] = &f.bytes;
        Some(ValidationView {
            path: &f.path,
            samples: r.samples,
            tokens: r.tokens,
            inputs: &b[r.inputs.clone()],
            labels: &b[r.labels.clone()],
            difficulty: r.difficulty.clone().map(|x| &b[x]),
            original_predictions: r.original_predictions.clone().map(|x| &b[x]),
            distributions: r.distributions.as_ref().map(|d| match d {
                DistributionRanges::Full { log_probs } => DistributionView::Full {
                    log_probs: &b[log_probs.clone()],
                },
                DistributionRanges::TopK {
                    k,
                    ids,
                    log_probs,
                    log_sum_exp,
                    label_log_probs,
                } => DistributionView::TopK {
                    k: *k,
                    ids: &b[ids.clone()],
                    log_probs: &b[log_probs.clone()],
                    log_sum_exp: &b[log_sum_exp.clone()],
                    label_log_probs: &b[label_log_probs.clone()],
                },
            }),
        })
    }

    fn view(&self, i: usize) -> TensorView<'_> {
        let spec = &self.manifest.tensors[i];
        let r = &self.ranges[i];
        let t: &[u8] = &self.ternary.bytes;
        let stored = match &r.scales {
            Some(scales) => Stored::Packed(PackedTensor {
                spec,
                // Rule 2.7 proved the rows and columns of a quantized shape fit.
                rows: spec.shape[0] as usize,
                cols: spec.shape[1..].iter().product::<u64>() as usize,
                encoding: self.facts.params.encoding,
                granularity: self.facts.params.granularity,
                packed: &t[r.stored.clone()],
                scale_bytes: &t[scales.clone()],
            }),
            None => Stored::F32(&t[r.stored.clone()]),
        };
        TensorView {
            spec,
            fp16: &self.fp16.bytes[r.fp16.clone()],
            stored,
        }
    }

    /// The error for tensor `name` missing from the `role` file of this (validated) bundle:
    /// the manifest lists it, the file does not have it (rule 3.7).
    pub fn missing_tensor(&self, role: FileRole, name: &str) -> Error {
        Violation::new(
            self.dir.join(role.file_name()),
            Rule::HeaderMatchesManifest,
            "a tensor the manifest lists",
            "no such tensor",
        )
        .tensor(name)
        .into()
    }

    /// The error for row `row` of packed tensor `name` failing to decode.
    pub fn row_error(&self, name: &str, row: usize, e: RowError) -> Error {
        let (expected, found) = e.expected_found(self.facts.params.encoding, row);
        Violation::new(self.ternary.path(), e.rule(), expected, found)
            .tensor(name)
            .into()
    }
}
