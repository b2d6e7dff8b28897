//! Rules 2.x: manifest.json.

use super::*;

/// Pads the manifest of `dir` with trailing spaces to exactly `size` bytes.
fn pad_manifest_to(dir: &Path, size: usize) {
    // Trailing whitespace is still JSON; the padded manifest is resealed (rule 7.3).
    edit_manifest_text(dir, |t| {
        assert!(t.len() <= size);
        t.extend(std::iter::repeat_n(' ', size - t.len()));
    });
}

#[test]
fn rule_2_1_manifest_over_16_mib() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    pad_manifest_to(&dir, 16 * 1024 * 1024 + 1);
    open_violation(
        &dir,
        Rule::ManifestSize,
        &[MANIFEST, "16777216", "16777217 bytes"],
    );
}

#[test]
fn rule_2_1_manifest_of_exactly_16_mib_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    pad_manifest_to(&dir, 16 * 1024 * 1024);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_2_2_duplicate_top_level_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"format\": \"ternary-bundle\",",
            "\"format\": \"ternary-bundle\",\n  \"format\": \"ternary-bundle\",",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "duplicate key"]);
}

#[test]
fn rule_2_2_duplicate_key_deep_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"zero_point\": 0",
            "\"zero_point\": 0, \"zero_point\": 0",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "zero_point"]);
}

#[test]
fn rule_2_2_nan_literal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"sparsity_threshold\": 0.5",
            "\"sparsity_threshold\": NaN",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

#[test]
fn rule_2_2_infinity_literal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"sparsity_threshold\": 0.5",
            "\"sparsity_threshold\": Infinity",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

/// `"extensions": {}` replaced by `levels` nested values (`[[...]]` or `{"a":{...}}`).
fn nest_extensions(dir: &Path, levels: usize, objects: bool) {
    let (open, close) = if objects {
        ("{\"a\":", "}")
    } else {
        ("[", "]")
    };
    let inner = if objects { "{}" } else { "[]" };
    let nested = format!(
        "{}{inner}{}",
        open.repeat(levels - 1),
        close.repeat(levels - 1)
    );
    edit_manifest_text(dir, |s| {
        replace_once(
            s,
            "\"extensions\": {}",
            &format!("\"extensions\": {nested}"),
        )
    });
}

#[test]
fn rule_2_2_extensions_nested_10000_levels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    nest_extensions(&dir, 10_000, false);
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "recursion limit"]);
}

/// Spec rule 2.2: the top-level object has depth 1; depth 127 is the deepest accepted.
#[test]
fn rule_2_2_nesting_depth_128_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // Depth 1 (top-level object) + 127 levels of extensions = 128.
    nest_extensions(&dir, 127, true);
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "recursion limit"]);
}

#[test]
fn rule_2_2_nesting_depth_127_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // Depth 1 + 126 levels of extensions (objects) = 127.
    nest_extensions(&dir, 126, true);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
    // The same depth with arrays.
    let dir = tiny_bundle(&tmp, "arrays", |_, _| {});
    nest_extensions(&dir, 126, false);
    edit_manifest_text(&dir, |s| {
        replace_once(s, "\"extensions\": [", "\"extensions\": {\"x\": [");
        s.truncate(s.trim_end().len() - 1);
        s.push_str("}}\n");
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "recursion limit"]);
}

#[test]
fn rule_2_2_keys_are_compared_after_unescaping() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"extensions\": {}",
            "\"extensions\": {\"ab\": 1, \"a\\u0062\": 2}",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "duplicate key"]);
}

#[test]
fn rule_2_2_unpaired_surrogate_escape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(
            s,
            "\"extensions\": {}",
            "\"extensions\": {\"note\": \"\\ud800\"}",
        )
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

#[test]
fn rule_2_2_byte_order_mark() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| s.insert(0, '\u{feff}'));
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

#[test]
fn rule_2_2_trailing_comma() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(s, "\"extensions\": {}", "\"extensions\": {\"a\": 1,}")
    });
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST]);
}

#[test]
fn rule_2_2_top_level_not_an_object() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let m = manifest(&dir);
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&json!([m])).unwrap()).unwrap();
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "not an object"]);
}

#[test]
fn rule_2_2_invalid_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(MANIFEST);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"relu\"").unwrap();
    bytes[at] = 0xFF;
    std::fs::write(&path, bytes).unwrap();
    open_violation(&dir, Rule::ManifestJson, &[MANIFEST, "invalid UTF-8"]);
}

#[test]
fn rule_2_3_format_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["format"] = json!("x"));
    open_violation(
        &dir,
        Rule::FormatName,
        &[MANIFEST, "ternary-bundle", "\"x\""],
    );
}

/// Spec rule 2.4: "A missing or non-string `format` breaks rule 2.3".
#[test]
fn rule_2_3_format_missing_or_not_a_string() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    edit_manifest(&dir, |m| {
        m.as_object_mut().unwrap().remove("format").unwrap();
    });
    open_violation(&dir, Rule::FormatName, &[MANIFEST]);
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    edit_manifest(&dir, |m| m["format"] = json!(["ternary-bundle"]));
    open_violation(&dir, Rule::FormatName, &[MANIFEST]);
}

/// Spec rule 2.4: "a missing, non-string or malformed `format_version` breaks rule 2.4".
#[test]
fn rule_2_4_format_version_missing_or_not_a_string() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    edit_manifest(&dir, |m| {
        m.as_object_mut().unwrap().remove("format_version").unwrap();
    });
    open_violation(&dir, Rule::FormatVersion, &[MANIFEST]);
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    edit_manifest(&dir, |m| m["format_version"] = json!(1.0));
    open_violation(&dir, Rule::FormatVersion, &[MANIFEST]);
}

#[test]
fn rule_2_4_major_6_is_refused_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["format_version"] = json!("6.0"));
    open_violation(
        &dir,
        Rule::FormatVersion,
        &[MANIFEST, "6.0", "1.0", "2.0", "3.0", "4.0", "5.0"],
    );
}

#[test]
fn rule_2_4_majors_1_to_5_are_all_read() {
    // A 5.x reader opens 1.x to 4.x bundles, and a bundle that meets the 1.0 rules is also a
    // valid 2.0, 3.0, 4.0 and 5.0 bundle (2.0 adds an optional tensor, 3.0 the decoder form of
    // `model`, 4.0 given trits and assets, 5.0 the original distributions).
    let tmp = tempfile::tempdir().unwrap();
    for v in [
        "1.0", "2.0", "2.3", "3.0", "3.1", "4.0", "4.2", "5.0", "5.1",
    ] {
        let dir = tiny_bundle(&tmp, v, |_, _| {});
        edit_manifest(&dir, |m| m["format_version"] = json!(v));
        let b = Bundle::open(&dir).unwrap();
        assert_eq!(b.facts().version.to_string(), v);
        check_all(&b).unwrap();
    }
}

#[test]
fn rule_2_4_major_6_with_a_different_structure_is_a_version_error() {
    // A future MAJOR may change the structure: the version is reported, not a missing field.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["format_version"] = json!("6.0");
        m.as_object_mut().unwrap().remove("files");
        m["model"] = json!("a graph");
    });
    open_violation(&dir, Rule::FormatVersion, &[MANIFEST, "6.0", "5.0"]);
}

#[test]
fn rule_2_4_malformed_versions() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, v) in [
        "1",
        "01.0",
        "1.00",
        "1.01",
        "1.0.0",
        "+1.0",
        "-1.0",
        " 1.0",
        "1.",
        ".0",
        "",
        "1,0",
        "1.0a",
        "１.0",
        "1234567890.0",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["format_version"] = json!(v));
        open_violation(&dir, Rule::FormatVersion, &[MANIFEST]);
    }
}

#[test]
fn rule_2_4_other_majors_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, v) in ["0.9", "0.0", "6.1", "999999999.0"].into_iter().enumerate() {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["format_version"] = json!(v));
        open_violation(&dir, Rule::FormatVersion, &[MANIFEST, v, "1.0", "2.0"]);
    }
}

#[test]
fn rule_2_5_files_key_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m.as_object_mut().unwrap().remove("files").unwrap();
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST, "files"]);
}

#[test]
fn rule_2_5_field_of_the_wrong_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["input_dim"] = json!("7"));
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST]);
}

#[test]
fn rule_2_4_format_version_as_a_number_is_a_version_error() {
    // Rules 2.3 and 2.4 come before the schema rule 2.5, whatever the JSON type.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["format_version"] = json!(1.0));
    let err = Bundle::open(&dir).unwrap_err();
    assert!(err.rule() == Some(Rule::FormatVersion), "{err}");
    assert!(
        err.to_string().contains(MANIFEST) && err.to_string().contains("a number"),
        "{err}"
    );
}

#[test]
fn rule_2_5_integer_written_with_a_fraction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        replace_once(s, "\"input_dim\": 7,", "\"input_dim\": 7.0,")
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST]);
}

#[test]
fn rule_2_5_required_nullable_key_missing() {
    // `bias` is "name or null" and required: omitting the key is not the same as null.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let layer = m["model"]["layers"][1].as_object_mut().unwrap();
        assert!(layer.remove("bias").unwrap().is_null());
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST, "bias"]);
}

/// Spec 3.2: an f32 field's value is the f32 nearest to the exact decimal. The decimal below
/// lies just above the midpoint between 1.0 and 1.0000001 (0x3F800001), so its nearest f32 is
/// 1.0000001; parsing it to f64 first lands exactly on the midpoint, which then rounds to even
/// (1.0): a double rounding.
#[test]
fn rule_2_8_f32_fields_round_the_exact_decimal_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest_text(&dir, |s| {
        let at = s.find("\"epsilon\": ").unwrap() + "\"epsilon\": ".len();
        let end = at + s[at..].find(',').unwrap();
        s.replace_range(at..end, "1.0000000596046447754");
    });
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.params().epsilon.to_bits(), 0x3F80_0001);
}

#[test]
fn rule_2_6_name_with_terminal_escape_is_refused_and_printed_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc1.bias")["name"] = json!("fc1\u{1b}[2J");
    });
    let msg = open_violation(
        &dir,
        Rule::Names,
        &[MANIFEST, "tensor \"fc1\\u{1b}[2J\"", "control characters"],
    );
    assert!(
        !msg.contains('\u{1b}'),
        "raw escape reached the message: {msg:?}"
    );
}

#[test]
fn rule_2_6_duplicate_tensor_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let dup = tensor_entry(m, "fc1.bias").clone();
        m["tensors"].as_array_mut().unwrap().push(dup);
    });
    open_violation(&dir, Rule::Names, &[MANIFEST, &t("fc1.bias"), "duplicate"]);
}

#[test]
fn rule_2_6_duplicate_layer_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["layers"][1]["name"] = json!("fc1"));
    open_violation(&dir, Rule::Names, &[MANIFEST, "\"fc1\" twice"]);
}

#[test]
fn rule_2_6_duplicate_names_in_a_file_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let list = m["files"]["fp16"]["tensors"].as_array_mut().unwrap();
        let dup = list[0].clone();
        list.push(dup);
    });
    open_violation(&dir, Rule::Names, &[MANIFEST, "files.fp16.tensors"]);
}

#[test]
fn rule_2_6_reserved_empty_and_long_names() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "x".repeat(513);
    for (i, (name, what)) in [
        ("__metadata__", "reserved"),
        ("", "empty"),
        (long.as_str(), "513 bytes"),
        ("fc1\u{85}bias", "control"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["model"]["layers"][0]["name"] = json!(name));
        open_violation(&dir, Rule::Names, &[MANIFEST, what]);
    }
    // 512 bytes is allowed.
    let dir = tiny_bundle(&tmp, "ok", |_, _| {});
    edit_manifest(&dir, |m| {
        m["model"]["layers"][0]["name"] = json!("é".repeat(256));
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_2_6_quantized_tensor_name_over_506_bytes() {
    // Its scale tensor `<name>.scale` would exceed 512 bytes.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let long = "w".repeat(507);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc2.weight")["name"] = json!(long)
    });
    open_violation(&dir, Rule::Names, &[MANIFEST, "506", "507 bytes"]);
}

#[test]
fn rule_2_7_manifest_shape_of_rank_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc1.bias")["shape"] = json!([13, 1, 1, 1, 1, 1, 1, 1, 1]);
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, "rank"]);
}

#[test]
fn rule_2_7_manifest_shape_of_rank_9_is_refused() {
    // However deep the shape, it is refused without storing more than MAX_RANK + 1 dims.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc1.bias")["shape"] = json!([13, 1, 1, 1, 1, 1, 1, 1, 1]);
    });
    let err = Bundle::open(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err.rule(), Some(Rule::TensorList | Rule::ManifestSchema)),
        "{msg}"
    );
    assert!(msg.contains(MANIFEST) && msg.contains("rank"), "{msg}");
}

#[test]
fn rule_2_7_quantized_tensor_missing_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc1.weight")
            .as_object_mut()
            .unwrap()
            .remove("zeros")
            .unwrap();
    });
    open_violation(
        &dir,
        Rule::TensorList,
        &[MANIFEST, &t("fc1.weight"), "zeros"],
    );
}

#[test]
fn rule_2_7_zeros_above_element_count() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| tensor_entry(m, "fc1.weight")["zeros"] = json!(92));
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("fc1.weight"), "91"]);
}

#[test]
fn rule_2_7_scale_min_above_scale_max() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc2.weight");
        let max = e["scale_max"].clone();
        e["scale_min"] = json!(max.as_f64().unwrap() * 2.0);
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("fc2.weight")]);
}

#[test]
fn rule_2_7_non_positive_scale_min() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        tensor_entry(m, "fc2.weight")["scale_min"] = json!(0)
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("fc2.weight")]);
}

#[test]
fn rule_2_7_stats_on_a_tensor_that_is_not_quantized() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| tensor_entry(m, "fc1.bias")["zeros"] = json!(0));
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("fc1.bias")]);
}

#[test]
fn rule_2_7_null_stats_on_a_tensor_that_is_not_quantized_are_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let e = tensor_entry(m, "fc1.bias");
        e["zeros"] = Value::Null;
        e["scale_min"] = Value::Null;
        e["scale_max"] = Value::Null;
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_2_7_tensor_named_like_a_scale_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["tensors"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "fc1.weight.scale", "shape": [13], "quantized": false}));
    });
    open_violation(
        &dir,
        Rule::TensorList,
        &[MANIFEST, &t("fc1.weight.scale"), "collision"],
    );
}

#[test]
fn rule_2_7_empty_tensor_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["tensors"] = json!([]));
    open_violation(&dir, Rule::TensorList, &[MANIFEST, "1..=32768 tensors"]);
}

#[test]
fn rule_2_7_quantized_tensor_without_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["tensors"].as_array_mut().unwrap().push(json!({
            "name": "empty", "shape": [3, 0], "quantized": true,
            "zeros": 0, "scale_min": 1.0, "scale_max": 1.0
        }));
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("empty"), "[3, 0]"]);
}

#[test]
fn rule_2_7_element_count_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["tensors"].as_array_mut().unwrap().push(json!({
            "name": "huge", "shape": [1u64 << 20, 1u64 << 20, 2], "quantized": false
        }));
    });
    open_violation(&dir, Rule::TensorList, &[MANIFEST, &t("huge"), "elements"]);
}

#[test]
fn rule_2_8_encoding_trit3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["encoding"] = json!("trit3"));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "trit3"]);
}

#[test]
fn rule_2_8_method_not_absmean() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["method"] = json!("absmax"));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "absmax"]);
}

#[test]
fn rule_2_8_group_size_with_channel_granularity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["group_size"] = json!(4));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "group_size"]);
}

#[test]
fn rule_2_8_group_granularity_without_valid_group_size() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, g) in [Value::Null, json!(0), json!(4_294_967_296u64)]
        .into_iter()
        .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| {
            m["quantization"]["granularity"] = json!("group");
            m["quantization"]["group_size"] = g;
        });
        open_violation(&dir, Rule::Quantization, &[MANIFEST, "group_size"]);
    }
}

#[test]
fn rule_2_8_unknown_granularity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["granularity"] = json!("row"));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "\"row\""]);
}

#[test]
fn rule_2_8_epsilon_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["epsilon"] = json!(0));
    open_violation(&dir, Rule::Quantization, &[MANIFEST, "epsilon"]);
}

#[test]
fn rule_2_8_epsilon_overflowing_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["epsilon"] = json!(1e300));
    let err = Bundle::open(&dir).unwrap_err();
    // An f32 field holding a number beyond f32 is refused (as a quantization or schema error).
    assert!(
        matches!(err.rule(), Some(Rule::Quantization | Rule::ManifestSchema)),
        "{err}"
    );
}

#[test]
fn rule_2_8_threshold_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, thr) in [json!(1.0), json!(-0.1), json!(0.99999999)]
        .into_iter()
        .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["quantization"]["sparsity_threshold"] = thr);
        open_violation(&dir, Rule::Quantization, &[MANIFEST, "sparsity_threshold"]);
    }
}

#[test]
fn rule_2_8_zero_point_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["quantization"]["zero_point"] = json!(1));
    open_violation(
        &dir,
        Rule::Quantization,
        &[MANIFEST, "zero_point 0", "found 1"],
    );
}

#[test]
fn rule_2_9_model_chain_break() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["layers"][1]["in_features"] = json!(12));
    open_violation(
        &dir,
        Rule::Model,
        &[MANIFEST, "layer 1", "in_features 13", "found 12"],
    );
}

#[test]
fn rule_2_9_first_layer_does_not_take_input_dim() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["input_dim"] = json!(8));
    open_violation(&dir, Rule::Model, &[MANIFEST, "layer 0", "input_dim"]);
}

#[test]
fn rule_2_9_activation_swish() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["model"]["layers"][0]["activation"] = json!("swish")
    });
    open_violation(&dir, Rule::Model, &[MANIFEST, "swish", "\"fc1\""]);
}

#[test]
fn rule_2_9_weight_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // fc2.norm.weight has shape [13], not [13, 7].
    edit_manifest(&dir, |m| {
        m["model"]["layers"][0]["weight"] = json!("fc2.norm.weight")
    });
    open_violation(
        &dir,
        Rule::Model,
        &[MANIFEST, "\"fc2.norm.weight\"", "[13, 7]"],
    );
}

#[test]
fn rule_2_9_undeclared_tensor_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["model"]["layers"][0]["bias"] = json!("fc1.b"));
    open_violation(
        &dir,
        Rule::Model,
        &[MANIFEST, "\"fc1.b\"", "no such tensor"],
    );
}

#[test]
fn rule_2_9_rmsnorm_eps_not_positive() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["model"]["layers"][1]["rmsnorm"]["eps"] = json!(0)
    });
    open_violation(&dir, Rule::Model, &[MANIFEST, "rmsnorm eps"]);
}

#[test]
fn rule_2_9_input_dim_zero_and_no_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "a", |_, _| {});
    edit_manifest(&dir, |m| m["model"]["input_dim"] = json!(0));
    open_violation(&dir, Rule::Model, &[MANIFEST, "input_dim >= 1"]);
    let dir = tiny_bundle(&tmp, "b", |_, _| {});
    edit_manifest(&dir, |m| m["model"]["layers"] = json!([]));
    open_violation(&dir, Rule::Model, &[MANIFEST, "layers"]);
}

#[test]
fn rule_2_10_file_sha256_not_lowercase_hex() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let s = m["files"]["ternary"]["sha256"]
            .as_str()
            .unwrap()
            .to_uppercase();
        m["files"]["ternary"]["sha256"] = json!(s);
    });
    open_violation(
        &dir,
        Rule::FileTable,
        &[MANIFEST, "files.ternary", "sha256"],
    );
}

#[test]
fn rule_2_10_tensor_sha256_too_short() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        let list = m["files"]["fp16"]["tensors"].as_array_mut().unwrap();
        let e = list.iter_mut().find(|e| e["name"] == "fc2.weight").unwrap();
        e["sha256"] = json!("abc");
    });
    open_violation(
        &dir,
        Rule::FileTable,
        &[MANIFEST, &t("fc2.weight"), "\"abc\""],
    );
}

#[test]
fn rule_2_11_source_sha256_xyz() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["provenance"]["source_sha256"] = json!("xyz"));
    open_violation(
        &dir,
        Rule::Provenance,
        &[MANIFEST, "source_sha256", "\"xyz\""],
    );
}

#[test]
fn rule_2_11_created_not_an_rfc3339_utc_date_time() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, created) in [
        "yesterday",
        "2024-02-30T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:00:00+00:00",
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00:00.Z",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["provenance"]["created"] = json!(created));
        open_violation(&dir, Rule::Provenance, &[MANIFEST, "created"]);
    }
    for (i, created) in ["2024-02-29T23:59:60Z", "2024-01-01T00:00:00.123456Z"]
        .into_iter()
        .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("ok{i}"), |_, o| {
            o.created = Some(created.to_string())
        });
        let b = Bundle::open(&dir).unwrap();
        assert_eq!(b.manifest().provenance.created.as_deref(), Some(created));
    }
}

#[test]
fn rule_2_11_valid_source_sha256_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let digest = sha256_hex(b"checkpoint");
    let d = digest.clone();
    let dir = tiny_bundle(&tmp, "b", move |_, o| {
        o.source_sha256 = ternary_bundle::write::bundle::SourceDigest::Given(d)
    });
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.manifest().provenance.source_sha256, Some(digest));
}

#[test]
fn rule_2_12_extensions_is_a_number() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| m["extensions"] = json!(5));
    open_violation(&dir, Rule::Extensions, &[MANIFEST, "an object", "a number"]);
}

#[test]
fn rule_2_12_extensions_with_content_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["extensions"] = json!({"org.example": {"notes": [1, 2, {"x": null}]}})
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn newer_minor_manifest_with_unknown_keys_opens_and_passes_all_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // The bundle holds original predictions and distributions, so it is 5.0: its newer minor
    // is 5.7.
    edit_manifest(&dir, |m| {
        m["format_version"] = json!("5.7");
        m["new_top_level_key"] = json!({"anything": [1, 2, 3]});
        tensor_entry(m, "fc1.weight")["new_tensor_key"] = json!("outlier-aware");
        tensor_entry(m, "fc1.bias")["new_tensor_key"] = json!(null);
        m["quantization"]["new_quantization_key"] = json!(0.25);
        m["model"]["layers"][0]["new_layer_key"] = json!(true);
        m["files"]["ternary"]["new_file_key"] = json!(1);
        m["files"]["fp16"]["tensors"][0]["new_digest_key"] = json!("x");
        m["provenance"]["new_provenance_key"] = json!({});
    });
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.facts().version, FormatVersion { major: 5, minor: 7 });
    check_all(&b).unwrap();
}

/// Sets the manifest's `format_version` to `v` (resealed).
fn set_version(dir: &Path, v: &str) {
    edit_manifest(dir, |m| m["format_version"] = json!(v));
}

#[test]
fn rule_2_8_given_bundle_opens_with_null_quantizer_settings() {
    use ternary_bundle::format::quantization::QuantMethod;
    let tmp = tempfile::tempdir().unwrap();
    let dir = given_bundle(&tmp, "b");
    let m = manifest(&dir);
    assert_eq!(m["quantization"]["method"], "given");
    assert!(m["quantization"]["epsilon"].is_null());
    assert!(m["quantization"]["sparsity_threshold"].is_null());
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.facts().method, QuantMethod::Given);
    check_all(&b).unwrap();
}

/// Spec rule 2.8: "A bundle whose MAJOR is below 4 with method "given" breaks this rule."
#[test]
fn rule_2_8_method_given_below_format_4() {
    let tmp = tempfile::tempdir().unwrap();
    for v in ["3.0", "2.0", "1.0", "3.9"] {
        let dir = given_bundle(&tmp, v);
        set_version(&dir, v);
        open_violation(
            &dir,
            Rule::Quantization,
            &[MANIFEST, "\"given\"", &format!("format {v}")],
        );
    }
    // A newer minor of 4 still knows it.
    let dir = given_bundle(&tmp, "4.1");
    set_version(&dir, "4.1");
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_2_8_method_given_with_quantizer_settings() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, (key, value)) in [("epsilon", json!(1e-5)), ("sparsity_threshold", json!(0.5))]
        .into_iter()
        .enumerate()
    {
        let dir = given_bundle(&tmp, &format!("b{i}"));
        edit_manifest(&dir, |m| m["quantization"][key] = value);
        open_violation(
            &dir,
            Rule::Quantization,
            &[MANIFEST, "null for method \"given\"", key],
        );
    }
    // The keys are required (f32 or null): omitting one is a schema error.
    let dir = given_bundle(&tmp, "missing");
    edit_manifest(&dir, |m| {
        m["quantization"].as_object_mut().unwrap().remove("epsilon");
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST, "epsilon"]);
}

#[test]
fn rule_2_8_method_absmean_with_null_settings() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, key) in ["epsilon", "sparsity_threshold"].into_iter().enumerate() {
        // In every version: 4.0 (assets) and 1.0.
        let dir = bundle_with_assets(&tmp, &format!("v4-{i}"));
        edit_manifest(&dir, |m| m["quantization"][key] = Value::Null);
        open_violation(
            &dir,
            Rule::Quantization,
            &[MANIFEST, "numbers for method \"absmean\"", "None"],
        );
        let dir = tiny_bundle(&tmp, &format!("v1-{i}"), |_, _| {});
        edit_manifest(&dir, |m| m["quantization"][key] = Value::Null);
        open_violation(&dir, Rule::Quantization, &[MANIFEST, "absmean"]);
    }
}

#[test]
fn rule_2_8_unknown_method_in_format_4() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, method) in ["Given", "absmax", "", "given "].into_iter().enumerate() {
        let dir = given_bundle(&tmp, &format!("b{i}"));
        edit_manifest(&dir, |m| m["quantization"]["method"] = json!(method));
        open_violation(
            &dir,
            Rule::Quantization,
            &[
                MANIFEST,
                "method \"absmean\" or \"given\"",
                &format!("{method:?}"),
            ],
        );
    }
}

#[test]
fn rule_2_15_given_source_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = given_bundle(&tmp, "b");
    let m = manifest(&dir);
    assert_eq!(
        m["quantization"]["source"],
        json!({
            "format": "quantization-metadata",
            "scale_name": "scales",
            "scale_convention": "multiply",
            "details": {"quantization_scheme": "1.58-bit", "sparsity_threshold": 0.5}
        })
    );
    let b = Bundle::open(&dir).unwrap();
    let source = b.manifest().quantization.source.as_ref().unwrap();
    assert_eq!(source.format, "quantization-metadata");
}

#[test]
fn rule_2_15_given_without_source() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = given_bundle(&tmp, "absent");
    edit_manifest(&dir, |m| {
        m["quantization"].as_object_mut().unwrap().remove("source");
    });
    open_violation(
        &dir,
        Rule::QuantizationSource,
        &[MANIFEST, "quantization.source", "found none"],
    );
    let dir = given_bundle(&tmp, "null");
    edit_manifest(&dir, |m| m["quantization"]["source"] = Value::Null);
    open_violation(&dir, Rule::QuantizationSource, &[MANIFEST, "found none"]);
}

#[test]
fn rule_2_15_absmean_with_a_source() {
    let tmp = tempfile::tempdir().unwrap();
    let given = manifest(&given_bundle(&tmp, "given"));
    let dir = bundle_with_assets(&tmp, "b");
    edit_manifest(&dir, |m| {
        m["quantization"]["source"] = given["quantization"]["source"].clone()
    });
    open_violation(
        &dir,
        Rule::QuantizationSource,
        &[MANIFEST, "no quantization.source for method \"absmean\""],
    );
    // null is the same as absent.
    let dir = bundle_with_assets(&tmp, "null");
    edit_manifest(&dir, |m| m["quantization"]["source"] = Value::Null);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_2_15_scale_convention_times() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = given_bundle(&tmp, "b");
    edit_manifest(&dir, |m| {
        m["quantization"]["source"]["scale_convention"] = json!("times")
    });
    open_violation(
        &dir,
        Rule::QuantizationSource,
        &[MANIFEST, "scale_convention", "\"times\""],
    );
    // "divide" is the other convention.
    let dir = given_bundle(&tmp, "divide");
    edit_manifest(&dir, |m| {
        m["quantization"]["source"]["scale_convention"] = json!("divide")
    });
    Bundle::open(&dir).unwrap();
}

#[test]
fn rule_2_15_format_and_scale_name_of_1_to_64_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "f".repeat(65);
    for key in ["format", "scale_name"] {
        for (i, value) in ["", long.as_str()].into_iter().enumerate() {
            let dir = given_bundle(&tmp, &format!("{key}{i}"));
            edit_manifest(&dir, |m| m["quantization"]["source"][key] = json!(value));
            open_violation(
                &dir,
                Rule::QuantizationSource,
                &[
                    MANIFEST,
                    &format!("quantization.source.{key}"),
                    "1 to 64 bytes",
                ],
            );
        }
        // 64 bytes (of UTF-8: 32 two-byte characters) is the limit; writers may name others.
        let dir = given_bundle(&tmp, &format!("{key}-ok"));
        edit_manifest(&dir, |m| {
            m["quantization"]["source"][key] = json!("é".repeat(32))
        });
        Bundle::open(&dir).unwrap();
    }
}

/// Rule 2.15: `format` and `scale_name` hold no control characters (as names, rule 2.6): they
/// are printed by every tool that shows the source.
#[test]
fn rule_2_15_source_strings_with_a_control_character_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = given_bundle(&tmp, "b");
    edit_manifest(&dir, |m| {
        m["quantization"]["source"]["format"] = json!("quantization\tmetadata")
    });
    open_violation(&dir, Rule::QuantizationSource, &[MANIFEST, "control"]);
}

#[test]
fn rule_2_15_source_keys_missing_or_mistyped() {
    // In a 4.x manifest the keys of rule 2.15 are required with their types (rule 2.5).
    let tmp = tempfile::tempdir().unwrap();
    let dir = given_bundle(&tmp, "missing");
    edit_manifest(&dir, |m| {
        m["quantization"]["source"]
            .as_object_mut()
            .unwrap()
            .remove("scale_name");
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST, "scale_name"]);
    let dir = given_bundle(&tmp, "number");
    edit_manifest(&dir, |m| m["quantization"]["source"]["format"] = json!(5));
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST]);
    let dir = given_bundle(&tmp, "string");
    edit_manifest(&dir, |m| m["quantization"]["source"] = json!("metadata"));
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST]);
}

#[test]
fn rule_2_15_details_not_an_object() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, (details, found)) in [
        (json!(5), "a number"),
        (json!("1.58-bit"), "a string"),
        (json!([1, 2]), "an array"),
        (json!(true), "a boolean"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = given_bundle(&tmp, &format!("b{i}"));
        edit_manifest(&dir, |m| m["quantization"]["source"]["details"] = details);
        open_violation(
            &dir,
            Rule::QuantizationSource,
            &[MANIFEST, "quantization.source.details", found],
        );
    }
    // Absent, null or any object (free content) is fine.
    for (i, details) in [Value::Null, json!({"nested": {"deep": [1, null]}})]
        .into_iter()
        .enumerate()
    {
        let dir = given_bundle(&tmp, &format!("ok{i}"));
        edit_manifest(&dir, |m| m["quantization"]["source"]["details"] = details);
        check_all(&Bundle::open(&dir).unwrap()).unwrap();
    }
    let dir = given_bundle(&tmp, "absent");
    edit_manifest(&dir, |m| {
        m["quantization"]["source"]
            .as_object_mut()
            .unwrap()
            .remove("details");
    });
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

/// Below 4.0 `quantization.source` is an unknown key: ignored, whatever it holds.
#[test]
fn rule_2_15_source_is_ignored_below_format_4() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, source) in [
        json!(5),
        json!({"format": ""}),
        json!({"scale_convention": "times"}),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_manifest(&dir, |m| {
            m["format_version"] = json!("3.0");
            m["quantization"]["source"] = source;
        });
        let b = Bundle::open(&dir).unwrap();
        assert!(b.manifest().quantization.source.is_none());
        check_all(&b).unwrap();
    }
}

/// A bundle with original predictions records the original model (the source, dense); with
/// its distributions it is 5.0.
#[test]
fn rule_2_16_original_is_recorded_with_original_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "b", |_, o| {
        o.validation = Some(validation_set());
        o.assets = vec![asset(TOKENIZER, TOKENIZER_BYTES)];
    });
    let m = manifest(&dir);
    assert_eq!(m["format_version"], "5.0");
    assert_eq!(
        m["provenance"]["original"],
        json!({"forward": "dense", "sha256": null})
    );
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_2_16_forward_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    edit_manifest(&dir, |m| {
        m["provenance"]["original"] = json!({"forward": "sparse", "sha256": null})
    });
    open_violation(
        &dir,
        Rule::OriginalModel,
        &[MANIFEST, "provenance.original.forward", "\"sparse\""],
    );
    for (i, forward) in ["dense", "ternary", "bitnet-online"]
        .into_iter()
        .enumerate()
    {
        let dir = bundle_with_assets(&tmp, &format!("ok{i}"));
        edit_manifest(&dir, |m| {
            m["provenance"]["original"] = json!({"forward": forward, "sha256": null})
        });
        let b = Bundle::open(&dir).unwrap();
        assert_eq!(
            b.manifest().provenance.original.as_ref().unwrap().forward,
            forward
        );
    }
}

#[test]
fn rule_2_16_sha256_not_lowercase_hex() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = sha256_hex(b"original").to_uppercase();
    for (i, digest) in ["xyz", upper.as_str(), ""].into_iter().enumerate() {
        let dir = bundle_with_assets(&tmp, &format!("b{i}"));
        edit_manifest(&dir, |m| {
            m["provenance"]["original"] = json!({"forward": "dense", "sha256": digest})
        });
        open_violation(
            &dir,
            Rule::OriginalModel,
            &[MANIFEST, "provenance.original.sha256"],
        );
    }
    let digest = sha256_hex(b"original");
    let dir = bundle_with_assets(&tmp, "ok");
    edit_manifest(&dir, |m| {
        m["provenance"]["original"] = json!({"forward": "ternary", "sha256": digest})
    });
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(
        b.manifest().provenance.original.as_ref().unwrap().sha256,
        Some(digest)
    );
}

/// Below 4.0 `provenance.original` is an unknown key, ignored whatever it holds; in a 4.x
/// manifest it must have its type (rule 2.5).
#[test]
fn rule_2_16_bogus_original_is_ignored_below_4_and_a_schema_error_in_4() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, bogus) in [json!(5), json!({"forward": "sparse"}), json!("dense")]
        .into_iter()
        .enumerate()
    {
        let dir = tiny_bundle(&tmp, &format!("v3-{i}"), |_, _| {});
        edit_manifest(&dir, |m| {
            m["format_version"] = json!("3.0");
            m["provenance"]["original"] = bogus.clone();
        });
        let b = Bundle::open(&dir).unwrap();
        assert!(b.manifest().provenance.original.is_none());
        check_all(&b).unwrap();

        let dir = bundle_with_assets(&tmp, &format!("v4-{i}"));
        edit_manifest(&dir, |m| m["provenance"]["original"] = bogus);
        open_violation(&dir, Rule::ManifestSchema, &[MANIFEST]);
    }
    // Without its required key sha256 (sha256 or null).
    let dir = bundle_with_assets(&tmp, "no-sha");
    edit_manifest(&dir, |m| {
        m["provenance"]["original"] = json!({"forward": "dense"})
    });
    open_violation(&dir, Rule::ManifestSchema, &[MANIFEST, "sha256"]);
}

#[test]
fn rule_2_17_asset_table_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    assert_eq!(
        manifest(&dir)["files"]["assets"],
        json!([{
            "name": TOKENIZER,
            "size": TOKENIZER_BYTES.len(),
            "sha256": sha256_hex(TOKENIZER_BYTES)
        }])
    );
}

#[test]
fn rule_2_17_unknown_asset_name() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, name) in [
        "config.json",
        "../x",
        "/etc/passwd",
        "Tokenizer.json",
        "tokenizer.json/",
        "",
        "model.safetensors",
        "manifest.json",
    ]
    .into_iter()
    .enumerate()
    {
        let dir = bundle_with_assets(&tmp, &format!("b{i}"));
        if ["config.json", "Tokenizer.json", "model.safetensors"].contains(&name) {
            // The file exists under that name too: only the name is wrong.
            std::fs::copy(dir.join(TOKENIZER), dir.join(name)).unwrap();
        }
        edit_manifest(&dir, |m| m["files"]["assets"][0]["name"] = json!(name));
        open_violation(
            &dir,
            Rule::Assets,
            &[
                MANIFEST,
                "files.assets",
                "tokenizer.json, tokenizer_config.json",
                &format!("{name:?}"),
            ],
        );
    }
}

#[test]
fn rule_2_17_duplicate_asset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    edit_manifest(&dir, |m| {
        let list = m["files"]["assets"].as_array_mut().unwrap();
        let dup = list[0].clone();
        list.push(dup);
    });
    open_violation(
        &dir,
        Rule::Assets,
        &[MANIFEST, "each name once", "tokenizer.json twice"],
    );
}

#[test]
fn rule_2_17_asset_sha256_not_lowercase_hex() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = sha256_hex(TOKENIZER_BYTES).to_uppercase();
    for (i, digest) in ["abc", upper.as_str()].into_iter().enumerate() {
        let dir = bundle_with_assets(&tmp, &format!("b{i}"));
        edit_manifest(&dir, |m| m["files"]["assets"][0]["sha256"] = json!(digest));
        open_violation(
            &dir,
            Rule::Assets,
            &[
                MANIFEST,
                "files.assets",
                TOKENIZER,
                "sha256",
                &format!("{digest:?}"),
            ],
        );
    }
}

/// At most one entry per name of rule 1.6, so more entries than names break rule 2.17.
#[test]
fn rule_2_17_six_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    edit_manifest(&dir, |m| {
        let list = m["files"]["assets"].as_array_mut().unwrap();
        let first = list[0].clone();
        for name in [
            "tokenizer_config.json",
            "special_tokens_map.json",
            "tokenizer.model",
            "generation_config.json",
            "tokenizer.json",
        ] {
            let mut e = first.clone();
            e["name"] = json!(name);
            list.push(e);
        }
        assert_eq!(list.len(), 6);
    });
    open_violation(&dir, Rule::Assets, &[MANIFEST, "files.assets"]);
}

#[test]
fn rule_2_17_asset_entry_of_the_wrong_type() {
    // In a 4.x manifest the asset table has its types (rule 2.5).
    let tmp = tempfile::tempdir().unwrap();
    for (i, edit) in [
        json!("tokenizer.json"),
        json!([{"name": TOKENIZER, "size": "49", "sha256": sha256_hex(b"")}]),
        json!([{"name": TOKENIZER, "size": -1, "sha256": sha256_hex(b"")}]),
        json!([{"name": TOKENIZER, "sha256": sha256_hex(b"")}]),
        json!({"tokenizer.json": {}}),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = bundle_with_assets(&tmp, &format!("b{i}"));
        edit_manifest(&dir, |m| m["files"]["assets"] = edit);
        open_violation(&dir, Rule::ManifestSchema, &[MANIFEST]);
    }
    // null means no assets (the file is then an extra entry).
    let dir = bundle_with_assets(&tmp, "null");
    edit_manifest(&dir, |m| m["files"]["assets"] = Value::Null);
    let b = Bundle::open(&dir).unwrap();
    assert!(b.assets().is_empty());
    assert_eq!(b.extras(), [TOKENIZER.to_string()]);
}

/// Below 4.0 `files.assets` is an unknown key, ignored whatever it holds, and the asset files
/// are extra entries (rule 2.17).
#[test]
fn rule_2_17_assets_are_ignored_below_format_4() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, garbage) in [
        json!("lots"),
        json!(5),
        json!([{"name": "../../etc/passwd", "size": 1, "sha256": "x"}]),
        Value::Null,
    ]
    .into_iter()
    .enumerate()
    {
        let dir = bundle_with_assets(&tmp, &format!("b{i}"));
        edit_manifest(&dir, |m| {
            m["format_version"] = json!("3.0");
            m["files"]["assets"] = garbage;
        });
        let b = Bundle::open(&dir).unwrap();
        assert!(b.assets().is_empty());
        assert!(b.manifest().files.assets.is_none());
        assert_eq!(b.extras(), [TOKENIZER.to_string()]);
        check_all(&b).unwrap();
    }
    // Even a valid table is ignored below 4.0: the listed file may then be missing.
    let dir = bundle_with_assets(&tmp, "valid");
    set_version(&dir, "3.0");
    std::fs::remove_file(dir.join(TOKENIZER)).unwrap();
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}
