//! Codec and quantizer throughput (criterion). Throughput is reported in weights (elements) per
//! second over a 25.2 M-weight matrix, the size of the gguf-py figures in
//! ../shared/design/ANCHORS.md section 9, so the two can be compared as ratios.
//!
//! Run: `cargo bench --bench codecs`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use std::hint::black_box;
use ternary_bundle::quant::dequantize::{dequantize_row_f16, dequantize_row_f32};
use ternary_bundle::{quantize, Encoding, Granularity, QuantParams};

const ROWS: usize = 4096;
const COLS: usize = 6144; // 25.2 M weights

fn weights() -> Vec<f32> {
    let mut s = 0x9E3779B97F4A7C15u64;
    (0..ROWS * COLS)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let w = weights();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    g.sample_size(10);
    for enc in Encoding::ALL {
        let params = QuantParams {
            encoding: enc,
            ..QuantParams::default()
        };
        let q = quantize(&w, &[ROWS as u64, COLS as u64], &params).unwrap();
        let bpr = enc.bytes_per_row(COLS as u64) as usize;
        let trits: Vec<i8> = {
            let mut t = vec![0i8; ROWS * COLS];
            for (r, row) in t.chunks_exact_mut(COLS).enumerate() {
                enc.unpack_row(&q.packed[r * bpr..(r + 1) * bpr], row)
                    .unwrap();
            }
            t
        };
        g.bench_function(BenchmarkId::new("pack", enc), |b| {
            let mut out = vec![0u8; ROWS * bpr];
            b.iter(|| {
                for (row, o) in trits.chunks_exact(COLS).zip(out.chunks_exact_mut(bpr)) {
                    enc.pack_row(row, o).unwrap();
                }
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("validate", enc), |b| {
            b.iter(|| {
                for row in q.packed.chunks_exact(bpr) {
                    enc.validate_row(black_box(row), COLS).unwrap();
                }
            })
        });
        g.bench_function(BenchmarkId::new("unpack_i8", enc), |b| {
            let mut out = vec![0i8; COLS];
            b.iter(|| {
                for row in q.packed.chunks_exact(bpr) {
                    enc.unpack_row(row, &mut out).unwrap();
                    black_box(&out);
                }
            })
        });
        g.bench_function(BenchmarkId::new("dequantize_f32", enc), |b| {
            let mut out = vec![0f32; COLS];
            b.iter(|| {
                for (r, row) in q.packed.chunks_exact(bpr).enumerate() {
                    dequantize_row_f32(enc, row, &q.scales[r..r + 1], COLS, &mut out).unwrap();
                    black_box(&out);
                }
            })
        });
        g.bench_function(BenchmarkId::new("dequantize_f16", enc), |b| {
            let mut out = vec![f16::ZERO; COLS];
            let mut scratch = vec![0i8; COLS];
            b.iter(|| {
                for (r, row) in q.packed.chunks_exact(bpr).enumerate() {
                    dequantize_row_f16(enc, row, &q.scales[r..r + 1], COLS, &mut scratch, &mut out)
                        .unwrap();
                    black_box(&out);
                }
            })
        });
    }
    g.finish();
}

fn quantizer(c: &mut Criterion) {
    let w = weights();
    let mut g = c.benchmark_group("quantize");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    g.sample_size(10);
    for (name, granularity) in [
        ("tensor", Granularity::Tensor),
        ("channel", Granularity::Channel),
        ("group128", Granularity::Group(128)),
    ] {
        let params = QuantParams {
            granularity,
            ..QuantParams::default()
        };
        g.bench_function(BenchmarkId::new("trit5", name), |b| {
            b.iter(|| {
                black_box(quantize(black_box(&w), &[ROWS as u64, COLS as u64], &params).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codecs, quantizer);
criterion_main!(benches);
