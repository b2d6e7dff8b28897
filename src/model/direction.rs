//! Random directions over all parameters for the gradient check: deterministic values from a
//! seed, rank-1 for weight matrices.

use rayon::prelude::*;

use crate::model::model64::{Param, ParamShape, SINK_CHUNK};

/// A deterministic value in [-1, 1) for element `index` of parameter `param` of direction
/// `seed` (splitmix64).
pub(crate) fn direction_value(seed: u64, param: usize, index: usize) -> f64 {
    let mut z = seed
        ^ (param as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// One parameter tensor's part of a [`Direction`].
pub(crate) enum DirPart {
    /// A weight matrix's part: entry (r, c) is `a[r] * b[c]`.
    Matrix {
        /// One value per row.
        a: Vec<f64>,
        /// One value per column.
        b: Vec<f64>,
    },
    /// A vector parameter's part.
    Vector(Vec<f64>),
}

/// A random direction over all parameters: for a weight matrix the outer product of two
/// random vectors, for a bias or norm weight a random vector; every value uniform in [-1, 1)
/// from splitmix64 of the seed. Every parameter moves, and a wrong gradient is missed only if
/// its error is orthogonal to the direction (probability zero for a random one).
pub(crate) struct Direction {
    pub(crate) parts: Vec<DirPart>,
    /// Euclidean norm over all parameters.
    pub(crate) norm: f64,
}

impl Direction {
    /// The direction of `seed` over `params`.
    pub(crate) fn new(seed: u64, params: &[Param]) -> Direction {
        let values = |param: usize, from: usize, n: usize| -> Vec<f64> {
            (from..from + n)
                .map(|i| direction_value(seed, param, i))
                .collect()
        };
        let sq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
        let mut norm_sq = 0.0;
        let parts = params
            .iter()
            .enumerate()
            .map(|(p, param)| match param.shape {
                ParamShape::Matrix { rows, cols } => {
                    let (a, b) = (values(p, 0, rows), values(p, rows, cols));
                    norm_sq += sq(&a) * sq(&b);
                    DirPart::Matrix { a, b }
                }
                ParamShape::Vector(n) => {
                    let d = values(p, 0, n);
                    norm_sq += sq(&d);
                    DirPart::Vector(d)
                }
            })
            .collect();
        Direction {
            parts,
            norm: norm_sq.sqrt(),
        }
    }

    /// The dot product of entries `offset..offset + g.len()` of parameter `param` with `g`.
    pub(crate) fn dot(&self, param: usize, offset: usize, g: &[f64]) -> f64 {
        // Chunks on all threads, added up in order (the same sum on every run).
        let parts: Vec<f64> = g
            .par_chunks(SINK_CHUNK)
            .enumerate()
            .map(|(i, chunk)| self.dot_serial(param, offset + i * SINK_CHUNK, chunk))
            .collect();
        parts.iter().sum()
    }

    /// [`Direction::dot`] on the calling thread.
    fn dot_serial(&self, param: usize, offset: usize, g: &[f64]) -> f64 {
        match &self.parts[param] {
            DirPart::Vector(d) => d[offset..offset + g.len()]
                .iter()
                .zip(g)
                .map(|(x, y)| x * y)
                .sum(),
            DirPart::Matrix { a, b } => {
                let cols = b.len();
                let (mut r, mut c) = (offset / cols, offset % cols);
                let mut sum = 0.0;
                let mut row = 0.0;
                for &x in g {
                    row += x * b[c];
                    c += 1;
                    if c == cols {
                        sum += row * a[r];
                        row = 0.0;
                        c = 0;
                        r += 1;
                    }
                }
                if c > 0 {
                    sum += row * a[r];
                }
                sum
            }
        }
    }
}
