//! Rules 7.x: checksums.

use super::*;

#[test]
fn rule_7_1_header_padding_byte_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    // Some file's header carries padding spaces (8 + N is a multiple of 8); a padding byte is
    // in no tensor's data, so only the whole-file digest can notice.
    let file = [TERNARY, FP16, VALIDATION]
        .into_iter()
        .find(|f| St::read(&dir.join(f)).header.ends_with(b" "))
        .expect("a header with padding");
    edit_st(&dir, file, |st| {
        let last = st.header.len() - 1;
        st.header[last] = b'\n'; // still JSON whitespace: the header stays valid
    });
    let b = Bundle::open(&dir).unwrap();
    expect_violation(check_digests(&b), Rule::FileDigest, &[file, "sha256"]);
    expect_violation(check_all(&b), Rule::FileDigest, &[file]);
}

#[test]
fn rule_7_1_manifest_file_digest_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let wrong = sha256_hex(b"something else");
    edit_manifest(&dir, |m| m["files"]["fp16"]["sha256"] = json!(wrong));
    let b = Bundle::open(&dir).unwrap();
    expect_violation(
        check_digests(&b),
        Rule::FileDigest,
        &[FP16, &format!("expected sha256 {wrong}")],
    );
}

#[test]
fn rule_7_2_tensor_byte_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    edit_tensor(&dir, TERNARY, "fc2.norm.weight", |b| b[17] ^= 0x20);
    let b = Bundle::open(&dir).unwrap();
    expect_violation(
        check_digests(&b),
        Rule::TensorDigest,
        &[TERNARY, &t("fc2.norm.weight")],
    );
    expect_violation(
        check_all(&b),
        Rule::TensorDigest,
        &[t("fc2.norm.weight").as_str()],
    );
}

#[test]
fn rule_7_2_validation_tensor_byte_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_validation(&tmp);
    edit_tensor(&dir, VALIDATION, "difficulty", |b| b[1] = 200);
    let b = Bundle::open(&dir).unwrap();
    expect_violation(
        check_digests(&b),
        Rule::TensorDigest,
        &[VALIDATION, &t("difficulty")],
    );
}

#[test]
fn rule_7_3_manifest_edited_without_resealing() {
    // Any change to the manifest that leaves it valid is caught by its own digest: here the
    // provenance text, which no other rule constrains.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "\"tool\": \"ternary-bundle\"",
            "\"tool\": \"ternary-bundlf\"",
            1,
        ),
    )
    .unwrap();
    open_violation(
        &dir,
        Rule::ManifestDigest,
        &[MANIFEST, "rule 7.3", "manifest_sha256"],
    );
}

#[test]
fn rule_7_3_damaged_digest_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle(&tmp);
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let digest = m["manifest_sha256"].as_str().unwrap();
    let flipped: String = digest
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == 'a' {
                    'b'
                } else {
                    'a'
                }
            } else {
                c
            }
        })
        .collect();
    std::fs::write(&path, text.replace(digest, &flipped)).unwrap();
    open_violation(&dir, Rule::ManifestDigest, &[MANIFEST, &flipped]);
}

#[test]
fn errors_of_an_open_bundle_name_file_tensor_and_rule() {
    // What the model code reports if a tensor it reads is missing or undecodable (a bundle
    // that skipped validation): the file, the tensor, the rule, expected and found.
    use ternary_bundle::format::encoding::RowError;
    let tmp = tempfile::tempdir().unwrap();
    let b = Bundle::open(bundle(&tmp)).unwrap();
    let e = b.row_error(
        "fc1.weight",
        3,
        RowError::InvalidByte {
            index: 1,
            byte: 243,
        },
    );
    expect_violation::<()>(
        Err(e),
        Rule::PackedByteValid,
        &[
            TERNARY,
            &t("fc1.weight"),
            "bytes 0..=242 (trit5)",
            "byte 0xf3 at row 3, byte 1",
        ],
    );
    let e = b.missing_tensor(ternary_bundle::FileRole::Fp16, "fc9.weight");
    expect_violation::<()>(
        Err(e),
        Rule::HeaderMatchesManifest,
        &[FP16, &t("fc9.weight"), "no such tensor"],
    );
}

#[test]
fn rule_7_4_asset_byte_changed() {
    // Same size (rule 1.6 passes when opening); the manifest is untouched, so its digest (rule
    // 7.3) holds; only the asset's own digest can notice.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    let mut bytes = TOKENIZER_BYTES.to_vec();
    let at = bytes.iter().position(|&c| c == b'a').unwrap();
    bytes[at] = b'b';
    std::fs::write(dir.join(TOKENIZER), &bytes).unwrap();
    let b = Bundle::open(&dir).unwrap();
    let declared = sha256_hex(TOKENIZER_BYTES);
    let parts = [
        TOKENIZER,
        &format!("expected sha256 {declared} (manifest files.assets)"),
        &format!("found sha256 {}", sha256_hex(&bytes)),
    ];
    expect_violation(
        ternary_bundle::read::checks::check_asset_digests(&b),
        Rule::AssetDigest,
        &parts,
    );
    expect_violation(check_digests(&b), Rule::AssetDigest, &parts);
    expect_violation(check_all(&b), Rule::AssetDigest, &parts);
}

#[test]
fn rule_7_4_asset_replaced_and_its_size_updated() {
    // Another file under the asset's name, its size edited in the manifest (resealed, rule 7.3)
    // but not its digest.
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    let other = b"{\"model\": {\"type\": \"BPE\"}}";
    std::fs::write(dir.join(TOKENIZER), other).unwrap();
    edit_manifest(&dir, |m| {
        m["files"]["assets"][0]["size"] = json!(other.len())
    });
    data_violation(
        &dir,
        check_digests,
        Rule::AssetDigest,
        &[TOKENIZER, &sha256_hex(other)],
    );
}

#[test]
fn rule_7_4_second_asset_digest_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_bundle(&tmp, "b", |_, o| {
        o.assets = vec![
            asset(TOKENIZER, TOKENIZER_BYTES),
            asset("generation_config.json", b"{\"do_sample\": false}"),
        ]
    });
    std::fs::write(
        dir.join("generation_config.json"),
        b"{\"do_sample\": true }",
    )
    .unwrap();
    let b = Bundle::open(&dir).unwrap();
    let msg = expect_violation(
        check_all(&b),
        Rule::AssetDigest,
        &["generation_config.json"],
    );
    assert!(!msg.contains(TOKENIZER), "{msg}");
}

/// Rule 7.3: the asset table is covered by the manifest digest like every other field.
#[test]
fn rule_7_3_asset_table_edited_without_resealing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundle_with_assets(&tmp, "b");
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    let declared = sha256_hex(TOKENIZER_BYTES);
    let forged = sha256_hex(b"forged");
    assert_eq!(text.matches(&declared).count(), 1);
    std::fs::write(&path, text.replace(&declared, &forged)).unwrap();
    open_violation(&dir, Rule::ManifestDigest, &[MANIFEST, "manifest_sha256"]);
}
