//! The built-in demo: a model shaped like the handoff that motivated the project
//! (512 -> 4096 -> 4096 -> 1536 -> 100, ReLU, 25,329,252 parameters) that solves a task, so that
//! its accuracy, and what quantization does to it, mean something. Everything is generated from
//! ChaCha8 streams of one seed, so the demo is the same on every machine.
//!
//! The task: 100 classes, each a *prototype* signal drawn from a standard normal in R^512; an
//! example of class c is its prototype plus Gaussian noise, and the label is c (the ground
//! truth, not any model's opinion). Difficulty 1..10 is the noise level: the validation set
//! holds every class once at every level.
//!
//! The model is what quantization-aware training leaves behind, built instead of trained:
//! - the hidden layers are random ternary features: each row has exactly `2 * floor(fan_in / 3)`
//!   non-zero trits, half +1 and half -1, at random positions;
//! - the last layer reads the classes out: row c holds +1 on the 512 features where prototype c
//!   is most above the mean of all prototypes (through the hidden layers) and -1 on the 512
//!   where it is most below (a nearest-prototype classifier);
//! - the *original* (pre-quantization) weights are latent QAT weights: each trit times a
//!   magnitude, plus a small perturbation that stays on the trit's side of the threshold
//!   (non-zero trits `m * t * (1 + u)`, zero trits `m * u`, u uniform in ±[`PERTURBATION`]), so
//!   quantizing them gives back exactly these trits, and the FP16 model differs from the
//!   original by the perturbations (and the absmean scale);
//! - biases are zero: the network is then positively homogeneous, so the absmean scale (the
//!   mean |w| of a row, 2/3 of its non-zero magnitude) rescales every layer's outputs alike and
//!   does not move any decision; only the perturbations do.
//!
//! Weights are generated tensor by tensor on demand; the readout needs one forward pass of the
//! 100 prototypes through the hidden layers (one layer in memory at a time), done once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::{Array2, Axis};
use ndarray_rand::rand::{Rng, SeedableRng};
use ndarray_rand::rand_distr::StandardNormal;
use ndarray_rand::RandomExt;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::format::activation::Activation;
use crate::format::manifest::{LayerSpec, ModelSpec};
use crate::format::quantization::QuantParams;
use crate::format::safetensors::Dtype;
use crate::model::reference::{layer_forward, Layer, LinearWeight};
use crate::source::ValidationSet;
use crate::source::{SourceTensor, TensorSource};
use crate::write::plan::BundlePlan;

/// Layer widths of the demo model: input, hidden..., classes.
pub const DEMO_WIDTHS: [u64; 5] = [512, 4096, 4096, 1536, 100];
/// Default seed of `bundle create --demo`.
pub const DEFAULT_SEED: u64 = 20_241_158;
/// Difficulty levels of the demo's validation set.
pub const LEVELS: u8 = 10;
/// Samples in the demo's validation set: every class once at every level.
pub const DEMO_SAMPLES: u64 = 100 * LEVELS as u64;
/// Scale of the noise added to a prototype at difficulty 1..=10 (prototypes and noise have
/// standard deviation 1 per coordinate). Measured on this construction, the FP16 model's
/// accuracy falls from about 99% at level 1 to about 36% at level 10, crossing the 70-80% zone
/// around levels 6 to 8 (for the default seed: 99, 97, 92, 88, 86, 80, 75, 68, 59, 40%).
pub const LEVEL_NOISE: [f32; LEVELS as usize] =
    [2.5, 2.95, 3.12, 3.32, 3.55, 3.7, 3.85, 4.2, 4.65, 5.8];
/// Relative size of the latent weights' perturbation (see the module documentation): small
/// enough that the FP16 model keeps more than 99.5% of the original's decisions, large enough
/// that it does not keep all of them.
pub const PERTURBATION: f32 = 0.002;

/// How the last layer is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readout {
    /// From the class prototypes (the demo's task).
    Task,
    /// Random balanced trits, like the hidden layers: a model of any size without the forward
    /// pass the task readout needs (benchmarks).
    Random,
}

/// The demo model's weights, generated on demand.
#[derive(Debug, Clone)]
pub struct DemoSource {
    seed: u64,
    widths: Vec<u64>,
    label: PathBuf,
    readout: Readout,
    /// The last layer's latent weights, once computed (the task readout is a forward pass).
    last: OnceLock<Vec<f32>>,
}

/// ChaCha8 stream of each generated quantity: layer i's weights use stream i.
const PROTOTYPE_STREAM: u64 = u64::MAX - 1;
const NOISE_STREAM: u64 = u64::MAX;

impl DemoSource {
    /// The demo model with `seed`.
    pub fn new(seed: u64) -> Self {
        DemoSource::with_widths(seed, &DEMO_WIDTHS)
    }

    /// A model built the same way with other widths (tests use small ones). `widths` holds at
    /// least two widths >= 1.
    pub fn with_widths(seed: u64, widths: &[u64]) -> Self {
        DemoSource {
            seed,
            widths: widths.to_vec(),
            label: PathBuf::from(format!("<demo seed {seed}>")),
            readout: Readout::Task,
            last: OnceLock::new(),
        }
    }

    /// The same model with a random last layer instead of the task's readout: no forward pass
    /// at build time, so any size can be generated quickly (the benchmarks' large bundles). Its
    /// predictions mean nothing; it has no validation set.
    pub fn with_random_readout(mut self) -> Self {
        self.readout = Readout::Random;
        self
    }

    fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    fn layer_names(i: usize) -> (String, String) {
        (format!("layers.{i}.weight"), format!("layers.{i}.bias"))
    }

    fn activation(&self, i: usize) -> Activation {
        if i + 1 == self.layers() {
            Activation::Identity
        } else {
            Activation::Relu
        }
    }

    /// The architecture: ReLU after every layer but the last.
    pub fn model(&self) -> ModelSpec {
        ModelSpec {
            input_dim: self.widths[0],
            layers: (0..self.layers())
                .map(|i| {
                    let (w, b) = DemoSource::layer_names(i);
                    LayerSpec {
                        name: format!("layers.{i}"),
                        weight: w,
                        bias: Some(b),
                        in_features: self.widths[i],
                        out_features: self.widths[i + 1],
                        activation: self.activation(i).name().into(),
                        rmsnorm: None,
                    }
                })
                .collect(),
            decoder: None,
        }
    }

    /// The plan: every layer weight quantized with `params`.
    pub fn plan(&self, params: QuantParams) -> BundlePlan {
        BundlePlan {
            model: self.model(),
            params,
            quantize: (0..self.layers())
                .map(|i| DemoSource::layer_names(i).0)
                .collect::<BTreeSet<_>>(),
            given: None,
        }
    }

    fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }

    /// Non-zero trits per row of a layer with `fan_in` inputs: two thirds, an even number.
    fn nonzeros(fan_in: usize) -> usize {
        2 * (fan_in / 3)
    }

    /// Latent weights of layer `i`, `[out, in]` row-major.
    fn weight(&self, i: usize) -> Vec<f32> {
        if i + 1 == self.layers() && self.readout == Readout::Task {
            return self.last.get_or_init(|| self.task_readout()).clone();
        }
        let (fan_in, out) = (self.widths[i] as usize, self.widths[i + 1] as usize);
        let k = DemoSource::nonzeros(fan_in);
        let mut rng = self.rng(i as u64);
        let mut trits = vec![0i8; out * fan_in];
        let mut positions: Vec<usize> = (0..fan_in).collect();
        for row in trits.chunks_exact_mut(fan_in) {
            // The first k places of a partial Fisher-Yates shuffle: half +1, half -1.
            for j in 0..k {
                let pick = rng.random_range(j..fan_in);
                positions.swap(j, pick);
                row[positions[j]] = if j < k / 2 { 1 } else { -1 };
            }
        }
        self.latent(&trits, fan_in, &mut rng)
    }

    /// Latent QAT weights for `trits` (rows of `fan_in`): `m * t * (1 + u)` for non-zero trits,
    /// `m * u` for zeros, u uniform in ±PERTURBATION, m such that a row keeps the input's scale
    /// through a ReLU (He initialization over the row's non-zero trits).
    fn latent(&self, trits: &[i8], fan_in: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let k = DemoSource::nonzeros(fan_in).max(1) as f32;
        let m = (2.0 / k).sqrt();
        trits
            .iter()
            .map(|&t| {
                let u = rng.random_range(-PERTURBATION..=PERTURBATION);
                if t == 0 {
                    m * u
                } else {
                    m * f32::from(t) * (1.0 + u)
                }
            })
            .collect()
    }

    /// The class prototypes, `[classes, input_dim]`.
    fn prototypes(&self) -> Array2<f32> {
        let (classes, d) = (self.widths[self.layers()] as usize, self.widths[0] as usize);
        Array2::random_using(
            (classes, d),
            StandardNormal,
            &mut self.rng(PROTOTYPE_STREAM),
        )
    }

    /// The task's last layer: row c is +1 where prototype c's features are highest above the
    /// mean over prototypes, -1 where lowest (k/2 each, ties to the lower index), 0 elsewhere.
    fn task_readout(&self) -> Vec<f32> {
        let last = self.layers() - 1;
        let mut h = self.prototypes();
        for i in 0..last {
            h = layer_forward(&self.dense_layer(i), h.view());
        }
        let mean = h.mean_axis(Axis(0)).expect("at least one class");
        let fan_in = self.widths[last] as usize;
        let k = DemoSource::nonzeros(fan_in);
        let mut trits = vec![0i8; h.nrows() * fan_in];
        for (row, features) in trits.chunks_exact_mut(fan_in).zip(h.rows()) {
            let mut order: Vec<usize> = (0..fan_in).collect();
            let centred: Vec<f32> = features.iter().zip(&mean).map(|(v, m)| v - m).collect();
            order.sort_by(|&a, &b| centred[b].total_cmp(&centred[a]).then(a.cmp(&b)));
            for &j in &order[..k / 2] {
                row[j] = 1;
            }
            for &j in &order[fan_in - k / 2..] {
                row[j] = -1;
            }
        }
        self.latent(&trits, fan_in, &mut self.rng(last as u64))
    }

    /// Layer `i` of the original model for the reference model.
    fn dense_layer(&self, i: usize) -> Layer {
        let (fan_in, out) = (self.widths[i] as usize, self.widths[i + 1] as usize);
        Layer {
            weight: LinearWeight::Dense(
                Array2::from_shape_vec((out, fan_in), self.weight(i)).expect("out x in values"),
            ),
            bias: None,
            rmsnorm: None,
            activation: self.activation(i),
        }
    }

    /// The validation set: `LEVELS * classes` examples; example i has difficulty
    /// `i % LEVELS + 1` and class `i / LEVELS`, and its input is the class prototype plus
    /// [`LEVEL_NOISE`] of its level times a standard normal noise vector drawn once per class.
    /// So the ten examples of a class lie on one ray from its prototype, further out at higher
    /// levels: difficulty orders them. Labels are the classes.
    pub fn validation_set(&self) -> ValidationSet {
        let prototypes = self.prototypes();
        let (classes, d) = prototypes.dim();
        let mut rng = self.rng(NOISE_STREAM);
        let n = classes * LEVELS as usize;
        let mut inputs = Vec::with_capacity(n * d);
        let (mut labels, mut difficulty) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut noise = vec![0f32; d];
        for i in 0..n {
            let (level, class) = (i % LEVELS as usize, i / LEVELS as usize);
            let sigma = LEVEL_NOISE[level];
            if level == 0 {
                noise
                    .iter_mut()
                    .for_each(|v| *v = rng.sample::<f32, _>(StandardNormal));
            }
            inputs.extend(
                prototypes
                    .row(class)
                    .iter()
                    .zip(&noise)
                    .map(|(&p, &e)| p + sigma * e),
            );
            labels.push(class as i64);
            difficulty.push(level as u8 + 1);
        }
        ValidationSet {
            input_ids: None,
            origin: self.label.clone(),
            inputs,
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
        for i in 0..self.layers() {
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
        for i in 0..self.layers() {
            let (w, b) = DemoSource::layer_names(i);
            if name == w {
                return Ok(self.weight(i));
            }
            if name == b {
                return Ok(vec![0.0; self.widths[i + 1] as usize]);
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
    use crate::model::reference::{argmax_rows, forward};
    use crate::quant::quantize::quantize;

    #[test]
    fn demo_is_reproducible_and_seed_dependent() {
        let a = DemoSource::with_widths(1, &[8, 6, 3]);
        let b = DemoSource::with_widths(1, &[8, 6, 3]);
        let c = DemoSource::with_widths(2, &[8, 6, 3]);
        let w = |s: &DemoSource, n| s.load_f32(n).unwrap();
        assert_eq!(w(&a, "layers.0.weight"), w(&b, "layers.0.weight"));
        assert_eq!(w(&a, "layers.1.weight"), w(&b, "layers.1.weight"));
        assert_ne!(w(&a, "layers.0.weight"), w(&c, "layers.0.weight"));
        assert_eq!(a.validation_set(), b.validation_set());
        assert_ne!(a.validation_set().inputs, c.validation_set().inputs);
    }

    #[test]
    fn demo_has_the_seed_documents_parameter_count() {
        let n: u64 = DemoSource::new(0)
            .tensors()
            .iter()
            .map(|t| t.shape.iter().product::<u64>())
            .sum();
        assert_eq!(n, 25_329_252);
    }

    #[test]
    fn latent_weights_quantize_back_to_balanced_rows_of_their_trits() {
        let demo = DemoSource::with_widths(5, &[30, 24, 12, 4]);
        for i in 0..3 {
            let (fan_in, out) = (demo.widths[i], demo.widths[i + 1]);
            let w = demo.load_f32(&format!("layers.{i}.weight")).unwrap();
            let q = quantize(&w, &[out, fan_in], &QuantParams::default()).unwrap();
            let mut trits = vec![0i8; fan_in as usize];
            let bpr = q.packed.len() / out as usize;
            for (r, row) in q.packed.chunks_exact(bpr).enumerate() {
                QuantParams::default()
                    .encoding
                    .unpack_row(row, &mut trits)
                    .unwrap();
                // Exactly 2 * floor(fan_in / 3) non-zero trits, half of each sign, each the sign
                // of its latent weight; zeros where the latent weight is tiny.
                let k = DemoSource::nonzeros(fan_in as usize);
                assert_eq!(trits.iter().filter(|&&t| t == 1).count(), k / 2, "row {r}");
                assert_eq!(trits.iter().filter(|&&t| t == -1).count(), k / 2, "row {r}");
                for (c, &t) in trits.iter().enumerate() {
                    let v = w[r * fan_in as usize + c];
                    assert_eq!(t == 0, v.abs() < 0.01, "layer {i} row {r} col {c}: {v}");
                    assert!(t == 0 || (v > 0.0) == (t > 0));
                }
            }
        }
    }

    #[test]
    fn validation_set_has_every_class_at_every_level() {
        let demo = DemoSource::with_widths(3, &[8, 6, 5]);
        let v = demo.validation_set();
        assert_eq!(v.labels.len(), 5 * LEVELS as usize);
        assert_eq!(v.inputs.len(), 8 * v.labels.len());
        let d = v.difficulty.as_ref().unwrap();
        for level in 1..=LEVELS {
            let mut classes: Vec<i64> = (0..v.labels.len())
                .filter(|&i| d[i] == level)
                .map(|i| v.labels[i])
                .collect();
            classes.sort();
            assert_eq!(classes, (0..5).collect::<Vec<_>>(), "level {level}");
        }
    }

    #[test]
    fn the_task_readout_classifies_the_prototypes_themselves() {
        // With no noise every prototype is recognised: the readout implements the task.
        let demo = DemoSource::with_widths(11, &[64, 256, 128, 10]);
        let layers: Vec<Layer> = (0..3).map(|i| demo.dense_layer(i)).collect();
        let predicted = argmax_rows(&forward(&layers, demo.prototypes().view()));
        assert_eq!(predicted, (0..10).collect::<Vec<_>>());
        // A random readout does not implement it.
        let random = DemoSource::with_widths(11, &[64, 256, 128, 10]).with_random_readout();
        let layers: Vec<Layer> = (0..3).map(|i| random.dense_layer(i)).collect();
        let predicted = argmax_rows(&forward(&layers, random.prototypes().view()));
        assert_ne!(predicted, (0..10).collect::<Vec<_>>());
    }
}
