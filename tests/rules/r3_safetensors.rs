//! Rules 3.x: the safetensors container (on ternary.safetensors unless stated).

use super::*;

#[test]
fn rule_3_1_byte_appended_to_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(TERNARY);
    let mut bytes = std::fs::read(&path).unwrap();
    let size = bytes.len();
    bytes.push(0);
    std::fs::write(&path, bytes).unwrap();
    open_violation(
        &dir,
        Rule::FileSize,
        &[
            TERNARY,
            &format!("{size} bytes (manifest files.ternary)"),
            &format!("found {} bytes", size + 1),
        ],
    );
}

#[test]
fn rule_3_1_fp16_file_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(FP16);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
    open_violation(&dir, Rule::FileSize, &[FP16, "files.fp16"]);
}

/// Overwrites the 8-byte header length of `file` with `n` (size unchanged, manifest rehashed).
fn set_header_len(dir: &Path, file: &str, n: u64) {
    let path = dir.join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    rehash(dir);
}

#[test]
fn rule_3_2_header_length_beyond_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let size = std::fs::metadata(dir.join(TERNARY)).unwrap().len();
    set_header_len(&dir, TERNARY, size - 7);
    open_violation(
        &dir,
        Rule::HeaderLength,
        &[TERNARY, &format!("{}", size - 7)],
    );
}

#[test]
fn rule_3_2_header_length_near_u64_max() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_header_len(&dir, FP16, u64::MAX - 3);
    open_violation(&dir, Rule::HeaderLength, &[FP16]);
}

#[test]
fn rule_3_2_header_length_above_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    set_header_len(&dir, TERNARY, 100_000_001);
    open_violation(
        &dir,
        Rule::HeaderLength,
        &[TERNARY, "100000000", "100000001"],
    );
}

#[test]
fn rule_3_2_file_shorter_than_8_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    std::fs::write(dir.join(TERNARY), [1, 2, 3]).unwrap();
    rehash(&dir);
    open_violation(&dir, Rule::HeaderLength, &[TERNARY, "3 bytes"]);
}

#[test]
fn rule_3_3_duplicate_tensor_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let entry = st.entry_text("fc1.bias");
        let text = st.header_text().replacen('{', &format!("{{{entry},"), 1);
        st.set_header_text(&text);
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::HeaderJson,
        &[TERNARY, "duplicate key", "fc1.bias"],
    );
}

#[test]
fn rule_3_3_duplicate_field_in_an_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let text = st.header_text().replacen(
            "\"dtype\":\"F32\"",
            "\"dtype\":\"F32\",\"dtype\":\"F32\"",
            1,
        );
        st.set_header_text(&text);
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[TERNARY, "dtype"]);
}

#[test]
fn rule_3_3_invalid_json_header() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let text = st.header_text();
        st.set_header_text(&text.trim_end()[..text.trim_end().len() - 1]);
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[TERNARY]);
}

#[test]
fn rule_3_3_header_not_an_object() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| st.set_header_text("[1, 2]"));
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[TERNARY]);
}

#[test]
fn rule_3_3_header_invalid_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let at = st.header.iter().position(|&b| b == b'F').unwrap();
        st.header[at] = 0xC0;
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[TERNARY, "UTF-8"]);
}

#[test]
fn rule_3_3_metadata_not_a_string_map() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| {
        let text = st.header_text().replacen("\"pt\"", "1", 1);
        st.set_header_text(&text);
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderJson, &[FP16]);
}

#[test]
fn rule_3_3_header_with_trailing_spaces_and_reordered_keys_is_fine() {
    // Readers accept any valid layout: re-serialize the header (sorted keys), pad it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let v = st.json();
        st.set_json(&v);
        st.header.extend_from_slice(b"     ");
    });
    rehash(&dir);
    check_all(&Bundle::open(&dir).unwrap()).unwrap();
}

#[test]
fn rule_3_4_shape_of_rank_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.bias"]["shape"] = json!([13, 1, 1, 1, 1, 1, 1, 1, 1]))
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderEntries, &[TERNARY, "rank"]);
}

#[test]
fn rule_3_4_unknown_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.bias"]["dtype"] = json!("Q4"))
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderEntries, &[TERNARY, &t("fc1.bias"), "Q4"]);
}

#[test]
fn rule_3_4_lowercase_and_f8_dtypes() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, dtype) in ["f32", "F8_E4M3", "F32 "].into_iter().enumerate() {
        let dir = tiny_bundle(&tmp, &format!("b{i}"), |_, _| {});
        edit_st(&dir, TERNARY, |st| {
            st.edit_json(|v| v["fc1.bias"]["dtype"] = json!(dtype))
        });
        rehash(&dir);
        open_violation(&dir, Rule::HeaderEntries, &[TERNARY, &t("fc1.bias")]);
    }
}

#[test]
fn rule_3_4_control_character_in_a_tensor_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| {
            let o = v.as_object_mut().unwrap();
            let e = o.remove("fc1.bias").unwrap();
            o.insert("fc1\u{7}bias".into(), e);
        })
    });
    rehash(&dir);
    let msg = open_violation(
        &dir,
        Rule::HeaderEntries,
        &[TERNARY, "tensor \"fc1\\u{7}bias\"", "control characters"],
    );
    assert!(!msg.contains('\u{7}'), "{msg:?}");
}

#[test]
fn rule_3_4_more_than_65536_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        let mut text = String::from("{");
        for i in 0..65_537 {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!(
                "\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}"
            ));
        }
        text.push('}');
        st.set_header_text(&text);
        st.data.clear();
    });
    rehash(&dir);
    open_violation(&dir, Rule::HeaderEntries, &[TERNARY, "65536"]);
}

#[test]
fn rule_3_5_shape_disagrees_with_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| v["fc1.bias"]["shape"] = json!([12]))
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::TensorByteLength,
        &[TERNARY, &t("fc1.bias"), "48 bytes"],
    );
}

#[test]
fn rule_3_5_start_after_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| {
            let [a, b] = [
                v["fc1.bias"]["data_offsets"][0].clone(),
                v["fc1.bias"]["data_offsets"][1].clone(),
            ];
            v["fc1.bias"]["data_offsets"] = json!([b, a]);
        })
    });
    rehash(&dir);
    open_violation(&dir, Rule::TensorByteLength, &[TERNARY, &t("fc1.bias")]);
}

#[test]
fn rule_3_5_element_count_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| {
            v["fc1.bias"]["shape"] = json!([4294967296u64, 4294967296u64, 16]);
        })
    });
    rehash(&dir);
    open_violation(&dir, Rule::TensorByteLength, &[TERNARY, &t("fc1.bias")]);
}

#[test]
fn rule_3_6_overlapping_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    // fc1.bias and fc2.norm.weight are both F32 [13]: give the second the first's bytes.
    edit_st(&dir, TERNARY, |st| {
        st.edit_json(|v| {
            v["fc2.norm.weight"]["data_offsets"] = v["fc1.bias"]["data_offsets"].clone();
        })
    });
    rehash(&dir);
    open_violation(
        &dir,
        Rule::DataOffsets,
        &[TERNARY, &t("fc2.norm.weight"), "overlaps"],
    );
}

#[test]
fn rule_3_6_gap_between_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let mut last = String::new();
    edit_st(&dir, TERNARY, |st| {
        let h = st.parsed();
        let e = h.entries.last().unwrap().clone();
        last = e.name.clone();
        st.edit_json(|v| v[&e.name]["data_offsets"] = json!([e.start + 1, e.end + 1]));
        st.data.push(0);
    });
    rehash(&dir);
    open_violation(&dir, Rule::DataOffsets, &[TERNARY, &t(&last), "gap"]);
}

#[test]
fn rule_3_6_trailing_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| st.data.extend_from_slice(&[0; 4]));
    rehash(&dir);
    open_violation(&dir, Rule::DataOffsets, &[FP16, "ending at"]);
}

#[test]
fn rule_3_6_data_not_starting_at_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_st(&dir, FP16, |st| {
        let h = st.parsed();
        st.edit_json(|v| {
            for e in &h.entries {
                v[&e.name]["data_offsets"] = json!([e.start + 2, e.end + 2]);
            }
        });
        st.data.splice(0..0, [0u8, 0]);
    });
    rehash(&dir);
    open_violation(&dir, Rule::DataOffsets, &[FP16, "starting at offset 0"]);
}

#[test]
fn rule_3_7_manifest_listing_lacks_a_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| unlist(m, "ternary", "fc1.bias"));
    open_violation(
        &dir,
        Rule::HeaderMatchesManifest,
        &[TERNARY, &t("fc1.bias"), "unlisted"],
    );
}

#[test]
fn rule_3_7_manifest_lists_a_tensor_the_file_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_manifest(&dir, |m| {
        m["files"]["fp16"]["tensors"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "ghost", "sha256": sha256_hex(b"")}));
    });
    open_violation(
        &dir,
        Rule::HeaderMatchesManifest,
        &[FP16, &t("ghost"), "no such tensor"],
    );
}
