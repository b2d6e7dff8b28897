//! The decoder reference model (src/model/decoder.rs) against transformers (by hand, with
//! scripts/torch_decoder.py) and against a naive f64 implementation written here from the same
//! math (in CI); configs and token ids that do not make a model are refused naming the key.

use crate::common;

use common::decoder::{model_with, random_model, spec};

use ndarray::{Array2, Array3};
use ternary_bundle::model::decoder::{forward, DecoderSpec, Family, SourceWeights};
use ternary_bundle::source::{CheckpointSource, MemorySource, TensorSource};

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
            let ours = forward(&s, &SourceWeights::new(&s, &src).unwrap(), ids.view()).unwrap();
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
    let base = forward(
        &s,
        &SourceWeights::new(&s, &random_model(&s)).unwrap(),
        ids.view(),
    )
    .unwrap();
    for (name, shape) in s.tensors() {
        let src = model_with(&s, |n, values| {
            if n == name {
                // Added noise, not a scale: the RMSNorms would cancel a scale.
                let noise = common::values(999, values.len());
                values
                    .iter_mut()
                    .zip(noise)
                    .for_each(|(v, e)| *v += 0.5 * e);
            }
        });
        let moved = forward(&s, &SourceWeights::new(&s, &src).unwrap(), ids.view()).unwrap();
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
    let w = SourceWeights::new(&s, &src).unwrap();
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
        (
            r#"{"model_type": "llama", "vocab_size": 18446744073709551615, "hidden_size": 4294967296, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1}"#.to_string(),
            "overflow",
        ),
        (
            r#"{"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4611686018427387904, "head_dim": 4}"#.to_string(),
            "overflow",
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
/// `DECODER_ORACLE=DIR cargo test --release --test suite decoder:: -- --ignored`.
#[test]
#[ignore = "needs the transformers oracle of scripts/torch_decoder.py (torch is several GB)"]
fn decoder_logits_match_transformers() {
    let dir = std::path::PathBuf::from(
        std::env::var("DECODER_ORACLE")
            .expect("DECODER_ORACLE=DIR written by scripts/torch_decoder.py"),
    );
    for family in [
        "llama",
        "bitnet",
        "llama-bf16",
        "bitnet-bf16",
        "llama-sharded",
        "bitnet-sharded",
    ] {
        let d = dir.join(family);
        // The directory save_pretrained wrote, read as a model directory.
        let model = ternary_bundle::source::hf::HfModel::open(&d).unwrap();
        let s = model.spec().clone();
        let oracle = CheckpointSource::open(d.join("oracle.safetensors")).unwrap();
        let ids_bytes = oracle.tensor_bytes("input_ids").unwrap();
        let ids: Vec<i64> = ternary_bundle::format::le::i64s(ids_bytes).collect();
        let want = oracle.load_f32("logits").unwrap();
        let (n, t) = (3, ids.len() / 3);
        let ids = Array2::from_shape_vec((n, t), ids).unwrap();
        let ours = forward(&s, &SourceWeights::new(&s, &model).unwrap(), ids.view()).unwrap();
        let want =
            Array3::from_shape_vec(ours.dim(), want.iter().map(|&v| v as f64).collect()).unwrap();
        let d = relative_difference(&ours, &want);
        eprintln!("{family}: logits within {d:.2e} of transformers' (largest |logit|)");
        assert!(d < 1e-4, "{family}: differs from transformers by {d:.2e}");
    }
}

mod model_directories {
    use super::*;
    use safetensors::tensor::{serialize_to_file, Dtype as StDtype, TensorView};
    use std::path::Path;
    use ternary_bundle::source::hf::HfModel;

    fn config(s: &DecoderSpec) -> String {
        format!(
            r#"{{"model_type": "{}", "vocab_size": {}, "hidden_size": {}, "intermediate_size": {}, "num_hidden_layers": {}, "num_attention_heads": {}, "num_key_value_heads": {}, "head_dim": {}, "rms_norm_eps": 1e-5, "rope_parameters": {{"rope_theta": 10000.0, "rope_type": "default"}}, "tie_word_embeddings": {}, "hidden_act": "{}"}}"#,
            s.family.name(),
            s.vocab_size,
            s.hidden_size,
            s.intermediate_size,
            s.num_hidden_layers,
            s.num_attention_heads,
            s.num_key_value_heads,
            s.head_dim,
            s.tie_word_embeddings,
            if s.family == Family::Llama {
                "silu"
            } else {
                "relu2"
            }
        )
    }

    /// Writes `src`'s tensors to `dir` as BF16 (`bf16`) or F32, in `shards` files (1: a single
    /// model.safetensors), with the config of `s`; `skip` leaves a tensor out, `extra` adds one.
    fn write_dir(
        dir: &Path,
        s: &DecoderSpec,
        src: &MemorySource,
        bf16: bool,
        shards: usize,
        skip: Option<&str>,
        extra: Option<&str>,
    ) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), config(s)).unwrap();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = s
            .tensors()
            .into_iter()
            .filter(|(n, _)| Some(n.as_str()) != skip)
            .map(|(n, shape)| {
                let v = src.load_f32(&n).unwrap();
                let bytes = if bf16 {
                    v.iter()
                        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                        .collect()
                } else {
                    v.iter().flat_map(|x| x.to_le_bytes()).collect()
                };
                (n, shape, bytes)
            })
            .collect();
        if let Some(name) = extra {
            tensors.push((name.to_string(), vec![2], vec![0; if bf16 { 4 } else { 8 }]));
        }
        let dtype = if bf16 { StDtype::BF16 } else { StDtype::F32 };
        let mut map = serde_json::Map::new();
        for k in 0..shards {
            let file = if shards == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{shards:05}.safetensors", k + 1)
            };
            let part: Vec<(String, TensorView)> = tensors
                .iter()
                .enumerate()
                .filter(|(i, _)| i % shards == k)
                .map(|(_, (n, shape, b))| {
                    (n.clone(), TensorView::new(dtype, shape.clone(), b).unwrap())
                })
                .collect();
            for (n, _) in &part {
                map.insert(n.clone(), serde_json::Value::String(file.clone()));
            }
            serialize_to_file(part, None, &dir.join(&file)).unwrap();
        }
        if shards > 1 {
            let index = serde_json::json!({"metadata": {}, "weight_map": map});
            std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        }
    }

    #[test]
    fn single_and_sharded_f32_and_bf16_directories_run_like_the_tensors_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let ids = Array2::from_shape_fn((2, 6), |(i, j)| ((i * 7 + j * 4) % 29) as i64);
        for family in [Family::Llama, Family::Bitnet] {
            let s = spec(family, family == Family::Bitnet);
            let src = random_model(&s);
            // The same values rounded to BF16, as a BF16 file holds them.
            let mut rounded = MemorySource::new("rounded.safetensors");
            for (n, shape) in s.tensors() {
                let v = src.load_f32(&n).unwrap();
                let v = v
                    .iter()
                    .map(|x| half::bf16::from_f32(*x).to_f32())
                    .collect();
                rounded = rounded.with(&n, shape.iter().map(|&d| d as u64).collect(), v);
            }
            for (bf16, shards) in [(false, 1), (false, 3), (true, 1), (true, 2)] {
                let dir = tmp.path().join(format!("{family:?}-{bf16}-{shards}"));
                write_dir(&dir, &s, &src, bf16, shards, None, None);
                let model = HfModel::open(&dir).unwrap();
                assert_eq!(model.spec(), &s);
                assert_eq!(model.tensors().len(), s.tensors().len());
                let ours =
                    forward(&s, &SourceWeights::new(&s, &model).unwrap(), ids.view()).unwrap();
                let want = if bf16 { &rounded } else { &src };
                let want = forward(&s, &SourceWeights::new(&s, want).unwrap(), ids.view()).unwrap();
                assert_eq!(ours, want, "{family:?} bf16 {bf16} shards {shards}");
            }
        }
    }

    #[test]
    fn directories_that_do_not_match_their_config_are_refused_naming_the_tensor() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(Family::Llama, false);
        let src = random_model(&s);
        let err = |dir: &Path| HfModel::open(dir).unwrap_err().to_string();

        let d = tmp.path().join("missing");
        write_dir(
            &d,
            &s,
            &src,
            false,
            2,
            Some("model.layers.1.mlp.up_proj.weight"),
            None,
        );
        let e = err(&d);
        assert!(
            e.contains("model.layers.1.mlp.up_proj.weight missing") && e.contains("[40, 24]"),
            "{e}"
        );

        let d = tmp.path().join("extra");
        write_dir(
            &d,
            &s,
            &src,
            false,
            1,
            None,
            Some("model.layers.0.self_attn.rotary_emb.inv_freq"),
        );
        let e = err(&d);
        assert!(
            e.contains("rotary_emb.inv_freq is not part of the llama model"),
            "{e}"
        );

        let d = tmp.path().join("shape");
        write_dir(&d, &s, &src, false, 1, None, None);
        let mut wrong = s.clone();
        wrong.intermediate_size = 41;
        std::fs::write(d.join("config.json"), config(&wrong)).unwrap();
        let e = err(&d);
        assert!(
            e.contains("model.layers.0.mlp.gate_proj.weight: expected shape [41, 24]")
                && e.contains("found [40, 24]"),
            "{e}"
        );

        let d = tmp.path().join("shard-gone");
        write_dir(&d, &s, &src, false, 3, None, None);
        std::fs::remove_file(d.join("model-00002-of-00003.safetensors")).unwrap();
        let e = err(&d);
        assert!(e.contains("model-00002-of-00003.safetensors"), "{e}");

        let d = tmp.path().join("escape");
        write_dir(&d, &s, &src, false, 2, None, None);
        let index = std::fs::read_to_string(d.join("model.safetensors.index.json")).unwrap();
        std::fs::write(
            d.join("model.safetensors.index.json"),
            index.replacen("model-00001-of-00002", "../model-00001-of-00002", 1),
        )
        .unwrap();
        let e = err(&d);
        assert!(e.contains("expected a file name in the directory"), "{e}");

        // A packed 1.58-bit checkpoint: U8 projections of [out / 4, in] and a weight_scale each.
        let d = tmp.path().join("packed");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), config(&s)).unwrap();
        let mut owned: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (n, shape) in s.tensors() {
            if n.contains("_proj") {
                let rows = shape[0].div_ceil(4);
                owned.push((
                    n.clone(),
                    StDtype::U8,
                    vec![rows, shape[1]],
                    vec![0x55; rows * shape[1]],
                ));
                owned.push((
                    n.replace(".weight", ".weight_scale"),
                    StDtype::F32,
                    vec![1],
                    1f32.to_le_bytes().to_vec(),
                ));
            } else {
                let len: usize = shape.iter().product();
                owned.push((n, StDtype::F32, shape, vec![0; 4 * len]));
            }
        }
        let views: Vec<(String, TensorView)> = owned
            .iter()
            .map(|(n, dt, sh, b)| (n.clone(), TensorView::new(*dt, sh.clone(), b).unwrap()))
            .collect();
        serialize_to_file(views, None, &d.join("model.safetensors")).unwrap();
        let e = err(&d);
        assert!(
            e.contains("weight_scale") && e.contains("packed 1.58-bit checkpoint"),
            "{e}"
        );

        // The right shapes in a dtype that is not a float.
        let d = tmp.path().join("int-dtype");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), config(&s)).unwrap();
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> = s
            .tensors()
            .into_iter()
            .map(|(n, shape)| {
                let len: usize = shape.iter().product();
                (n, shape, vec![0; 4 * len])
            })
            .collect();
        let views: Vec<(String, TensorView)> = owned
            .iter()
            .map(|(n, sh, b)| {
                let dt = if n == "model.norm.weight" {
                    StDtype::I32
                } else {
                    StDtype::F32
                };
                (n.clone(), TensorView::new(dt, sh.clone(), b).unwrap())
            })
            .collect();
        serialize_to_file(views, None, &d.join("model.safetensors")).unwrap();
        let e = err(&d);
        assert!(
            e.contains("model.norm.weight: expected dtype F32, F16 or BF16, found I32"),
            "{e}"
        );

        let d = tmp.path().join("no-weights");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), config(&s)).unwrap();
        assert!(err(&d).contains("no model.safetensors and no model.safetensors.index.json"));
        assert!(err(tmp.path()).contains("not a model directory: no config.json"));
    }
}

mod gradients {
    use super::*;
    use ternary_bundle::model::decoder64::{
        gradient_check, BackwardHooks, Decoder64, DecoderGradCheckOptions,
    };

    fn ids() -> Array2<i64> {
        Array2::from_shape_fn((2, 6), |(i, j)| ((i * 13 + j * 7 + 3) % 29) as i64)
    }

    #[test]
    fn f64_loss_is_the_f32_forwards_next_token_cross_entropy() {
        for family in [Family::Llama, Family::Bitnet] {
            let s = spec(family, family == Family::Llama);
            let src = random_model(&s);
            let logits = forward(&s, &SourceWeights::new(&s, &src).unwrap(), ids().view()).unwrap();
            let (n, t, _) = logits.dim();
            let mut want = 0.0f64;
            for i in 0..n {
                for p in 0..t - 1 {
                    let row = logits.slice(ndarray::s![i, p, ..]);
                    let m = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                    let lz = row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
                    want += lz - row[ids()[[i, p + 1]] as usize] as f64;
                }
            }
            want /= (n * (t - 1)) as f64;
            let model = Decoder64::load(&s, &src).unwrap();
            let (loss, _) = model
                .loss_and_gradient(ids().view(), false, &BackwardHooks::default())
                .unwrap();
            assert!(
                (loss - want).abs() < 1e-5 * want,
                "{family:?}: f64 {loss}, f32 {want}"
            );
        }
    }

    #[test]
    fn gradient_check_passes_every_tensor_with_margin_and_catches_each_wrong_backward() {
        for family in [Family::Llama, Family::Bitnet] {
            let s = spec(family, family == Family::Bitnet);
            let model = Decoder64::load(&s, &random_model(&s)).unwrap();
            let options = DecoderGradCheckOptions::default();
            let r = gradient_check(&model, ids().view(), &options).unwrap();
            assert_eq!(r.coordinates, 2 * s.tensors().len());
            assert!(
                r.error_ratio < 0.01,
                "{family:?}: margin {:.0}x: {}",
                1.0 / r.error_ratio,
                r.worst
            );
            eprintln!(
                "{family:?}: margin {:.0}x over {} entries and {} directions",
                1.0 / r.error_ratio,
                r.coordinates,
                r.directions
            );
            let hooks = [
                (
                    "attention",
                    BackwardHooks {
                        attention: 1.01,
                        ..Default::default()
                    },
                ),
                (
                    "rmsnorm",
                    BackwardHooks {
                        rmsnorm: 1.01,
                        ..Default::default()
                    },
                ),
                (
                    "mlp",
                    BackwardHooks {
                        mlp: 1.01,
                        ..Default::default()
                    },
                ),
            ];
            for (what, hooks) in hooks {
                let r = gradient_check(
                    &model,
                    ids().view(),
                    &DecoderGradCheckOptions {
                        hooks,
                        ..options.clone()
                    },
                )
                .unwrap();
                assert!(
                    r.error_ratio > 1.0,
                    "{family:?}: a 1% wrong {what} backward passed: {}",
                    r.worst
                );
                eprintln!(
                    "{family:?}: 1% wrong {what} backward: error {:.1}x its allowance",
                    r.error_ratio
                );
            }
        }
    }

    #[test]
    fn sequences_too_short_to_predict_are_refused() {
        let s = spec(Family::Llama, false);
        let model = Decoder64::load(&s, &random_model(&s)).unwrap();
        let err = model
            .loss_and_gradient(
                Array2::from_elem((1, 1), 3i64).view(),
                true,
                &BackwardHooks::default(),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("T = 1"), "{err}");
    }
}

mod quantized {
    use super::*;
    use ternary_bundle::model::decoder::{is_projection, QuantizedDecoder};
    use ternary_bundle::model::reference::WeightPath;
    use ternary_bundle::{quantize, QuantParams};

    #[test]
    fn quantized_paths_run_the_trits_and_their_fp16_dequantization() {
        let ids = Array2::from_shape_fn((2, 5), |(i, j)| ((i * 5 + j * 11) % 29) as i64);
        let params = QuantParams::default();
        for family in [Family::Llama, Family::Bitnet] {
            let s = spec(family, family == Family::Llama);
            let src = random_model(&s);
            // The same weights written out densely: t * scale (f32) and its F16 rounding.
            let (mut dense, mut half16) = (MemorySource::new("t"), MemorySource::new("h"));
            let mut projections = 0;
            for (name, shape) in s.tensors() {
                let v = src.load_f32(&name).unwrap();
                let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
                let values: Vec<f32> = if is_projection(&name) {
                    projections += 1;
                    let q = quantize(&v, &dims, &params).unwrap();
                    let bpr = params.encoding.bytes_per_row(q.cols as u64) as usize;
                    let mut out = Vec::with_capacity(v.len());
                    for r in 0..q.rows {
                        let mut t = vec![0i8; q.cols];
                        params
                            .encoding
                            .unpack_row(&q.packed[r * bpr..(r + 1) * bpr], &mut t)
                            .unwrap();
                        out.extend(t.iter().map(|&t| t as f32 * q.scales[r]));
                    }
                    out
                } else {
                    v
                };
                let rounded = values
                    .iter()
                    .map(|&x| half::f16::from_f32(x).to_f32())
                    .collect();
                dense = dense.with(&name, dims.clone(), values);
                half16 = half16.with(&name, dims, rounded);
            }
            assert_eq!(projections, 7 * s.num_hidden_layers);
            let q = QuantizedDecoder::new(&s, &src, &params).unwrap();
            let ternary = forward(&s, &q.path(WeightPath::Ternary), ids.view()).unwrap();
            let want = forward(&s, &SourceWeights::new(&s, &dense).unwrap(), ids.view()).unwrap();
            let want64 = want.mapv(f64::from);
            let d = relative_difference(&ternary, &want64);
            assert!(
                d < 1e-5,
                "{family:?}: ternary path differs from t * scale by {d:.2e}"
            );
            let fp16 = forward(&s, &q.path(WeightPath::Fp16), ids.view()).unwrap();
            assert_eq!(
                fp16,
                forward(&s, &SourceWeights::new(&s, &half16).unwrap(), ids.view()).unwrap(),
                "{family:?}"
            );
            // And neither is the original model.
            let original = forward(&s, &SourceWeights::new(&s, &src).unwrap(), ids.view())
                .unwrap()
                .mapv(f64::from);
            assert!(
                relative_difference(&ternary, &original) > 1e-3,
                "{family:?}: quantization changed nothing?"
            );
        }
    }
}

mod flow {
    use super::*;
    use ternary_bundle::model::decoder64::{gradient_flow, Decoder64};

    #[test]
    fn every_tensor_gets_a_gradient_and_a_dead_gate_shows() {
        let ids = Array2::from_shape_fn((2, 6), |(i, j)| ((i * 13 + j * 7 + 3) % 29) as i64);
        for family in [Family::Llama, Family::Bitnet] {
            let s = spec(family, false);
            let model = Decoder64::load(&s, &random_model(&s)).unwrap();
            let (loss, stats) = gradient_flow(&model, ids.view()).unwrap();
            assert!(loss.is_finite() && loss > 0.0);
            assert_eq!(stats.len(), s.tensors().len());
            for t in &stats {
                assert!(
                    t.non_finite == 0 && t.non_zero > 0 && t.norm > 0.0,
                    "{family:?}: {t:?}"
                );
            }
        }
        // BitNet with layer 0's gate at zero: relu(0)^2 = 0, so the MLP's output is 0 whatever
        // its other weights: nothing flows back to the gate, the up and down projections, the
        // sub-norm, or the norm in front of the MLP (its only consumer).
        let s = spec(Family::Bitnet, false);
        let src = model_with(&s, |name, values| {
            if name == "model.layers.0.mlp.gate_proj.weight" {
                values.iter_mut().for_each(|v| *v = 0.0);
            }
        });
        let model = Decoder64::load(&s, &src).unwrap();
        let (_, stats) = gradient_flow(&model, ids.view()).unwrap();
        let dead: Vec<&str> = stats
            .iter()
            .filter(|t| t.non_zero == 0)
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(
            dead,
            [
                "model.layers.0.post_attention_layernorm.weight",
                "model.layers.0.mlp.gate_proj.weight",
                "model.layers.0.mlp.up_proj.weight",
                "model.layers.0.mlp.ffn_sub_norm.weight",
                "model.layers.0.mlp.down_proj.weight",
            ]
        );
    }
}

mod review_cases {
    use super::*;
    use ternary_bundle::source::hf::HfModel;

    #[test]
    fn misshapen_tensors_are_refused_before_the_forward_pass() {
        let s = spec(Family::Llama, false);
        for (name, shape) in [
            ("model.layers.0.self_attn.k_proj.weight", vec![4u64, 24]),
            ("model.layers.1.input_layernorm.weight", vec![3]),
            ("model.norm.weight", vec![1]),
        ] {
            let mut src = MemorySource::new("bad.safetensors");
            for (k, (n, sh)) in s.tensors().into_iter().enumerate() {
                let sh: Vec<u64> = if n == name {
                    shape.clone()
                } else {
                    sh.iter().map(|&d| d as u64).collect()
                };
                let len = sh.iter().product::<u64>() as usize;
                src = src.with(&n, sh, common::values(k as u64, len));
            }
            let err = SourceWeights::new(&s, &src)
                .err()
                .expect("refused")
                .to_string();
            assert!(
                err.contains("bad.safetensors")
                    && err.contains(name)
                    && err.contains("expected shape"),
                "{err}"
            );
        }
    }

    #[test]
    fn quantization_configs_layer_counts_and_family_defaults() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 12, "num_attention_heads": 2"#;
        let q = format!(
            r#"{{"model_type": "bitnet", {base}, "num_hidden_layers": 1, "quantization_config": {{"quant_method": "bitnet"}}}}"#
        );
        assert!(DecoderSpec::from_hf_config(&q)
            .unwrap_err()
            .contains("quantization_config"));
        let deep =
            format!(r#"{{"model_type": "llama", {base}, "num_hidden_layers": 1000000000000000}}"#);
        assert!(DecoderSpec::from_hf_config(&deep)
            .unwrap_err()
            .contains("num_hidden_layers: expected at most 4096"));
        let b = DecoderSpec::from_hf_config(&format!(
            r#"{{"model_type": "bitnet", {base}, "num_hidden_layers": 1}}"#
        ))
        .unwrap();
        assert_eq!((b.rope_theta, b.rms_norm_eps), (500000.0, 1e-5));
        let l = DecoderSpec::from_hf_config(&format!(
            r#"{{"model_type": "llama", {base}, "num_hidden_layers": 1}}"#
        ))
        .unwrap();
        assert_eq!((l.rope_theta, l.rms_norm_eps), (10000.0, 1e-6));
    }

    #[test]
    fn a_single_weights_file_wins_over_an_index_as_in_transformers() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(Family::Llama, true);
        let src = random_model(&s);
        let d = tmp.path().join("both");
        std::fs::create_dir_all(&d).unwrap();
        let mut views = Vec::new();
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = s
            .tensors()
            .into_iter()
            .map(|(n, shape)| {
                let b = src
                    .load_f32(&n)
                    .unwrap()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                (n, shape, b)
            })
            .collect();
        for (n, shape, b) in &tensors {
            views.push((
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap(),
            ));
        }
        safetensors::tensor::serialize_to_file(views, None, &d.join("model.safetensors")).unwrap();
        let config = r#"{"model_type": "llama", "vocab_size": 29, "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 4, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true}"#;
        std::fs::write(d.join("config.json"), config).unwrap();
        // A stale index naming shards that are not there.
        std::fs::write(
            d.join("model.safetensors.index.json"),
            r#"{"weight_map": {"model.norm.weight": "gone.safetensors"}}"#,
        )
        .unwrap();
        let model = HfModel::open(&d).unwrap();
        assert_eq!(model.tensors().len(), s.tensors().len());
    }
}
