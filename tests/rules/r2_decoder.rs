//! Rules 2.13 and 2.14 (a decoder model, format 3.0) and the decoder forms of rules 2.5 and
//! 6.1 to 6.3 (token sequences).

use super::*;
use common::decoder::decoder_bundle;
use ternary_bundle::model::decoder::Family;

fn llama(tmp: &tempfile::TempDir) -> PathBuf {
    decoder_bundle(tmp, "llama", Family::Llama, false, true)
}

#[test]
fn decoder_bundles_of_both_families_open_and_pass_every_data_check() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, family, tied) in [("l", Family::Llama, false), ("b", Family::Bitnet, true)] {
        let dir = decoder_bundle(&tmp, name, family, tied, true);
        let b = Bundle::open(&dir).unwrap();
        // With original predictions and distributions (rule 6.1): format 5.0.
        assert_eq!(b.facts().version, FormatVersion::V5_0);
        assert_eq!(b.decoder().unwrap().family, family);
        assert_eq!(b.classes(), 29);
        check_all(&b).unwrap();
    }
}

#[test]
fn rule_2_13_a_decoder_needs_format_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama(&tmp);
    edit_manifest(&dir, |m| m["format_version"] = json!("2.0"));
    open_violation(
        &dir,
        Rule::DecoderModel,
        &[MANIFEST, "format 3.0 or later", "format 2.0"],
    );
}

#[test]
fn rule_2_13_numbers_that_do_not_make_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, Value, &str); 7] = [
        ("family", json!("gpt2"), "\"gpt2\""),
        ("num_key_value_heads", json!(4), "num_key_value_heads"),
        ("head_dim", json!(3), "head_dim"),
        ("hidden_size", json!(0), "hidden_size"),
        ("num_hidden_layers", json!(5000), "num_hidden_layers"),
        ("vocab_size", json!(u64::MAX), "overflow"),
        ("rms_norm_eps", json!(0.0), "rms_norm_eps"),
    ];
    for (i, (key, value, part)) in cases.into_iter().enumerate() {
        let dir = decoder_bundle(&tmp, &format!("d{i}"), Family::Llama, false, false);
        edit_manifest(&dir, |m| m["model"]["decoder"][key] = value.clone());
        open_violation(&dir, Rule::DecoderModel, &[MANIFEST, part]);
    }
}

#[test]
fn rule_2_13_bitnet_heads_must_cover_the_hidden_width() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = decoder_bundle(&tmp, "b", Family::Bitnet, true, false);
    // 6 heads of 2 = 12, not hidden 24 (attn_sub_norm has hidden_size weights).
    edit_manifest(&dir, |m| m["model"]["decoder"]["head_dim"] = json!(2));
    open_violation(&dir, Rule::DecoderModel, &[MANIFEST, "hidden_size (24)"]);
}

#[test]
fn rule_2_5_a_decoder_model_has_no_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama(&tmp);
    edit_manifest(&dir, |m| m["model"]["layers"] = json!([]));
    open_violation(
        &dir,
        Rule::ManifestSchema,
        &[MANIFEST, "no input_dim or layers"],
    );
    let dir = decoder_bundle(&tmp, "missing", Family::Llama, false, false);
    edit_manifest(&dir, |m| {
        m["model"]["decoder"]
            .as_object_mut()
            .unwrap()
            .remove("head_dim");
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST, "head_dim"]);
}

#[test]
fn rule_2_14_shapes_that_do_not_match_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama(&tmp);
    // 3 KV heads of 4 divide 6 heads and make k_proj [12, 24]; the bundle's is [8, 24].
    edit_manifest(&dir, |m| {
        m["model"]["decoder"]["num_key_value_heads"] = json!(3)
    });
    open_violation(
        &dir,
        Rule::DecoderTensors,
        &[
            MANIFEST,
            &t("model.layers.0.self_attn.k_proj.weight"),
            "[12, 24]",
            "[8, 24]",
        ],
    );
    let dir = decoder_bundle(&tmp, "wide", Family::Llama, false, false);
    edit_manifest(&dir, |m| {
        m["model"]["decoder"]["intermediate_size"] = json!(41)
    });
    open_violation(
        &dir,
        Rule::DecoderTensors,
        &[
            MANIFEST,
            &t("model.layers.0.mlp.gate_proj.weight"),
            "[41, 24]",
            "[40, 24]",
        ],
    );
}

#[test]
fn rule_2_14_missing_and_extra_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    // Untied: lm_head.weight is required; declaring the model tied makes it extra.
    let dir = llama(&tmp);
    edit_manifest(&dir, |m| {
        m["model"]["decoder"]["tie_word_embeddings"] = json!(true)
    });
    open_violation(
        &dir,
        Rule::DecoderTensors,
        &[
            MANIFEST,
            &t("lm_head.weight"),
            "a tensor the decoder does not have",
        ],
    );
    // A bitnet config needs the sub-norms a llama bundle lacks.
    let dir = decoder_bundle(&tmp, "fam", Family::Llama, false, false);
    edit_manifest(&dir, |m| m["model"]["decoder"]["family"] = json!("bitnet"));
    open_violation(
        &dir,
        Rule::DecoderTensors,
        &[
            MANIFEST,
            &t("model.layers.0.self_attn.attn_sub_norm.weight"),
            "no such tensor",
        ],
    );
}

#[test]
fn rule_6_1_token_sequences_need_two_tokens_and_shifted_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama(&tmp);
    edit_st(&dir, VALIDATION, |st| {
        // The same 20 values as [5, 4]: the labels of 4 sequences of 6 tokens are [4, 5].
        st.edit_json(|h| h["labels"]["shape"] = json!([5, 4]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::ValidationTensors,
        &[VALIDATION, &t("labels"), "[4, 5]", "[5, 4]"],
    );
    let dir = decoder_bundle(&tmp, "chain-inputs", Family::Llama, false, true);
    edit_st(&dir, VALIDATION, |st| {
        st.edit_json(|h| {
            let ids = h["input_ids"].clone();
            h.as_object_mut().unwrap().remove("input_ids");
            h["inputs"] = ids;
        })
    });
    edit_manifest(&dir, |m| {
        for t in m["files"]["validation"]["tensors"].as_array_mut().unwrap() {
            if t["name"] == "input_ids" {
                t["name"] = json!("inputs");
            }
        }
    });
    rehash(&dir);
    open_violation(&dir, Rule::ValidationTensors, &[VALIDATION, "input_ids"]);
}

#[test]
fn rule_6_2_token_ids_and_labels_in_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama(&tmp);
    edit_tensor(&dir, VALIDATION, "input_ids", |b| {
        b[8..16].copy_from_slice(&29i64.to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::ValidationValues,
        &[VALIDATION, &t("input_ids"), "0..29", "29 at index 1"],
    );
    let dir = decoder_bundle(&tmp, "labels", Family::Llama, false, true);
    edit_tensor(&dir, VALIDATION, "labels", |b| {
        b[0..8].copy_from_slice(&(-1i64).to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::ValidationValues,
        &[VALIDATION, &t("labels"), "-1 at index 0"],
    );
}

#[test]
fn rule_6_3_original_next_token_predictions_in_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama(&tmp);
    edit_tensor(&dir, VALIDATION, "original_predictions", |b| {
        b[16..24].copy_from_slice(&1000i64.to_le_bytes())
    });
    rehash(&dir);
    data_violation(
        &dir,
        check_validation_values,
        Rule::OriginalPredictions,
        &[VALIDATION, &t("original_predictions"), "1000 at index 2"],
    );
}
