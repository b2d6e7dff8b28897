//! Trits and scales a source already has (method `given`, spec section 7.1): the one shape in
//! which every already-ternary source (the quantizing stage's state dict, a Hugging Face packed
//! BitNet checkpoint) hands them to the writer, the reading of trits from any dtype, and the
//! repetition of coarser scales when a bundle's one granularity is finer (section 7.1). The
//! checks here are rule 8.3's.

use crate::format::le;
use crate::format::quantization::Granularity;
use crate::format::safetensors::Dtype;

/// The scales of one given tensor, in the granularity the source gave them.
#[derive(Debug, Clone, PartialEq)]
pub enum GivenScales {
    /// One scale for the whole tensor.
    Tensor(f32),
    /// One scale per row.
    Channel(Vec<f32>),
    /// `ceil(C / size)` scales per row, row-major.
    Group {
        /// Columns per group.
        size: u64,
        /// The scales, `[rows, ceil(cols / size)]` row-major.
        scales: Vec<f32>,
    },
}

/// One tensor's trits (C order) and scales as the source gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct GivenTensor {
    /// Every trit, -1, 0 or 1, in C order of the tensor's shape.
    pub trits: Vec<i8>,
    /// Its scales.
    pub scales: GivenScales,
}

impl GivenTensor {
    /// The effective weights f32(t × scale(r, c)) of a tensor of `rows` x `cols` (what the
    /// source's model computes with), C order; fails, saying why, when the scales do not fit.
    pub fn values(&self, rows: u64, cols: u64) -> Result<Vec<f32>, String> {
        let g = self.scales.granularity();
        let scales = self.scales.layout(g, rows, cols)?;
        let cols = usize::try_from(cols).map_err(|_| format!("{cols} columns"))?;
        let (_, group) = g.row_layout(cols);
        Ok(self
            .trits
            .chunks(cols.max(1))
            .enumerate()
            .flat_map(|(r, row)| {
                let rs = g.row_scales(&scales, r, cols);
                row.iter()
                    .enumerate()
                    .map(move |(c, &t)| f32::from(t) * rs[c / group.max(1)])
            })
            .collect())
    }
}

impl GivenScales {
    /// The granularity the scales were given in.
    pub fn granularity(&self) -> Granularity {
        match self {
            GivenScales::Tensor(_) => Granularity::Tensor,
            GivenScales::Channel(_) => Granularity::Channel,
            GivenScales::Group { size, .. } => Granularity::Group(*size),
        }
    }

    /// The scales in the layout of `target` (a granularity at least as fine) for a tensor of
    /// `rows` x `cols`, each coarser scale repeated over the elements it covers, so that
    /// scale(r, c) is unchanged (section 7.1). Fails, saying why, when the count does not fit
    /// the tensor or `target` is coarser.
    pub fn layout(&self, target: Granularity, rows: u64, cols: u64) -> Result<Vec<f32>, String> {
        let per_row = |g: u64| cols.div_ceil(g.max(1));
        let expect = |found: usize, want: u64, what: &str| -> Result<(), String> {
            if found as u64 == want {
                Ok(())
            } else {
                Err(format!(
                    "{found} scales, where {what} of a tensor of {rows} rows of {cols} needs {want}"
                ))
            }
        };
        let repeat = |n: u64, f: &dyn Fn(u64) -> f32| -> Result<Vec<f32>, String> {
            let n = usize::try_from(n).map_err(|_| format!("{n} scales do not fit in memory"))?;
            Ok((0..n as u64).map(f).collect())
        };
        match (self, target) {
            (GivenScales::Tensor(s), Granularity::Tensor) => Ok(vec![*s]),
            (GivenScales::Tensor(s), Granularity::Channel) => repeat(rows, &|_| *s),
            (GivenScales::Tensor(s), Granularity::Group(g)) => {
                repeat(rows.saturating_mul(per_row(g)), &|_| *s)
            }
            (GivenScales::Channel(v), Granularity::Channel) => {
                expect(v.len(), rows, "one scale per row")?;
                Ok(v.clone())
            }
            (GivenScales::Channel(v), Granularity::Group(g)) => {
                expect(v.len(), rows, "one scale per row")?;
                let n = per_row(g);
                repeat(rows.saturating_mul(n), &|i| v[(i / n) as usize])
            }
            (GivenScales::Group { size, scales }, Granularity::Group(g)) if *size == g => {
                expect(
                    scales.len(),
                    rows.saturating_mul(per_row(g)),
                    &format!("one scale per {g} columns of a row"),
                )?;
                Ok(scales.clone())
            }
            (given, target) => Err(format!(
                "scales given per {} cannot be written per {}",
                describe(given.granularity()),
                describe(target)
            )),
        }
    }
}

fn describe(g: Granularity) -> String {
    match g {
        Granularity::Group(n) => format!("group of {n}"),
        other => other.name().to_string(),
    }
}

/// The one granularity of a bundle of given tensors: the finest present (group before channel
/// before tensor, section 7.1); given groups of two sizes are refused.
pub fn common_granularity(
    given: impl IntoIterator<Item = Granularity>,
) -> Result<Granularity, String> {
    let mut out = Granularity::Tensor;
    for g in given {
        out = match (out, g) {
            (Granularity::Group(a), Granularity::Group(b)) if a != b => {
                return Err(format!(
                    "scales given per groups of {a} and of {b} columns: a bundle has one group size"
                ))
            }
            (Granularity::Group(a), _) | (_, Granularity::Group(a)) => Granularity::Group(a),
            (Granularity::Channel, _) | (_, Granularity::Channel) => Granularity::Channel,
            _ => Granularity::Tensor,
        };
    }
    Ok(out)
}

/// The trits held by a tensor's little-endian bytes of `dtype` (rule 8.3): an integer dtype
/// with every value in {-1, 0, 1}, or a float dtype with every value exactly -1, +-0 or 1. On
/// failure, the flat index and the value found.
pub fn trits_from_bytes(dtype: Dtype, bytes: &[u8]) -> Result<Vec<i8>, (usize, String)> {
    fn check<T: Copy + std::fmt::Display>(
        values: impl Iterator<Item = T>,
        trit: impl Fn(T) -> Option<i8>,
    ) -> Result<Vec<i8>, (usize, String)> {
        values
            .enumerate()
            .map(|(i, v)| trit(v).ok_or_else(|| (i, v.to_string())))
            .collect()
    }
    let int = |v: i64| (-1..=1).contains(&v).then_some(v as i8);
    // Compared in the dtype's own precision (exactly, in f64): 0.99999999999 is not a trit.
    let float = |v: f64| {
        if v == 0.0 {
            Some(0)
        } else if v == 1.0 {
            Some(1)
        } else if v == -1.0 {
            Some(-1)
        } else {
            None
        }
    };
    match dtype {
        Dtype::I8 => check(bytes.iter().map(|&b| b as i8), |v| int(v.into())),
        Dtype::U8 => check(bytes.iter().copied(), |v| int(v.into())),
        Dtype::Bool => Err((0, "a BOOL tensor (trits are integers or floats)".into())),
        Dtype::I16 => check(
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]])),
            |v| int(v.into()),
        ),
        Dtype::U16 => check(
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]])),
            |v| int(v.into()),
        ),
        Dtype::I32 => check(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            |v| int(v.into()),
        ),
        Dtype::U32 => check(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            |v| int(v.into()),
        ),
        Dtype::I64 => check(le::i64s(bytes), int),
        Dtype::U64 => check(
            bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
            |v| i64::try_from(v).ok().and_then(int),
        ),
        Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 => {
            let values: Vec<f64> = match dtype {
                Dtype::F64 => bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
                _ => crate::source::to_f32(dtype, bytes)
                    .unwrap_or_default()
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            };
            check(values.into_iter(), float)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarser_scales_repeat_over_what_they_cover() {
        let t = GivenScales::Tensor(0.5);
        assert_eq!(t.layout(Granularity::Channel, 3, 4).unwrap(), vec![0.5; 3]);
        assert_eq!(t.layout(Granularity::Group(3), 2, 4).unwrap(), vec![0.5; 4]);
        let c = GivenScales::Channel(vec![1.0, 2.0]);
        assert_eq!(
            c.layout(Granularity::Group(2), 2, 3).unwrap(),
            vec![1.0, 1.0, 2.0, 2.0]
        );
        assert!(c.layout(Granularity::Tensor, 2, 3).is_err());
        assert!(c.layout(Granularity::Channel, 3, 3).is_err());
        let g = GivenScales::Group {
            size: 2,
            scales: vec![1.0; 4],
        };
        assert!(g.layout(Granularity::Group(3), 2, 3).is_err());
        assert_eq!(g.layout(Granularity::Group(2), 2, 3).unwrap().len(), 4);
    }

    #[test]
    fn the_finest_granularity_wins_and_group_sizes_must_agree() {
        use Granularity::*;
        assert_eq!(common_granularity([Tensor, Channel]).unwrap(), Channel);
        assert_eq!(common_granularity([Group(4), Tensor]).unwrap(), Group(4));
        assert_eq!(common_granularity([]).unwrap(), Tensor);
        assert!(common_granularity([Group(4), Group(8)]).is_err());
    }

    #[test]
    fn trits_are_read_from_any_dtype_and_nothing_else_is_a_trit() {
        assert_eq!(
            trits_from_bytes(Dtype::I8, &[0xFF, 0, 1]).unwrap(),
            vec![-1, 0, 1]
        );
        assert_eq!(
            trits_from_bytes(Dtype::I8, &[2]).unwrap_err(),
            (0, "2".into())
        );
        let f: Vec<u8> = [-1.0f32, -0.0, 1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(trits_from_bytes(Dtype::F32, &f).unwrap(), vec![-1, 0, 1]);
        let f: Vec<u8> = [0.5f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(trits_from_bytes(Dtype::F32, &f).is_err());
        let f: Vec<u8> = [f32::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(trits_from_bytes(Dtype::F32, &f).is_err());
        assert!(trits_from_bytes(Dtype::U8, &[255]).is_err());
        let big: Vec<u8> = u64::MAX.to_le_bytes().to_vec();
        assert!(trits_from_bytes(Dtype::U64, &big).is_err());
    }
}
