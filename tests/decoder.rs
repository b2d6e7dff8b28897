//! The decoder reference model (src/model/decoder.rs) against transformers (by hand, with
//! scripts/torch_decoder.py) and against a naive f64 implementation written here from the same
//! math (in CI); configs and token ids that do not make a model are refused naming the key.

mod common;

use ndarray::{Array2, Array3};
use ternary_bundle::model::decoder::{forward, DecoderSpec, Family, SourceWeights};
use ternary_bundle::source::{CheckpointSource, MemorySource, TensorSource};

fn spec(family: Family, tied: bool) -> DecoderSpec {
    DecoderSpec {
        family,
        vocab_size: 29,
        hidden_size: 24,
        intermediate_size: 40,
        num_hidden_layers: 2,
        num_attention_heads: 6,
        num_key_value_heads: 2,
        head_dim: 4,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        tie_word_embeddings: tied,
    }
}

fn random_model(s: &DecoderSpec) -> MemorySource {
    let mut src = MemorySource::new("random.safetensors");
    for (k, (name, shape)) in s.tensors().into_iter().enumerate() {
        let n = shape.iter().product();
        let mut values = common::values(100 + k as u64, n);
        if shape.len() == 1 {
            values.iter_mut().for_each(|v| *v = 1.0 + *v / 2.0);
        }
        src = src.with(&name, shape.iter().map(|&d| d as u64).collect(), values);
    }
    src
}

/// The same model in f64 with plain loops.
fn naive(s: &DecoderSpec, src: &dyn TensorSource, ids: &Array2<i64>) -> Array3<f64> {
    let get =
        |n: &str| -> Vec<f64> { src.load_f32(n).unwrap().iter().map(|&v| v as f64).collect() };
    let (h, hd, heads, kvh) = (
        s.hidden_size,
        s.head_dim,
        s.num_attention_heads,
        s.num_key_value_heads,
    );
    let eps = s.rms_norm_eps as f64;
    let norm = |x: &[f64], w: &[f64]| -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let r = 1.0 / (ms + eps).sqrt();
        x.iter().zip(w).map(|(v, w)| v * r * w).collect()
    };
    let lin = |w: &[f64], x: &[f64]| -> Vec<f64> {
        w.chunks(x.len())
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    };
    let (n, t) = ids.dim();
    let emb = get("model.embed_tokens.weight");
    let mut out = Array3::zeros((n, t, s.vocab_size));
    for seq in 0..n {
        let mut x: Vec<Vec<f64>> = (0..t)
            .map(|p| emb[ids[[seq, p]] as usize * h..][..h].to_vec())
            .collect();
        for l in 0..s.num_hidden_layers {
            let p = |name: &str| get(&format!("model.layers.{l}.{name}"));
            let (wq, wk, wv, wo) = (
                p("self_attn.q_proj.weight"),
                p("self_attn.k_proj.weight"),
                p("self_attn.v_proj.weight"),
                p("self_attn.o_proj.weight"),
            );
            let n1: Vec<Vec<f64>> = x
                .iter()
                .map(|r| norm(r, &p("input_layernorm.weight")))
                .collect();
            let rope = |v: &mut [f64], pos: usize| {
                for head in v.chunks_mut(hd) {
                    for i in 0..hd / 2 {
                        let f = pos as f64 / s.rope_theta.powf(2.0 * i as f64 / hd as f64);
                        let (a, b) = (head[i], head[i + hd / 2]);
                        head[i] = a * f.cos() - b * f.sin();
                        head[i + hd / 2] = b * f.cos() + a * f.sin();
                    }
                }
            };
            let q: Vec<Vec<f64>> = n1
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut v = lin(&wq, r);
                    rope(&mut v, i);
                    v
                })
                .collect();
            let k: Vec<Vec<f64>> = n1
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut v = lin(&wk, r);
                    rope(&mut v, i);
                    v
                })
                .collect();
            let v: Vec<Vec<f64>> = n1.iter().map(|r| lin(&wv, r)).collect();
            for i in 0..t {
                let mut a = vec![0.0; heads * hd];
                for head in 0..heads {
                    let g = head / (heads / kvh);
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            (0..hd)
                                .map(|d| q[i][head * hd + d] * k[j][g * hd + d])
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                    for (j, sc) in scores.iter().enumerate() {
                        for d in 0..hd {
                            a[head * hd + d] += (sc - m).exp() / z * v[j][g * hd + d];
                        }
                    }
                }
                if s.family == Family::Bitnet {
                    a = norm(&a, &p("self_attn.attn_sub_norm.weight"));
                }
                let o = lin(&wo, &a);
                x[i].iter_mut().zip(o).for_each(|(xv, ov)| *xv += ov);
            }
            for row in x.iter_mut() {
                let n2 = norm(row, &p("post_attention_layernorm.weight"));
                let (g, u) = (
                    lin(&p("mlp.gate_proj.weight"), &n2),
                    lin(&p("mlp.up_proj.weight"), &n2),
                );
                let mut m: Vec<f64> = g
                    .iter()
                    .zip(&u)
                    .map(|(&g, &u)| match s.family {
                        Family::Llama => g / (1.0 + (-g).exp()) * u,
                        Family::Bitnet => g.max(0.0).powi(2) * u,
                    })
                    .collect();
                if s.family == Family::Bitnet {
                    m = norm(&m, &p("mlp.ffn_sub_norm.weight"));
                }
                let d = lin(&p("mlp.down_proj.weight"), &m);
                row.iter_mut().zip(d).for_each(|(xv, dv)| *xv += dv);
            }
        }
        let head = get(if s.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        });
        for (pos, row) in x.iter().enumerate() {
            let logits = lin(&head, &norm(row, &get("model.norm.weight")));
            for (c, v) in logits.into_iter().enumerate() {
                out[[seq, pos, c]] = v;
            }
        }
    }
    out
}

/// Largest |a - b| over the largest |b|.
fn relative_difference(a: &Array3<f32>, b: &Array3<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y).abs()))
        / scale
}

#[test]
fn decoder_forward_equals_a_naive_f64_model_for_both_families() {
    let ids = Array2::from_shape_fn((2, 7), |(i, j)| ((i * 11 + j * 5) % 29) as i64);
    for family in [Family::Llama, Family::Bitnet] {
        for tied in [false, true] {
            let s = spec(family, tied);
            let src = random_model(&s);
            let ours = forward(&s, &SourceWeights(&src), ids.view()).unwrap();
            let want = naive(&s, &src, &ids);
            let d = relative_difference(&ours, &want);
            assert!(
                d < 1e-5,
                "{family:?} tied {tied}: differs by {d:.2e} of the largest logit"
            );
        }
    }
}

#[test]
fn decoder_forward_depends_on_every_kind_of_tensor() {
    // A model that ignored a tensor (a norm, a projection, the sub-norms) would pass the test
    // above only if the naive model ignored it too; here each tensor is changed in turn and the
    // logits must move.
    let ids = Array2::from_shape_fn((1, 5), |(_, j)| (j * 3 % 29) as i64);
    let s = spec(Family::Bitnet, false);
    let base = forward(&s, &SourceWeights(&random_model(&s)), ids.view()).unwrap();
    for (name, shape) in s.tensors() {
        let mut src = MemorySource::new("changed.safetensors");
        for (k, (n, sh)) in s.tensors().into_iter().enumerate() {
            let len = sh.iter().product();
            let mut values = common::values(100 + k as u64, len);
            if sh.len() == 1 {
                values.iter_mut().for_each(|v| *v = 1.0 + *v / 2.0);
            }
            if n == name {
                // Added noise, not a scale: the RMSNorms would cancel a scale.
                let noise = common::values(999, len);
                values
                    .iter_mut()
                    .zip(noise)
                    .for_each(|(v, e)| *v += 0.5 * e);
            }
            src = src.with(&n, sh.iter().map(|&d| d as u64).collect(), values);
        }
        let moved = forward(&s, &SourceWeights(&src), ids.view()).unwrap();
        let d = moved
            .iter()
            .zip(&base)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(d > 1e-4, "{name} {shape:?}: logits did not move ({d})");
    }
}

#[test]
fn token_ids_and_configs_that_make_no_model_are_refused_naming_the_key() {
    let s = spec(Family::Llama, true);
    let src = random_model(&s);
    let w = SourceWeights(&src);
    let err = forward(&s, &w, Array2::from_elem((1, 3), 29i64).view())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input_ids[0, 0]") && err.contains("0..29") && err.contains("29"),
        "{err}"
    );
    let err = forward(&s, &w, Array2::from_elem((1, 3), -1i64).view())
        .unwrap_err()
        .to_string();
    assert!(err.contains("found -1"), "{err}");
    let err = forward(&s, &w, Array2::<i64>::zeros((2, 0)).view())
        .unwrap_err()
        .to_string();
    assert!(err.contains("T = 0"), "{err}");

    let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2"#;
    let cases = [
        (format!(r#"{{"model_type": "gpt2", {base}}}"#), "model_type"),
        (
            format!(r#"{{"model_type": "llama", {base}, "num_key_value_heads": 3}}"#),
            "num_key_value_heads",
        ),
        (
            format!(r#"{{"model_type": "llama", {base}, "head_dim": 3}}"#),
            "head_dim",
        ),
        (
            format!(r#"{{"model_type": "llama", {base}, "hidden_act": "gelu"}}"#),
            "hidden_act",
        ),
        (
            format!(r#"{{"model_type": "llama", {base}, "attention_bias": true}}"#),
            "attention_bias",
        ),
        (
            format!(r#"{{"model_type": "bitnet", {base}, "head_dim": 2}}"#),
            "hidden_size",
        ),
        (
            format!(r#"{{"model_type": "llama", {base}, "rope_scaling": {{"type": "linear"}}}}"#),
            "rope_scaling",
        ),
        (
            r#"{"model_type": "llama", "vocab_size": 10}"#.to_string(),
            "hidden_size: missing",
        ),
    ];
    for (json, key) in cases {
        let err = DecoderSpec::from_hf_config(&json).unwrap_err();
        assert!(err.contains(key), "{json}: {err}");
    }
    let ok = DecoderSpec::from_hf_config(&format!(r#"{{"model_type": "llama", {base}}}"#)).unwrap();
    assert_eq!(
        (ok.head_dim, ok.num_key_value_heads, ok.rope_theta),
        (4, 2, 10000.0)
    );
}

/// By hand: `python3 scripts/torch_decoder.py DIR` with torch and transformers, then
/// `DECODER_ORACLE=DIR cargo test --release --test decoder -- --ignored`.
#[test]
#[ignore = "needs the transformers oracle of scripts/torch_decoder.py (torch is several GB)"]
fn decoder_logits_match_transformers() {
    let dir = std::path::PathBuf::from(
        std::env::var("DECODER_ORACLE")
            .expect("DECODER_ORACLE=DIR written by scripts/torch_decoder.py"),
    );
    for family in ["llama", "bitnet"] {
        let d = dir.join(family);
        let s =
            DecoderSpec::from_hf_config(&std::fs::read_to_string(d.join("config.json")).unwrap())
                .unwrap();
        let model = CheckpointSource::open(d.join("model.safetensors")).unwrap();
        let oracle = CheckpointSource::open(d.join("oracle.safetensors")).unwrap();
        let ids_bytes = oracle.tensor_bytes("input_ids").unwrap();
        let ids: Vec<i64> = ids_bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let want = oracle.load_f32("logits").unwrap();
        let (n, t) = (3, ids.len() / 3);
        let ids = Array2::from_shape_vec((n, t), ids).unwrap();
        let ours = forward(&s, &SourceWeights(&model), ids.view()).unwrap();
        let want =
            Array3::from_shape_vec(ours.dim(), want.iter().map(|&v| v as f64).collect()).unwrap();
        let d = relative_difference(&ours, &want);
        eprintln!("{family}: logits within {d:.2e} of transformers' (largest |logit|)");
        assert!(d < 1e-4, "{family}: differs from transformers by {d:.2e}");
    }
}
