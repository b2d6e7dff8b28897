//! The quantization settings a bundle declares (manifest `quantization`, rule 2.8) and what they
//! imply for its tensors: the row/column view of a tensor (spec section 1.3), which scale covers
//! which element (section 6) and when a scale is usable in F16 (rule 4.5). The quantizer that
//! produces trits and scales lives in [`crate::quant`].

use half::f16;

use crate::format::encoding::Encoding;

/// Which elements share one scale (the manifest's `quantization.granularity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Granularity {
    /// One scale for the whole tensor, shape `[1]`.
    Tensor,
    /// One scale per row (output channel), shape `[R]`; the default.
    #[default]
    Channel,
    /// One scale per row per `G` consecutive columns, shape `[R, ceil(C / G)]`.
    Group(u64),
}

impl Granularity {
    /// The manifest name: `"tensor"`, `"channel"` or `"group"`.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Tensor => "tensor",
            Granularity::Channel => "channel",
            Granularity::Group(_) => "group",
        }
    }

    /// The group size, for [`Granularity::Group`].
    pub fn group_size(self) -> Option<u64> {
        match self {
            Granularity::Group(g) => Some(g),
            _ => None,
        }
    }

    /// Shape of the scale tensor for a weight of `rows` x `cols` (rule 4.2).
    pub fn scale_shape(self, rows: u64, cols: u64) -> Vec<u64> {
        match self {
            Granularity::Tensor => vec![1],
            Granularity::Channel => vec![rows],
            Granularity::Group(g) => vec![rows, cols.div_ceil(g.max(1))],
        }
    }

    /// Number of scales of one row, and how many consecutive columns each covers.
    /// A per-tensor scale is presented as one scale covering the row.
    pub fn row_layout(self, cols: usize) -> (usize, usize) {
        match self {
            Granularity::Tensor | Granularity::Channel => (1, cols.max(1)),
            Granularity::Group(g) => {
                let g = usize::try_from(g).unwrap_or(usize::MAX).max(1);
                (cols.div_ceil(g), g)
            }
        }
    }

    /// The scales that apply to row `row`, given all scales of the tensor.
    pub fn row_scales(self, scales: &[f32], row: usize, cols: usize) -> &[f32] {
        match self {
            Granularity::Tensor => &scales[..1],
            Granularity::Channel => &scales[row..row + 1],
            Granularity::Group(_) => {
                let n = self.row_layout(cols).0;
                &scales[row * n..(row + 1) * n]
            }
        }
    }
}

/// How a bundle's trits and scales were made (the manifest's `quantization.method`, rule 2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QuantMethod {
    /// The absmean quantizer of spec section 7 ran on real-valued weights.
    #[default]
    Absmean,
    /// The source was already ternary: its trits and scales were taken as given (section 7.1,
    /// format 4.0).
    Given,
}

impl QuantMethod {
    /// The manifest name.
    pub fn name(self) -> &'static str {
        match self {
            QuantMethod::Absmean => "absmean",
            QuantMethod::Given => "given",
        }
    }
}

/// Quantization settings (the manifest's `quantization` block, minus the fixed fields).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    /// How trits are packed.
    pub encoding: Encoding,
    /// Which elements share a scale.
    pub granularity: Granularity,
    /// Lower bound of a scale (`scale = max(gamma, epsilon)`); finite and > 0.
    pub epsilon: f32,
    /// `|x|` must exceed this for a non-zero trit; finite, in `[0, 1)`. 0.5 is RoundClip.
    pub sparsity_threshold: f32,
}

impl Default for QuantParams {
    fn default() -> Self {
        QuantParams {
            encoding: Encoding::Trit5,
            granularity: Granularity::Channel,
            epsilon: 1e-5,
            sparsity_threshold: 0.5,
        }
    }
}

impl QuantParams {
    /// Checks the settings against rule 2.8; the error says which setting and why.
    pub fn check(&self) -> Result<(), String> {
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(format!(
                "epsilon must be finite and > 0, found {}",
                self.epsilon
            ));
        }
        if !(self.sparsity_threshold.is_finite() && (0.0..1.0).contains(&self.sparsity_threshold)) {
            return Err(format!(
                "sparsity_threshold must be finite and in [0, 1), found {}",
                self.sparsity_threshold
            ));
        }
        if let Granularity::Group(g) = self.granularity {
            if g == 0 || g > crate::format::limits::MAX_GROUP_SIZE {
                return Err(format!(
                    "group_size must be in 1..={}, found {g}",
                    crate::format::limits::MAX_GROUP_SIZE
                ));
            }
        }
        Ok(())
    }
}

/// Rows and columns of a weight of shape `[R, C1, C2, ...]`: `(R, C1 * C2 * ...)`.
/// `None` for rank 0 or on overflow.
pub fn rows_cols(shape: &[u64]) -> Option<(u64, u64)> {
    let (&rows, rest) = shape.split_first()?;
    let cols = rest.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
    rows.checked_mul(cols)?;
    Some((rows, cols))
}

/// Is `scale` usable for a non-zero trit: its F16 rounding is finite and non-zero (rule 4.5)?
pub fn scale_fits_f16(scale: f32) -> bool {
    let h = f16::from_f32(scale);
    h.is_finite() && h != f16::ZERO
}
