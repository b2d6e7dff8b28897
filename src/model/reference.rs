//! The reference model (spec section "Reference model semantics"): a chain of linear layers
//! `y = act(W . norm(x) + b)` run with ndarray in f32, and the two independent ways `verify`
//! feeds it from a bundle:
//!
//! - the **ternary path** reads only `ternary.safetensors`: trits decoded to {-1, 0, +1}, one
//!   matmul on the trit matrix, scales applied per row (or per column group) afterwards;
//! - the **FP16 path** reads only `fp16.safetensors`: F16 weights upcast to f32, ordinary matmul.
//!
//! Both stream: one layer's weights are in memory at a time. So does the third source of
//! weights, a checkpoint ([`forward_source`]): the original model before quantization, whose
//! predictions the writer stores and `verify --reference` recomputes.

use std::path::Path;

use half::slice::HalfFloatSliceExt;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis, CowArray};
use rayon::prelude::*;

use crate::error::{Result, Violation};
use crate::format::activation::Activation;
use crate::format::manifest::{FileRole, LayerSpec, ModelSpec};
use crate::format::quantization::Granularity;
use crate::format::rules::Rule;
use crate::model::matmul::{dot_t, dot_t_blocks};
use crate::read::{Bundle, PackedTensor};
use crate::source::TensorSource;

/// A layer's weight matrix `[out_features, in_features]`, in one of the two forms.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// Real-valued weights.
    Dense(Array2<f32>),
    /// Trits as f32 {-1, 0, +1} and the scales to apply after the matmul (built with
    /// [`LinearWeight::ternary`], which checks that they fit together).
    Ternary {
        /// `[out, in]` trit matrix.
        trits: Array2<f32>,
        /// Scales as `[rows, scales per row]`: `[1, 1]` per tensor, `[out, 1]` per channel,
        /// `[out, groups]` per group.
        scales: Array2<f32>,
        /// Scale layout.
        granularity: Granularity,
    },
}

impl LinearWeight {
    /// The ternary form from a trit matrix and scales in the layout of
    /// [`Granularity::scale_shape`]; `None` when the scale count does not fit the matrix.
    pub fn ternary(trits: Array2<f32>, scales: Vec<f32>, granularity: Granularity) -> Option<Self> {
        let shape = match granularity {
            Granularity::Tensor => (1, 1),
            Granularity::Channel => (trits.nrows(), 1),
            Granularity::Group(_) => (trits.nrows(), granularity.row_layout(trits.ncols()).0),
        };
        let scales = Array2::from_shape_vec(shape, scales).ok()?;
        Some(LinearWeight::Ternary {
            trits,
            scales,
            granularity,
        })
    }
}

/// `values` as the `[rows, cols]` matrix of tensor `name` read from `path`, or a violation of
/// the model's shapes (rule 2.9) naming them.
fn matrix(
    values: Vec<f32>,
    (rows, cols): (usize, usize),
    name: &str,
    path: &Path,
) -> Result<Array2<f32>> {
    let found = values.len();
    Array2::from_shape_vec((rows, cols), values).map_err(|_| {
        Violation::new(
            path,
            Rule::Model,
            format!("{} values, as the model needs", rows * cols),
            format!("{found}"),
        )
        .tensor(name)
        .into()
    })
}

/// A layer as the reference model runs it.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The weight.
    pub weight: LinearWeight,
    /// Bias `[out_features]`.
    pub bias: Option<Array1<f32>>,
    /// RMSNorm weight `[in_features]` and epsilon.
    pub rmsnorm: Option<(Array1<f32>, f32)>,
    /// Activation.
    pub activation: Activation,
}

/// RMSNorm of each row: `x / sqrt(mean(x^2) + eps) * w` (mean accumulated in f64).
pub fn rmsnorm(x: &mut Array2<f32>, weight: &Array1<f32>, eps: f32) {
    for mut row in x.axis_iter_mut(Axis(0)) {
        let ms =
            row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / row.len().max(1) as f64;
        let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
        row.zip_mut_with(weight, |v, &w| *v = *v * inv * w);
    }
}

/// Below this group size the ternary path folds scales into the trit matrix rather than running
/// one matmul per column group.
pub const SMALL_GROUP: usize = 32;

/// `x . W^T` for either weight form.
pub fn linear(x: ArrayView2<f32>, w: &LinearWeight) -> Array2<f32> {
    match w {
        LinearWeight::Dense(w) => dot_t(x, w.view()),
        LinearWeight::Ternary {
            trits,
            scales,
            granularity,
        } => match *granularity {
            Granularity::Tensor => {
                let mut y = dot_t(x, trits.view());
                y *= scales[[0, 0]];
                y
            }
            Granularity::Channel => {
                let mut y = dot_t(x, trits.view());
                y *= &scales.column(0);
                y
            }
            Granularity::Group(_) => {
                let cols = trits.ncols();
                let (per_row, group) = granularity.row_layout(cols);
                let s = scales;
                if group < SMALL_GROUP {
                    // Many small groups would mean many tiny matmuls: fold each group's scale
                    // into its trits instead (still from trits and scales alone).
                    let mut w = trits.clone();
                    for (mut row, srow) in w.axis_iter_mut(Axis(0)).zip(s.axis_iter(Axis(0))) {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v *= srow[c / group];
                        }
                    }
                    return dot_t(x, w.view());
                }
                let mut y = Array2::<f32>::zeros((x.nrows(), trits.nrows()));
                for g in 0..per_row {
                    let (lo, hi) = (g * group, ((g + 1) * group).min(cols));
                    let mut part = dot_t(x.slice(s![.., lo..hi]), trits.slice(s![.., lo..hi]));
                    part *= &s.column(g);
                    y += &part;
                }
                y
            }
        },
    }
}

/// Runs one layer on a batch `[n, in_features]`.
pub fn layer_forward(layer: &Layer, x: ArrayView2<f32>) -> Array2<f32> {
    affine_forward(
        layer.rmsnorm.as_ref(),
        layer.bias.as_ref(),
        layer.activation,
        x,
        |input| linear(input, &layer.weight),
    )
}

/// `act(linear(norm(x)) + b)`: a layer around its matrix product.
fn affine_forward(
    rmsnorm: Option<&(Array1<f32>, f32)>,
    bias: Option<&Array1<f32>>,
    act: Activation,
    x: ArrayView2<f32>,
    linear: impl FnOnce(ArrayView2<f32>) -> Array2<f32>,
) -> Array2<f32> {
    let normed;
    let input = match rmsnorm {
        Some((w, eps)) => {
            let mut y = x.to_owned();
            self::rmsnorm(&mut y, w, *eps);
            normed = y;
            normed.view()
        }
        None => x,
    };
    let mut y = linear(input);
    if let Some(b) = bias {
        y += b;
    }
    if act != Activation::Identity {
        y.mapv_inplace(|v| act.apply(v));
    }
    y
}

/// Runs every layer of an in-memory model; returns the logits.
pub fn forward(layers: &[Layer], x: ArrayView2<f32>) -> Array2<f32> {
    let mut h = x.to_owned();
    for l in layers {
        h = layer_forward(l, h.view());
    }
    h
}

/// The prediction of each row of logits (spec section 16): the index of the largest value, the
/// first of equal maxima, and the first NaN when a row holds one (as `torch.argmax` and
/// `numpy.argmax` decide).
pub fn argmax_rows<S: ndarray::Data<Elem = f32>>(
    logits: &ndarray::ArrayBase<S, ndarray::Ix2>,
) -> Vec<usize> {
    logits
        .axis_iter(Axis(0))
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v.is_nan() {
                    return i;
                }
                if v > row[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}

/// Which file a forward pass reads its weights from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightPath {
    /// `ternary.safetensors` only: trits and scales, F32 passthrough tensors.
    Ternary,
    /// `fp16.safetensors` only.
    Fp16,
}

/// The values of tensor `name` as f32 read along `path` (the ternary path dequantizes
/// `t * scale` in f32 for quantized tensors, each row first checked for valid bytes and
/// canonical padding, rules 4.3 and 4.4: a caller that skipped the data checks gets an error
/// naming the tensor and row, never values decoded from invalid bytes).
pub fn tensor_f32(bundle: &Bundle, name: &str, path: WeightPath) -> Result<Vec<f32>> {
    match path {
        WeightPath::Fp16 => {
            let bytes = bundle
                .fp16_bytes(name)
                .ok_or_else(|| bundle.missing_tensor(FileRole::Fp16, name))?;
            let values = crate::format::le::f16s_to_f32(bytes);
            bundle.release(bytes);
            Ok(values)
        }
        WeightPath::Ternary => match bundle.packed(name) {
            Some(p) => {
                let scales = p.scales();
                let (_, group) = p.granularity.row_layout(p.cols);
                let mut out = vec![0f32; p.rows * p.cols];
                for (r, row) in out.chunks_exact_mut(p.cols).enumerate() {
                    let rs = p.granularity.row_scales(&scales, r, p.cols);
                    p.encoding
                        .validate_row(p.row(r), p.cols)
                        .and_then(|()| {
                            crate::quant::dequantize::dequantize_row_f32(
                                p.encoding,
                                p.row(r),
                                rs,
                                group,
                                row,
                            )
                        })
                        .map_err(|e| bundle.row_error(name, r, e))?;
                }
                bundle.release(p.packed);
                Ok(out)
            }
            None => {
                let b = bundle
                    .passthrough_bytes(name)
                    .ok_or_else(|| bundle.missing_tensor(FileRole::Ternary, name))?;
                let values = crate::format::le::f32s(b).collect();
                bundle.release(b);
                Ok(values)
            }
        },
    }
}

/// Builds layer `i` of the bundle's model from one file only.
pub fn bundle_layer(bundle: &Bundle, i: usize, path: WeightPath) -> Result<Layer> {
    let m = bundle.manifest();
    let spec = &m.model.layers[i];
    let (out, inp) = (spec.out_features as usize, spec.in_features as usize);
    let weight = bundle_weight(bundle, &spec.weight, (out, inp), path)?;
    // The bundle's shapes were validated at open: every tensor has the length the spec needs.
    let mut load = |name: &str, _len: usize| tensor_f32(bundle, name, path);
    layer_with(spec, bundle.facts().activations[i], weight, &mut load)
}

/// The matrix `name` (`[rows, cols]`) of the bundle as a weight along `path`: on the ternary path
/// a quantized matrix is its trits (unpacked on all threads) with its scales, applied after the
/// product; otherwise its f32 values.
pub fn bundle_weight(
    bundle: &Bundle,
    name: &str,
    (out, inp): (usize, usize),
    path: WeightPath,
) -> Result<LinearWeight> {
    Ok(match (path, bundle.packed(name)) {
        (WeightPath::Ternary, Some(p)) => {
            // Rows unpacked on all threads; then the packed pages leave the resident set.
            let mut trits = Array2::<f32>::zeros((out, inp));
            trits
                .as_slice_mut()
                .expect("standard layout")
                .par_chunks_mut(inp.max(1))
                .enumerate()
                .try_for_each(|(r, row)| {
                    p.encoding
                        .unpack_row_f32(p.row(r), row)
                        .map_err(|e| bundle.row_error(name, r, e))
                })?;
            bundle.release(p.packed);
            LinearWeight::ternary(trits, p.scales(), p.granularity).ok_or_else(|| {
                Violation::new(
                    bundle.ternary_file().path(),
                    Rule::TernaryShapes,
                    "scales of the granularity's shape",
                    format!("{} scales", p.scales().len()),
                )
                .tensor(name)
            })?
        }
        _ => LinearWeight::Dense(matrix(
            tensor_f32(bundle, name, path)?,
            (out, inp),
            name,
            bundle.dir(),
        )?),
    })
}

/// Loads tensor `name` as f32 values; it must hold `len` values (the loader checks).
pub type LoadF32<'a> = dyn FnMut(&str, usize) -> Result<Vec<f32>> + 'a;

/// The layer `spec` describes with `weight`, its bias and RMSNorm weight from `load`.
fn layer_with(
    spec: &LayerSpec,
    activation: Activation,
    weight: LinearWeight,
    load: &mut LoadF32<'_>,
) -> Result<Layer> {
    let (bias, rmsnorm) = layer_vectors(spec, load)?;
    Ok(Layer {
        weight,
        bias,
        rmsnorm,
        activation,
    })
}

/// The bias and the RMSNorm weight (with its epsilon) of layer `spec`, from `load`.
#[allow(clippy::type_complexity)]
fn layer_vectors(
    spec: &LayerSpec,
    load: &mut LoadF32<'_>,
) -> Result<(Option<Array1<f32>>, Option<(Array1<f32>, f32)>)> {
    let bias = match &spec.bias {
        Some(b) => Some(Array1::from_vec(load(b, spec.out_features as usize)?)),
        None => None,
    };
    let rmsnorm = match &spec.rmsnorm {
        Some(n) => Some((
            Array1::from_vec(load(&n.weight, spec.in_features as usize)?),
            n.eps,
        )),
        None => None,
    };
    Ok((bias, rmsnorm))
}

/// Layer `spec` of a model with real-valued weights from `source`: the original checkpoint
/// before quantization (the writer's source, or `verify --reference`). Every tensor must hold
/// exactly the values the layer needs; a mismatch is reported naming the source and tensor.
pub fn source_layer(
    source: &dyn TensorSource,
    spec: &LayerSpec,
    activation: Activation,
) -> Result<Layer> {
    let mut load = |name: &str, len: usize| -> Result<Vec<f32>> {
        let v = source.load_f32(name)?;
        if v.len() != len {
            return Err(Violation::new(
                source.path(),
                Rule::Model,
                format!("{len} values, as the model needs"),
                format!("{}", v.len()),
            )
            .tensor(name)
            .into());
        }
        Ok(v)
    };
    let (out, inp) = (spec.out_features as usize, spec.in_features as usize);
    let w = load(&spec.weight, out * inp)?;
    let weight = LinearWeight::Dense(matrix(w, (out, inp), &spec.weight, source.path())?);
    layer_with(spec, activation, weight, &mut load)
}

/// Runs `model` with weights from `source` on `x`, one layer in memory at a time.
pub fn forward_source(
    source: &dyn TensorSource,
    model: &ModelSpec,
    activations: &[Activation],
    x: ArrayView2<f32>,
) -> Result<Array2<f32>> {
    let mut h = x.to_owned();
    for (spec, &activation) in model.layers.iter().zip(activations) {
        h = layer_forward(&source_layer(source, spec, activation)?, h.view());
    }
    Ok(h)
}

/// Runs the bundle's model on `x` along `path`. A weight is converted to f32 a block of rows
/// at a time, inside the matrix product (its pages released after): memory is a few blocks
/// per thread, not a layer. Weights with per-group scales, and passthrough weights, are
/// converted whole ([`bundle_layer`]).
pub fn forward_bundle(
    bundle: &Bundle,
    path: WeightPath,
    x: ArrayView2<f32>,
) -> Result<Array2<f32>> {
    let mut h = x.to_owned();
    for i in 0..bundle.manifest().model.layers.len() {
        h = bundle_layer_forward(bundle, i, path, h.view())?;
    }
    Ok(h)
}

/// Rows of a weight block converted at once (16 MB of f32: wide enough that the product of a
/// block runs at the kernel's speed, small enough to stay near the cache).
fn rows_per_block(inp: usize) -> usize {
    ((1 << 22) / inp.max(1)).max(1)
}

/// A weight as the bundle stores it, converted to f32 a block of rows at a time.
pub(crate) enum Stored<'b> {
    /// F16 values (the FP16 path).
    Fp16(&'b [u8]),
    /// F32 values (a passthrough tensor on the ternary path).
    F32(&'b [u8]),
    /// Packed trits with per-tensor or per-channel scales (the ternary path).
    Packed(PackedTensor<'b>),
}

impl<'b> Stored<'b> {
    /// Matrix `name` of the bundle along `path`, as stored; `None` for trits with per-group
    /// scales (converted whole instead, [`bundle_weight`]).
    pub(crate) fn of(bundle: &'b Bundle, name: &str, path: WeightPath) -> Result<Option<Self>> {
        Ok(Some(match (path, bundle.packed(name)) {
            (WeightPath::Fp16, _) => Stored::Fp16(
                bundle
                    .fp16_bytes(name)
                    .ok_or_else(|| bundle.missing_tensor(FileRole::Fp16, name))?,
            ),
            (WeightPath::Ternary, Some(p)) if matches!(p.granularity, Granularity::Group(_)) => {
                return Ok(None)
            }
            (WeightPath::Ternary, Some(p)) => Stored::Packed(p),
            (WeightPath::Ternary, None) => Stored::F32(
                bundle
                    .passthrough_bytes(name)
                    .ok_or_else(|| bundle.missing_tensor(FileRole::Ternary, name))?,
            ),
        }))
    }

    /// Checks that the stored bytes hold `rows` rows of `cols` values (the bundle's shapes
    /// were validated at open, rules 2.7, 2.14, 4.1; this keeps every later slice in bounds).
    pub(crate) fn check(
        &self,
        bundle: &Bundle,
        name: &str,
        (rows, cols): (usize, usize),
    ) -> Result<()> {
        let (per_row, held) = match self {
            Stored::Fp16(b) => (cols.checked_mul(2), b.len()),
            Stored::F32(b) => (cols.checked_mul(4), b.len()),
            Stored::Packed(p) => (Some(p.bytes_per_row()), p.packed.len()),
        };
        if per_row.and_then(|r| r.checked_mul(rows)) != Some(held) {
            return Err(Violation::new(
                bundle.dir(),
                Rule::Model,
                format!("{rows} x {cols} values"),
                format!("{held} bytes"),
            )
            .tensor(name)
            .into());
        }
        Ok(())
    }

    /// Rows `r0..r1` (of `cols` values, [`Stored::check`]ed) into `out` as f32 (trits as
    /// -1, 0, +1: the scales are applied after the product), their pages released after.
    pub(crate) fn rows_into(
        &self,
        bundle: &Bundle,
        name: &str,
        (r0, r1): (usize, usize),
        cols: usize,
        out: &mut [f32],
    ) -> Result<()> {
        match self {
            Stored::Fp16(bytes) => {
                let b = &bytes[r0 * cols * 2..r1 * cols * 2];
                crate::format::le::f16s_into(b, out, |h, dst| h.convert_to_f32_slice(dst));
                bundle.release(b);
            }
            Stored::F32(bytes) => {
                let b = &bytes[r0 * cols * 4..r1 * cols * 4];
                out.iter_mut()
                    .zip(crate::format::le::f32s(b))
                    .for_each(|(v, f)| *v = f);
                bundle.release(b);
            }
            Stored::Packed(p) => {
                for (r, row) in (r0..r1).zip(out.chunks_exact_mut(cols.max(1))) {
                    p.encoding
                        .unpack_row_f32(p.row(r), row)
                        .map_err(|e| bundle.row_error(name, r, e))?;
                }
                let per_row = p.bytes_per_row();
                bundle.release(&p.packed[r0 * per_row..r1 * per_row]);
            }
        }
        Ok(())
    }
}

/// `x W^T` for the matrix `name` (`[out, inp]`) of the bundle along `path`, W converted to f32 a
/// block of rows at a time inside the product, on all threads, each block's pages released
/// after: memory is a few blocks per thread, not the matrix. On the ternary path a packed matrix
/// is multiplied as trits and its scales applied after the product; trits with per-group
/// scales are converted whole ([`bundle_weight`]).
pub fn bundle_linear(
    bundle: &Bundle,
    name: &str,
    (out, inp): (usize, usize),
    path: WeightPath,
    x: ArrayView2<f32>,
) -> Result<Array2<f32>> {
    let Some(stored) = Stored::of(bundle, name, path)? else {
        return Ok(linear(x, &bundle_weight(bundle, name, (out, inp), path)?));
    };
    stored.check(bundle, name, (out, inp))?;
    // A row that fails to decode is kept and returned once the product is done.
    let failed = std::sync::Mutex::new(None);
    let mut y = dot_t_blocks(x, out, rows_per_block(inp), |r0, r1| {
        let mut block = Array2::<f32>::zeros((r1 - r0, inp));
        let values = block.as_slice_mut().expect("standard layout");
        if let Err(e) = stored.rows_into(bundle, name, (r0, r1), inp, values) {
            failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e);
        }
        CowArray::from(block)
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    if let Stored::Packed(p) = &stored {
        // Scales after the product: one per output channel, or one for the tensor.
        let scales = p.scales();
        match p.granularity {
            Granularity::Channel => y *= &ArrayView1::from(&scales[..]),
            _ => y *= scales.first().copied().unwrap_or(1.0),
        }
    }
    Ok(y)
}

/// Layer `i` of the bundle along `path` on `x`, its weight converted block by block
/// ([`bundle_linear`]); a weight with per-group scales, or a passthrough weight on the ternary
/// path, is converted whole ([`bundle_layer`]).
fn bundle_layer_forward(
    bundle: &Bundle,
    i: usize,
    path: WeightPath,
    x: ArrayView2<f32>,
) -> Result<Array2<f32>> {
    let spec = &bundle.manifest().model.layers[i];
    let (out, inp) = (spec.out_features as usize, spec.in_features as usize);
    let streamed = match path {
        WeightPath::Fp16 => true,
        WeightPath::Ternary => bundle
            .packed(&spec.weight)
            .is_some_and(|p| !matches!(p.granularity, Granularity::Group(_))),
    };
    if !streamed {
        return Ok(layer_forward(&bundle_layer(bundle, i, path)?, x));
    }
    // The bundle's shapes were validated at open: every tensor has the length the spec needs.
    let (bias, rmsnorm) = layer_vectors(spec, &mut |name: &str, _len: usize| {
        tensor_f32(bundle, name, path)
    })?;
    let activation = bundle.facts().activations[i];
    let mut failed = None;
    let y = affine_forward(rmsnorm.as_ref(), bias.as_ref(), activation, x, |input| {
        bundle_linear(bundle, &spec.weight, (out, inp), path, input).unwrap_or_else(|e| {
            failed = Some(e);
            Array2::zeros((input.nrows(), out))
        })
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn layer_applies_norm_affine_and_activation() {
        let layer = Layer {
            weight: LinearWeight::Dense(array![[1.0, -1.0], [0.5, 0.5]]),
            bias: Some(array![0.0, -10.0]),
            rmsnorm: None,
            activation: Activation::Relu,
        };
        let y = layer_forward(&layer, array![[3.0, 1.0]].view());
        assert_eq!(y, array![[2.0, 0.0]]);
        let mut x = array![[3.0f32, 4.0]];
        rmsnorm(&mut x, &array![1.0, 2.0], 0.0);
        let r = (12.5f32).sqrt();
        assert!((x[[0, 0]] - 3.0 / r).abs() < 1e-6 && (x[[0, 1]] - 8.0 / r).abs() < 1e-6);
        assert_eq!(
            argmax_rows(&array![
                [1.0, 3.0, 3.0],
                [f32::NAN, 0.0, -1.0],
                [0.0, 2.0, f32::NAN]
            ]),
            vec![1, 0, 2]
        );
    }

    #[test]
    fn ternary_matmul_with_scales_after_equals_dense_matmul() {
        let x = array![[1.0f32, -2.0, 0.5, 3.0, 1.5]];
        let trits = array![[1.0f32, 0.0, -1.0, 1.0, -1.0], [0.0, 1.0, 1.0, -1.0, 0.0]];
        for (granularity, scales) in [
            (Granularity::Tensor, vec![0.5]),
            (Granularity::Channel, vec![0.5, 2.0]),
            (Granularity::Group(2), vec![0.5, 1.0, 2.0, 4.0, 0.25, 8.0]),
        ] {
            assert_ternary_is_dense(x.view(), &trits, scales, granularity, 1e-5);
        }
    }

    /// The ternary product (scales applied after, or folded for small groups) equals the
    /// product with the dense scaled matrix, within `tol`.
    fn assert_ternary_is_dense(
        x: ArrayView2<'_, f32>,
        trits: &Array2<f32>,
        scales: Vec<f32>,
        granularity: Granularity,
        tol: f32,
    ) {
        let (rows, cols) = trits.dim();
        let group = granularity.row_layout(cols).1;
        let mut dense = trits.clone();
        for r in 0..rows {
            let rs = granularity.row_scales(&scales, r, cols);
            for c in 0..cols {
                dense[[r, c]] *= rs[c / group];
            }
        }
        let t = linear(
            x,
            &LinearWeight::ternary(trits.clone(), scales, granularity).unwrap(),
        );
        let d = linear(x, &LinearWeight::Dense(dense));
        assert!(
            (&t - &d).iter().all(|v| v.abs() < tol),
            "{granularity:?}: {t} vs {d}"
        );
    }

    #[test]
    fn large_and_small_groups_give_the_same_product() {
        let cols = 70;
        let x = Array2::from_shape_fn((3, cols), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let trits = Array2::from_shape_fn((4, cols), |(i, j)| ((i + 2 * j) % 3) as f32 - 1.0);
        for g in [SMALL_GROUP + 3, 5] {
            let granularity = Granularity::Group(g as u64);
            let (per_row, _) = granularity.row_layout(cols);
            let scales: Vec<f32> = (0..4 * per_row).map(|k| 0.25 + k as f32 / 8.0).collect();
            assert_ternary_is_dense(x.view(), &trits, scales, granularity, 1e-3);
        }
    }
}
