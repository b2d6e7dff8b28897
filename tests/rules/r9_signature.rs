//! Rules 9.x: the signature, `model.sig` (spec section 10.1).
//!
//! Each test signs a valid bundle (`sign_bundle`, or the writer's `WriteOptions::sign_key`),
//! shows that `check_signature` passes on it, then breaks one rule and asserts the violation
//! (through `read_signature` / `Statement::parse` where the rule is the parser's, and through
//! `check_signature`, what `bundle verify --trusted-key` runs). A statement that must reach the
//! statement parser or the file comparison is re-signed by the trusted key, so that every rule
//! checked before the target keeps passing.

use super::*;

use ternary_bundle::signing::envelope::{pae, subject_digest, Resource, SignatureFile, Statement};
use ternary_bundle::signing::{
    check_signature, read_signature, sign_bundle, PublicKey, Signed, SigningKey, SIGNATURE_FILE,
};

/// A P-384 private key made for these tests only (`openssl ecparam -name secp384r1 -genkey |
/// openssl pkcs8 -topk8 -nocrypt`): `SigningKey::generate_p256` makes P-256 keys only.
const TEST_P384_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCwp0TCL2kwV7mhed1+
eDluwLs2RVlf6kNIZJ6gxbvwm5Im/7AhEjK7MU5+PGkBMU+hZANiAASoJFsWuImp
+6EGRUdBerqSDnbE5gqu1Xfbjz9mlEsQqSaITGS7H4arhOU9szzcSLsdcyBoXOuU
4tJp6F+K789V0rrH2AJKn2qEQJNmGlqgqZ+a9hoNlqsk1RL86BBv/08=
-----END PRIVATE KEY-----
";

/// A valid bundle in `tmp/name`, signed by a new P-256 key; the bundle (opened) and the key.
fn signed_bundle(tmp: &tempfile::TempDir, name: &str) -> (PathBuf, Bundle, SigningKey) {
    let dir = tiny_bundle(tmp, name, |_, _| {});
    let key = SigningKey::generate_p256();
    sign_bundle(&dir, &key).unwrap_or_else(|e| panic!("a valid bundle signs: {e}"));
    let b = Bundle::open(&dir).unwrap();
    (dir, b, key)
}

/// `check_signature` with the file digests read from the files (not taken from the manifest).
fn check(dir: &Path, b: &Bundle, trusted: &[PublicKey]) -> Result<Option<Signed>> {
    check_signature(dir, b, trusted, false)
}

/// Asserts that the signature of `dir` checks against `trusted`, with or without the manifest's
/// digests standing for the files; returns what was signed.
#[track_caller]
fn passes(dir: &Path, b: &Bundle, trusted: &[PublicKey]) -> Signed {
    let read = check(dir, b, trusted)
        .unwrap_or_else(|e| panic!("the signature should check: {e}"))
        .expect("signed");
    let known = check_signature(dir, b, trusted, true).unwrap().unwrap();
    assert_eq!(read, known);
    read
}

/// The statement `model.sig` of `dir` signs, as JSON.
fn statement_json(dir: &Path) -> Value {
    let file = read_signature(dir).unwrap().expect("signed");
    serde_json::from_slice(&file.payload).unwrap()
}

/// Writes `model.sig` in `dir`: `payload` signed by `key` (a valid signature over any bytes).
fn write_signed(dir: &Path, key: &SigningKey, payload: Vec<u8>) {
    let file = SignatureFile {
        hint: key.public().hint(),
        signature: key.sign(&pae(&payload)),
        payload,
    };
    std::fs::write(dir.join(SIGNATURE_FILE), file.to_bytes()).unwrap();
}

#[test]
fn rule_9_1_signature_file_of_another_media_type_or_not_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, b, key) = signed_bundle(&tmp, "b");
    let trusted = [key.public()];
    // Valid: the file parses, the signature checks.
    let file = read_signature(&dir).unwrap().expect("signed");
    assert_eq!(file.hint, key.public().hint());
    passes(&dir, &b, &trusted);

    // The media type of the Sigstore bundle v0.2 (all else intact).
    let path = dir.join(SIGNATURE_FILE);
    let good = std::fs::read_to_string(&path).unwrap();
    let bad = good.replacen("bundle.v0.3+json", "bundle.v0.2+json", 1);
    assert_ne!(bad, good);
    std::fs::write(&path, &bad).unwrap();
    let parts = [SIGNATURE_FILE, "mediaType", "bundle.v0.2+json"];
    expect_violation(read_signature(&dir), Rule::SignatureFile, &parts);
    expect_violation(check(&dir, &b, &trusted), Rule::SignatureFile, &parts);

    // A directory where model.sig should be: not a signature, never an I/O error.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let parts = [SIGNATURE_FILE, "a regular file"];
    expect_violation(read_signature(&dir), Rule::SignatureFile, &parts);
    expect_violation(check(&dir, &b, &trusted), Rule::SignatureFile, &parts);

    // Put back, it passes again.
    std::fs::remove_dir(&path).unwrap();
    std::fs::write(&path, &good).unwrap();
    passes(&dir, &b, &trusted);
}

#[test]
fn rule_9_2_subject_digest_does_not_cover_the_resources() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, b, key) = signed_bundle(&tmp, "b");
    let trusted = [key.public()];
    // Valid: the signed statement parses, lists the bundle's files, and checks.
    let file = read_signature(&dir).unwrap().unwrap();
    let statement = Statement::parse(&dir.join(SIGNATURE_FILE), &file.payload).unwrap();
    let names: Vec<&str> = statement
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        [FP16, MANIFEST, TERNARY],
        "sorted, model.sig left out"
    );
    assert_eq!(passes(&dir, &b, &trusted).files.len(), 3);

    // The same statement with another subject digest, signed by the same trusted key: the
    // signature verifies, the statement does not hold.
    let mut v = statement_json(&dir);
    let zeros = "0".repeat(64);
    v["subject"][0]["digest"]["sha256"] = json!(zeros);
    let payload = serde_json::to_vec_pretty(&v).unwrap();
    let parts = [SIGNATURE_FILE, "subject digest", zeros.as_str()];
    expect_violation(
        Statement::parse(&dir.join(SIGNATURE_FILE), &payload),
        Rule::SignatureStatement,
        &parts,
    );
    write_signed(&dir, &key, payload);
    read_signature(&dir)
        .unwrap()
        .expect("the file itself is well formed");
    expect_violation(check(&dir, &b, &trusted), Rule::SignatureStatement, &parts);

    // A resource named outside the directory (its digest and the subject's unchanged).
    let mut v = statement_json(&dir);
    v["subject"][0]["digest"]["sha256"] = json!(subject_digest(&statement.resources).unwrap());
    v["predicate"]["resources"][0]["name"] = json!("../fp16.safetensors");
    write_signed(&dir, &key, serde_json::to_vec_pretty(&v).unwrap());
    expect_violation(
        check(&dir, &b, &trusted),
        Rule::SignatureStatement,
        &["resource names", "../fp16.safetensors"],
    );

    // Re-signed as it was, it passes.
    write_signed(&dir, &key, statement.to_payload());
    passes(&dir, &b, &trusted);
}

#[test]
fn rule_9_3_signature_by_an_untrusted_key_or_over_other_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, b, key) = signed_bundle(&tmp, "b");
    let other = SigningKey::generate_p256();
    // Valid: trusted alone, or among other keys.
    passes(&dir, &b, &[key.public()]);
    let s = passes(&dir, &b, &[other.public(), key.public()]);
    assert_eq!(
        (s.hint.as_str(), s.curve),
        (key.public().hint().as_str(), "P-256")
    );

    // Another key trusted: the hint names the signer, who is not trusted.
    expect_violation(
        check(&dir, &b, &[other.public()]),
        Rule::SignatureKey,
        &[SIGNATURE_FILE, &key.public().hint(), &other.public().hint()],
    );
    // No key trusted at all.
    expect_violation(check(&dir, &b, &[]), Rule::SignatureKey, &[SIGNATURE_FILE]);

    // The payload changed by one byte (a space added at its end, still the same statement),
    // the signature and hint kept: the trusted key's signature no longer verifies.
    let path = dir.join(SIGNATURE_FILE);
    let good = std::fs::read(&path).unwrap();
    let mut file = SignatureFile::parse(&path, &good).unwrap();
    file.payload.push(b' ');
    Statement::parse(&path, &file.payload).expect("the statement itself is intact");
    std::fs::write(&path, file.to_bytes()).unwrap();
    expect_violation(
        check(&dir, &b, &[key.public()]),
        Rule::SignatureKey,
        &[SIGNATURE_FILE, "does not verify"],
    );

    // The hint of the trusted key on another key's signature.
    let mut file = SignatureFile::parse(&path, &good).unwrap();
    file.signature = other.sign(&pae(&file.payload));
    std::fs::write(&path, file.to_bytes()).unwrap();
    expect_violation(
        check(&dir, &b, &[key.public()]),
        Rule::SignatureKey,
        &["does not verify"],
    );

    // A P-384 key signs with SHA-384 and is checked as such; a P-256 key does not verify it.
    let p384 = SigningKey::from_pem(Path::new("test-p384.pem"), TEST_P384_KEY).unwrap();
    assert_eq!(p384.curve(), "P-384");
    sign_bundle(&dir, &p384).unwrap();
    let s = passes(&dir, &b, &[key.public(), p384.public()]);
    assert_eq!(s.curve, "P-384");
    let mut file = read_signature(&dir).unwrap().unwrap();
    file.hint = key.public().hint();
    std::fs::write(&path, file.to_bytes()).unwrap();
    expect_violation(
        check(&dir, &b, &[key.public()]),
        Rule::SignatureKey,
        &["P-256", "does not verify"],
    );
}

#[test]
fn rule_9_4_files_differ_from_the_signed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    // Signed by the writer itself (create --sign-key), in the staging directory.
    let key = SigningKey::generate_p256();
    let dir = tiny_bundle(&tmp, "b", |_, o| o.sign_key = Some(key.clone()));
    let b = Bundle::open(&dir).unwrap();
    let trusted = [key.public()];
    // Valid: exactly the bundle's files, unchanged (the version-control files are left out
    // as model_signing leaves them out).
    std::fs::write(dir.join(".gitattributes"), b"*.safetensors filter=lfs\n").unwrap();
    assert_eq!(passes(&dir, &b, &trusted).files, [FP16, MANIFEST, TERNARY]);

    // An extra file.
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
    expect_violation(
        check(&dir, &b, &trusted),
        Rule::SignedFiles,
        &["extra: notes.txt", "the 3 files signed"],
    );
    std::fs::remove_file(dir.join("notes.txt")).unwrap();
    passes(&dir, &b, &trusted);

    // A changed file (one byte appended: the signature, not the manifest, catches it when the
    // manifest's digests are not taken for the files).
    let fp16 = dir.join(FP16);
    let good = std::fs::read(&fp16).unwrap();
    let mut bad = good.clone();
    bad.push(0);
    std::fs::write(&fp16, &bad).unwrap();
    expect_violation(
        check(&dir, &b, &trusted),
        Rule::SignedFiles,
        &["changed: fp16.safetensors"],
    );
    // A missing one.
    std::fs::remove_file(&fp16).unwrap();
    expect_violation(
        check(&dir, &b, &trusted),
        Rule::SignedFiles,
        &["missing: fp16.safetensors"],
    );
    std::fs::write(&fp16, &good).unwrap();
    passes(&dir, &b, &trusted);

    // A symbolic link in the directory: a signature covers no links.
    std::os::unix::fs::symlink(FP16, dir.join("link")).unwrap();
    expect_violation(
        check(&dir, &b, &trusted),
        Rule::SignedFiles,
        &["link", "a symbolic link"],
    );
    expect_violation(
        sign_bundle(&dir, &key),
        Rule::SignedFiles,
        &["link", "a symbolic link"],
    );
    std::fs::remove_file(dir.join("link")).unwrap();

    // A statement whose ignore_paths leave out a bundle file, signed by the trusted key (and
    // so not listing it): the signature does not cover the bundle.
    let mut v = statement_json(&dir);
    v["predicate"]["serialization"]["ignore_paths"]
        .as_array_mut()
        .unwrap()
        .push(json!(FP16));
    let resources: Vec<Resource> =
        serde_json::from_value::<Vec<Value>>(v["predicate"]["resources"].clone())
            .unwrap()
            .into_iter()
            .filter(|r| r["name"] != FP16)
            .map(|r| Resource {
                name: r["name"].as_str().unwrap().into(),
                digest: r["digest"].as_str().unwrap().into(),
            })
            .collect();
    let statement = Statement {
        subject: "b".into(),
        ignore_paths: serde_json::from_value(
            v["predicate"]["serialization"]["ignore_paths"].clone(),
        )
        .unwrap(),
        resources,
    };
    write_signed(&dir, &key, statement.to_payload());
    expect_violation(
        check(&dir, &b, &trusted),
        Rule::SignedFiles,
        &["ignore_paths leaves out fp16.safetensors"],
    );
}
