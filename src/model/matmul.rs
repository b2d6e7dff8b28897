//! Matrix products on the crate's one thread pool.
//!
//! Every parallel loop of the crate runs on rayon's pool (sized by `--threads` or
//! `BUNDLE_THREADS`, else one thread per core). The matrix kernels themselves (faer's, which
//! use AVX-512 or AVX2 where the CPU has them) run single-threaded inside rayon tasks: a
//! product `x W^T` is split into blocks of W's rows, several per thread, that idle threads
//! steal. A second pool of matmul
//! threads beside rayon's would oversubscribe the cores, and a product split once per thread
//! waits for its slowest part at every call: on a machine whose cores are shared with other
//! processes that is a preempted thread, again and again (`benches/contention.sh` measures it).

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{s, Array2, ArrayView2, CowArray, Ix2, LinalgScalar};
use rayon::prelude::*;

/// The element types of the products: `f32` (the reference model) and `f64` (the gradient
/// check's model).
pub trait Element: LinalgScalar + faer::traits::ComplexField + Send + Sync {}

impl Element for f32 {}
impl Element for f64 {}

/// `a b` on the calling thread, for views of any layout.
pub fn product<A: Element>(a: ArrayView2<'_, A>, b: ArrayView2<'_, A>) -> Array2<A> {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert_eq!(k, k2, "inner dimensions of a product");
    let mut c = Array2::<A>::zeros((m, n));
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    let c_rows = c.as_slice_mut().expect("a new array is in standard layout");
    with_mat(a, |a| {
        with_mat(b, |b| {
            matmul(
                MatMut::from_row_major_slice_mut(c_rows, m, n),
                Accum::Replace,
                a,
                b,
                A::one(),
                Par::Seq,
            )
        })
    });
    c
}

/// Runs `f` on `v` as a faer matrix: borrowed when `v` is row- or column-major, else a
/// row-major copy.
fn with_mat<A: Element, R>(v: ArrayView2<'_, A>, f: impl FnOnce(MatRef<'_, A>) -> R) -> R {
    let (rows, cols) = v.dim();
    if let Some(data) = v.to_slice() {
        return f(MatRef::from_row_major_slice(data, rows, cols));
    }
    if let Some(data) = v.reversed_axes().to_slice() {
        return f(MatRef::from_column_major_slice(data, rows, cols));
    }
    let copy = v.as_standard_layout();
    let data = copy.as_slice().expect("standard layout");
    f(MatRef::from_row_major_slice(data, rows, cols))
}

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Blocks per thread: enough that threads that finish early (or that another process slows
/// down) are balanced by stealing.
const BLOCKS_PER_THREAD: usize = 4;

/// Fewest rows of W in a block (narrower blocks make inefficient kernels).
const MIN_BLOCK_ROWS: usize = 16;

/// `x W^T`, where W has `out` rows and `weight(r0, r1)` gives rows `r0..r1` of it (converted on
/// the fly, or borrowed), at most `max_block` rows at a time. Blocks of rows run in parallel;
/// each block is asked for once.
pub fn dot_t_blocks<'w, A, F>(
    x: ArrayView2<'_, A>,
    out: usize,
    max_block: usize,
    weight: F,
) -> Array2<A>
where
    A: Element,
    F: Fn(usize, usize) -> CowArray<'w, A, Ix2> + Sync,
{
    let (n, k) = x.dim();
    let threads = rayon::current_num_threads();
    let small = n.saturating_mul(k).saturating_mul(out) < PARALLEL_MIN_MACS;
    if (threads == 1 || small) && out <= max_block {
        return product(x, weight(0, out).t());
    }
    let block = out
        .div_ceil(BLOCKS_PER_THREAD * threads)
        .max(MIN_BLOCK_ROWS)
        .min(max_block)
        .clamp(1, out.max(1));
    let starts: Vec<usize> = (0..out).step_by(block).collect();
    // Each block's product goes into its columns of y as soon as it is done: memory is y and a
    // block per thread, not y twice (the logits of a language model are the largest matrix).
    let y = std::sync::Mutex::new(Array2::<A>::zeros((n, out)));
    starts.par_iter().for_each(|&r0| {
        let part = product(x, weight(r0, (r0 + block).min(out)).t());
        y.lock()
            .unwrap_or_else(|e| e.into_inner())
            .slice_mut(s![.., r0..r0 + part.ncols()])
            .assign(&part);
    });
    y.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// `x W^T` for a W in memory.
pub fn dot_t<A>(x: ArrayView2<'_, A>, w: ArrayView2<'_, A>) -> Array2<A>
where
    A: Element,
{
    dot_t_blocks(x, w.nrows(), usize::MAX, |r0, r1| {
        CowArray::from(w.slice(s![r0..r1, ..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_any_layout_equal_ndarrays() {
        let a = Array2::from_shape_fn((6, 9), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let b = Array2::from_shape_fn((9, 5), |(i, j)| ((i * 5 + j) % 13) as f32 - 6.0);
        // Row-major, column-major (a transposed view) and strided (a column slice) operands.
        let bt = b.t().to_owned();
        let cases = [
            (a.view(), b.view()),
            (a.view(), bt.t()),
            (a.slice(s![.., 2..7]), b.slice(s![2..7, ..])),
            (a.slice(s![1..4, ..]), bt.t()),
        ];
        for (x, y) in cases {
            // Integer-valued entries: both sums are exact.
            assert_eq!(
                product(x, y),
                x.dot(&y),
                "{:?} . {:?}",
                x.strides(),
                y.strides()
            );
        }
        assert_eq!(
            product(a.slice(s![.., 0..0]), b.slice(s![0..0, ..])),
            Array2::<f32>::zeros((6, 5))
        );
    }

    #[test]
    fn blocked_products_equal_the_plain_product() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for (n, k, out) in [(1, 1, 1), (5, 300, 1000), (64, 257, 33), (3, 2000, 700)] {
            let x = Array2::from_shape_fn((n, k), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0);
            let w = Array2::from_shape_fn((out, k), |(i, j)| ((i * 5 + j) % 13) as f64 - 6.0);
            let plain = x.dot(&w.t());
            let blocked = pool.install(|| dot_t(x.view(), w.view()));
            // Integer-valued entries: both sums are exact.
            assert_eq!(blocked, plain, "{n}x{k} . ({out}x{k})^T");
            let narrow = pool.install(|| {
                dot_t_blocks(x.view(), out, 7, |r0, r1| {
                    CowArray::from(w.slice(s![r0..r1, ..]).to_owned())
                })
            });
            assert_eq!(narrow, plain, "{n}x{k} . ({out}x{k})^T in blocks of 7");
        }
    }
}
