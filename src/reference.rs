//! The reference model (spec section "Reference model semantics"): a chain of linear layers
//! `y = act(W . norm(x) + b)` run with ndarray in f32.
//!
//! This module owns the forward pass only; which weights it runs (the ternary path decoded from
//! trits and scales, or the FP16 path) is decided by the caller.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::model::Activation;

/// One layer's weights, in f32.
#[derive(Debug, Clone)]
pub struct DenseLayer {
    /// `[out_features, in_features]`.
    pub weight: Array2<f32>,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Array1<f32>>,
    /// RMSNorm weight `[in_features]` and epsilon, if the layer normalizes its input.
    pub rmsnorm: Option<(Array1<f32>, f32)>,
    /// Activation after the affine map.
    pub activation: Activation,
}

/// Applies `act` elementwise.
pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => 0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2)),
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Identity => x,
    }
}

/// The error function (Abramowitz-Stegun 7.1.26 refined; |error| < 1.2e-7), enough for f32.
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    // Numerical Recipes erfc approximation, fractional error < 1.2e-7.
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    (if x >= 0.0 { 1.0 - r } else { r - 1.0 }) as f32
}

/// RMSNorm of each row: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rmsnorm(x: &mut Array2<f32>, weight: &Array1<f32>, eps: f32) {
    for mut row in x.axis_iter_mut(Axis(0)) {
        let ms =
            row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / row.len().max(1) as f64;
        let inv = 1.0 / ((ms + eps as f64).sqrt()) as f32;
        row.zip_mut_with(weight, |v, &w| *v = *v * inv * w);
    }
}

/// Runs one layer on a batch `[n, in_features]`.
pub fn layer_forward(layer: &DenseLayer, x: ArrayView2<f32>) -> Array2<f32> {
    let normed;
    let input = match &layer.rmsnorm {
        Some((w, eps)) => {
            let mut y = x.to_owned();
            rmsnorm(&mut y, w, *eps);
            normed = y;
            normed.view()
        }
        None => x,
    };
    let mut y = input.dot(&layer.weight.t());
    if let Some(b) = &layer.bias {
        y += b;
    }
    let act = layer.activation;
    if act != Activation::Identity {
        y.mapv_inplace(|v| activate(act, v));
    }
    y
}

/// Runs every layer; returns the logits `[n, out_features of the last layer]`.
pub fn forward(layers: &[DenseLayer], x: ArrayView2<f32>) -> Array2<f32> {
    let mut h = x.to_owned();
    for l in layers {
        h = layer_forward(l, h.view());
    }
    h
}

/// Index of the largest value of each row (the first on ties; NaN never wins).
pub fn argmax_rows(logits: &Array2<f32>) -> Vec<usize> {
    logits
        .axis_iter(Axis(0))
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] || row[best].is_nan() && !v.is_nan() {
                    best = i;
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-6,
                "erf({x}) = {} != {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn layer_applies_norm_affine_and_activation() {
        let layer = DenseLayer {
            weight: array![[1.0, -1.0], [0.5, 0.5]],
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
            argmax_rows(&array![[1.0, 3.0, 3.0], [f32::NAN, 0.0, -1.0]]),
            vec![1, 1]
        );
    }
}
