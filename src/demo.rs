//! The built-in demo: a seeded MLP sized like the handoff that motivated the project
//! (512 -> 4096 -> 4096 -> 1536 -> 100, ReLU, biases, about 25 M parameters), quantized per
//! channel to `trit5`, with a validation set labelled by the full-precision model.
//!
//! Weights are generated on demand, tensor by tensor, from ChaCha8 streams (one stream per
//! tensor), so the demo is reproducible on every machine and never holds the whole model.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use ndarray_rand::rand::SeedableRng;
use ndarray_rand::rand_distr::{StandardNormal, Uniform};
use ndarray_rand::RandomExt;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::manifest::{LayerSpec, ModelSpec};
use crate::model::Activation;
use crate::quantize::QuantParams;
use crate::reference::{argmax_rows, forward, Layer, LinearWeight};
use crate::safetensors_file::Dtype;
use crate::source::{SourceTensor, TensorSource};
use crate::writer::{BundlePlan, ValidationSet};

/// Layer widths of the demo model: input, hidden..., classes.
pub const DEMO_WIDTHS: [u64; 5] = [512, 4096, 4096, 1536, 100];
/// Default seed of `bundle create --demo`.
pub const DEFAULT_SEED: u64 = 20_241_158;
/// Samples in the demo's validation set.
pub const DEMO_SAMPLES: u64 = 256;

/// The demo model's weights, generated on demand.
#[derive(Debug, Clone)]
pub struct DemoSource {
    seed: u64,
    widths: Vec<u64>,
    label: PathBuf,
}

impl DemoSource {
    /// The demo model with `seed`.
    pub fn new(seed: u64) -> Self {
        DemoSource::with_widths(seed, &DEMO_WIDTHS)
    }

    /// A demo-style model with other widths (tests and benchmarks use small or huge ones).
    pub fn with_widths(seed: u64, widths: &[u64]) -> Self {
        DemoSource {
            seed,
            widths: widths.to_vec(),
            label: PathBuf::from(format!("<demo seed {seed}>")),
        }
    }

    fn layer_names(i: usize) -> (String, String) {
        (format!("layers.{i}.weight"), format!("layers.{i}.bias"))
    }

    /// The architecture: ReLU after every layer but the last.
    pub fn model(&self) -> ModelSpec {
        let n = self.widths.len() - 1;
        ModelSpec {
            input_dim: self.widths[0],
            layers: (0..n)
                .map(|i| {
                    let (w, b) = DemoSource::layer_names(i);
                    LayerSpec {
                        name: format!("layers.{i}"),
                        weight: w,
                        bias: Some(b),
                        in_features: self.widths[i],
                        out_features: self.widths[i + 1],
                        activation: if i + 1 == n {
                            Activation::Identity
                        } else {
                            Activation::Relu
                        }
                        .name()
                        .into(),
                        rmsnorm: None,
                    }
                })
                .collect(),
        }
    }

    /// The plan: every layer weight quantized with `params`.
    pub fn plan(&self, params: QuantParams) -> BundlePlan {
        let n = self.widths.len() - 1;
        BundlePlan {
            model: self.model(),
            params,
            quantize: (0..n)
                .map(|i| DemoSource::layer_names(i).0)
                .collect::<BTreeSet<_>>(),
        }
    }

    /// Stream index of a tensor: weights 2i, biases 2i + 1, validation inputs last.
    fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }

    fn generate(&self, layer: usize, bias: bool) -> Vec<f32> {
        let (fan_in, out) = (self.widths[layer] as usize, self.widths[layer + 1] as usize);
        // PyTorch's nn.Linear default initialization range: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        let bound = 1.0 / (fan_in as f32).sqrt();
        let dist = Uniform::new(-bound, bound).expect("bound > 0");
        let mut rng = self.rng(2 * layer as u64 + bias as u64);
        if bias {
            Array1::random_using(out, dist, &mut rng)
                .into_raw_vec_and_offset()
                .0
        } else {
            Array2::random_using((out, fan_in), dist, &mut rng)
                .into_raw_vec_and_offset()
                .0
        }
    }

    /// The full-precision model as reference-model layers (holds every weight in f32).
    pub fn dense_layers(&self) -> Vec<Layer> {
        let n = self.widths.len() - 1;
        (0..n)
            .map(|i| {
                let (fan_in, out) = (self.widths[i] as usize, self.widths[i + 1] as usize);
                Layer {
                    weight: LinearWeight::Dense(
                        Array2::from_shape_vec((out, fan_in), self.generate(i, false))
                            .expect("shape"),
                    ),
                    bias: Some(Array1::from_vec(self.generate(i, true))),
                    rmsnorm: None,
                    activation: if i + 1 == n {
                        Activation::Identity
                    } else {
                        Activation::Relu
                    },
                }
            })
            .collect()
    }

    /// `samples` standard-normal inputs labelled with the full-precision model's predictions,
    /// and a difficulty (1..=10) from the teacher's margin between its top two logits.
    pub fn validation_set(&self, samples: u64) -> ValidationSet {
        let d = self.widths[0] as usize;
        let mut rng = self.rng(u64::MAX);
        let inputs = Array2::<f32>::random_using((samples as usize, d), StandardNormal, &mut rng);
        let logits = forward(&self.dense_layers(), inputs.view());
        let labels: Vec<i64> = argmax_rows(&logits).into_iter().map(|c| c as i64).collect();
        let difficulty = logits
            .rows()
            .into_iter()
            .map(|row| {
                let mut v: Vec<f32> = row.to_vec();
                v.sort_by(|a, b| b.total_cmp(a));
                let margin = v.first().copied().unwrap_or(0.0) - v.get(1).copied().unwrap_or(0.0);
                // Small margins are hard: 10 for a near tie, 1 for a margin of 0.9 or more.
                (10.0 - (margin * 10.0).floor()).clamp(1.0, 10.0) as u8
            })
            .collect();
        ValidationSet {
            origin: self.label.clone(),
            inputs: inputs.into_raw_vec_and_offset().0,
            labels,
            difficulty: Some(difficulty),
        }
    }
}

impl TensorSource for DemoSource {
    fn path(&self) -> &Path {
        &self.label
    }

    fn tensors(&self) -> Vec<SourceTensor> {
        let mut out = Vec::new();
        for i in 0..self.widths.len() - 1 {
            let (w, b) = DemoSource::layer_names(i);
            out.push(SourceTensor {
                name: w,
                shape: vec![self.widths[i + 1], self.widths[i]],
                dtype: Dtype::F32,
            });
            out.push(SourceTensor {
                name: b,
                shape: vec![self.widths[i + 1]],
                dtype: Dtype::F32,
            });
        }
        out
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        for i in 0..self.widths.len() - 1 {
            let (w, b) = DemoSource::layer_names(i);
            if name == w {
                return Ok(self.generate(i, false));
            }
            if name == b {
                return Ok(self.generate(i, true));
            }
        }
        Err(Error::InvalidArgument(format!(
            "the demo model has no tensor {name}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_reproducible_and_seed_dependent() {
        let a = DemoSource::with_widths(1, &[8, 6, 3]);
        let b = DemoSource::with_widths(1, &[8, 6, 3]);
        let c = DemoSource::with_widths(2, &[8, 6, 3]);
        assert_eq!(
            a.load_f32("layers.0.weight").unwrap(),
            b.load_f32("layers.0.weight").unwrap()
        );
        assert_ne!(
            a.load_f32("layers.0.weight").unwrap(),
            c.load_f32("layers.0.weight").unwrap()
        );
        assert_ne!(
            a.load_f32("layers.0.weight").unwrap()[..6],
            a.load_f32("layers.1.weight").unwrap()[..6]
        );
        let v = a.validation_set(4);
        assert_eq!(v.inputs.len(), 32);
        assert!(v.labels.iter().all(|&l| (0..3).contains(&l)));
    }

    #[test]
    fn demo_has_about_25m_parameters() {
        let n: u64 = DemoSource::new(0)
            .tensors()
            .iter()
            .map(|t| t.shape.iter().product::<u64>())
            .sum();
        assert!((24_000_000..26_000_000).contains(&n), "{n}");
    }
}
