//! Hostile `model.sig` files (spec section 10.1, rules 9.1 to 9.4): every malformed, oversized,
//! deeply nested, non-canonical or misplaced input to the parser (`SignatureFile::parse`,
//! `Statement::parse`, `read_signature`) and to the check (`check_dir`) is a clean violation of
//! the rule it breaks, naming `model.sig` and the rule, never a panic, a hang or an I/O error.
//! Statement-level inputs are signed by the trusted key, so that they reach the statement parser.
//!
//! And the other way: the signatures the `model_signing` tool writes (`tests/data/model_signing/`,
//! P-256 and P-384) parse, verify with the tool's public keys, and check against re-creations
//! of the directories they were made over.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use ternary_bundle::signing::envelope::{
    pae, subject_digest, valid_name, Resource, SignatureFile, Statement, MAX_SIGNATURE_BYTES,
};
use ternary_bundle::signing::{
    check_dir, read_signature, sign_dir, PublicKey, Signed, SigningKey, SIGNATURE_FILE,
};
use ternary_bundle::{Error, Result, Rule};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/model_signing");

/// `model_signing sign key` (P-256) over the 10 files of [`tool_model`].
const TOOL_P256: &[u8] = include_bytes!("../data/model_signing/example_p256_model.sig");
/// The same with a P-384 key.
const TOOL_P384: &[u8] = include_bytes!("../data/model_signing/example_p384_model.sig");
/// The same files in the layout `bundle sign` writes (sorted `ignore_paths`), which the tool
/// verifies.
const CANONICAL_P256: &[u8] = include_bytes!("../data/model_signing/canonical_p256_model.sig");
/// The tool's signature of a directory of odd names (backslash, newline and tab, an emoji).
const TOOL_ODD_NAMES: &[u8] = include_bytes!("../data/model_signing/odd_names_p256_model.sig");
/// The tool's signature of an empty directory.
const TOOL_EMPTY_DIR: &[u8] = include_bytes!("../data/model_signing/empty_dir_p256_model.sig");
/// The tool's public keys.
const PUB_P256: &str = include_str!("../data/model_signing/pub.pem");
const PUB_P384: &str = include_str!("../data/model_signing/pub384.pem");

/// The path errors name.
fn sig_path() -> PathBuf {
    PathBuf::from("bundle").join(SIGNATURE_FILE)
}

/// Asserts that `result` is a violation of `rule` naming `model.sig` (or, for rule 9.4, the
/// directory) and the rule, and containing every one of `parts`; returns the message.
#[track_caller]
fn expect_rule<T: Debug>(result: Result<T>, rule: Rule, parts: &[&str]) -> String {
    let err: Error = match result {
        Ok(v) => panic!(
            "expected a violation of rule {}, got Ok({v:?})",
            rule.number()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert_eq!(err.rule(), Some(rule), "wrong rule: {msg}");
    assert!(
        msg.contains(&format!("(rule {})", rule.number())),
        "message lacks the rule number: {msg}"
    );
    if rule != Rule::SignedFiles {
        assert!(
            msg.contains(SIGNATURE_FILE),
            "message lacks model.sig: {msg}"
        );
    }
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
    msg
}

/// `SignatureFile::parse` of `bytes` is a violation of rule 9.1 containing `parts`.
#[track_caller]
fn parse_fails(bytes: &[u8], parts: &[&str]) -> String {
    expect_rule(
        SignatureFile::parse(&sig_path(), bytes),
        Rule::SignatureFile,
        parts,
    )
}

/// A signed directory to check hostile signatures against: two files (one in a
/// subdirectory), signed by `key` with `bundle sign`'s layout.
struct Signed2 {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    key: SigningKey,
    /// The signature's bytes as `sign_dir` wrote them.
    good: Vec<u8>,
}

impl Signed2 {
    fn new() -> Signed2 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("weights.bin"), b"\x00\x01\x02").unwrap();
        std::fs::write(dir.join("sub/readme.txt"), b"hello\n").unwrap();
        let key = SigningKey::generate_p256();
        sign_dir(&dir, "bundle", &key, &BTreeMap::new()).unwrap();
        let good = std::fs::read(dir.join(SIGNATURE_FILE)).unwrap();
        Signed2 {
            _tmp: tmp,
            dir,
            key,
            good,
        }
    }

    /// The signed statement, as JSON.
    fn statement(&self) -> Value {
        let f = SignatureFile::parse(&sig_path(), &self.good).unwrap();
        serde_json::from_slice(&f.payload).unwrap()
    }

    /// `model.sig` bytes signing `payload` with the trusted key.
    fn signed(&self, payload: Vec<u8>) -> Vec<u8> {
        SignatureFile {
            hint: self.key.public().hint(),
            signature: self.key.sign(&pae(&payload)),
            payload,
        }
        .to_bytes()
    }

    /// Writes `bytes` as `model.sig`, reads it and checks the directory against the trusted
    /// key, as `bundle verify --trusted-key` does.
    fn check(&self, bytes: &[u8]) -> Result<Signed> {
        std::fs::write(self.dir.join(SIGNATURE_FILE), bytes).unwrap();
        self.check_on_disk()
    }

    /// Reads `model.sig` as it is and checks the directory.
    fn check_on_disk(&self) -> Result<Signed> {
        let file = read_signature(&self.dir)?.expect("a model.sig");
        check_dir(
            &self.dir,
            &file,
            &[self.key.public()],
            &BTreeMap::new(),
            &BTreeSet::new(),
        )
    }

    /// `bytes` fail both the parser and the check with a violation of rule 9.1.
    #[track_caller]
    fn file_fails(&self, bytes: &[u8], parts: &[&str]) {
        parse_fails(bytes, parts);
        expect_rule(self.check(bytes), Rule::SignatureFile, parts);
    }

    /// The statement `v`, signed by the trusted key, fails the statement parser and the check
    /// with a violation of rule 9.2.
    #[track_caller]
    fn statement_fails(&self, v: &Value, parts: &[&str]) {
        self.payload_fails(serde_json::to_vec_pretty(v).unwrap(), parts)
    }

    /// Like [`Signed2::statement_fails`] for payload bytes.
    #[track_caller]
    fn payload_fails(&self, payload: Vec<u8>, parts: &[&str]) {
        expect_rule(
            Statement::parse(&sig_path(), &payload),
            Rule::SignatureStatement,
            parts,
        );
        let bytes = self.signed(payload);
        SignatureFile::parse(&sig_path(), &bytes).expect("the envelope itself is well formed");
        expect_rule(self.check(&bytes), Rule::SignatureStatement, parts);
    }
}

/// The envelope of `bytes` as JSON, edited by `f`, back to bytes.
fn edit(bytes: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn the_valid_directory_checks() {
    // What every hostile case below departs from.
    let s = Signed2::new();
    let signed = s.check(&s.good).unwrap();
    assert_eq!(signed.files, ["sub/readme.txt", "weights.bin"]);
    assert_eq!(signed.curve, "P-256");
}

#[test]
fn malformed_json_is_rule_9_1() {
    let s = Signed2::new();
    for bad in [
        &b""[..],
        b" ",
        b"{",
        b"}",
        b"not json",
        b"null",
        b"[]",
        b"\"model.sig\"",
        b"42",
        b"{}",
        b"{\"mediaType\":",
        b"{\"mediaType\": 1}",
        b"\xff\xfe{}",
        b"{\"mediaType\":\"\xff\"}",
        b"\x00",
    ] {
        s.file_fails(bad, &[]);
    }
    // Trailing bytes after the object.
    let mut trailing = s.good.clone();
    trailing.extend_from_slice(b"}");
    s.file_fails(&trailing, &[]);
    // A trailing newline is whitespace, not a change (the tool accepts pretty-printed files).
    let mut newline = s.good.clone();
    newline.push(b'\n');
    s.check(&newline).unwrap();
}

#[test]
fn every_truncation_of_a_real_signature_is_rule_9_1() {
    for (name, bytes) in [("p256", TOOL_P256), ("p384", TOOL_P384)] {
        SignatureFile::parse(&sig_path(), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        for n in 0..bytes.len() {
            parse_fails(&bytes[..n], &[]);
        }
    }
    // Through the check too, for a sample of lengths (every 97th and the last few).
    let s = Signed2::new();
    let n = s.good.len();
    for len in (0..n).step_by(97).chain(n - 3..n) {
        s.file_fails(&s.good[..len], &[]);
    }
}

#[test]
fn an_oversized_signature_fails_by_its_size_before_being_read() {
    let limit = MAX_SIGNATURE_BYTES as usize;
    // In memory: refused by the size alone, whatever the bytes.
    parse_fails(
        &vec![b' '; limit + 1],
        &["at most 16777216 bytes", "16777217 bytes"],
    );
    // On disk: sparse files of the limit plus one byte and of 64 GiB (which no reader that
    // read it all would get through): refused from their size.
    let s = Signed2::new();
    let path = s.dir.join(SIGNATURE_FILE);
    for size in [MAX_SIGNATURE_BYTES + 1, 64 << 30] {
        let _ = std::fs::remove_file(&path);
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap();
        drop(f);
        let found = format!("{size} bytes");
        expect_rule(
            read_signature(&s.dir),
            Rule::SignatureFile,
            &["at most 16777216 bytes", &found],
        );
        expect_rule(s.check_on_disk(), Rule::SignatureFile, &[&found]);
    }
    // A valid signature padded with whitespace up to the limit still reads.
    let mut padded = s.good.clone();
    padded.resize(limit, b' ');
    s.check(&padded).unwrap();
}

#[test]
fn deeply_nested_json_is_a_violation_not_a_stack_overflow() {
    let s = Signed2::new();
    let deep = 100_000;
    let arrays = "[".repeat(deep).into_bytes();
    let objects = "{\"a\":".repeat(deep).into_bytes();
    s.file_fails(&arrays, &[]);
    s.file_fails(&objects, &[]);
    // Nested inside members the parser takes as arbitrary JSON (tlogEntries) or as strings.
    let text = String::from_utf8(s.good.clone()).unwrap();
    let closed = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
    let nested = text.replacen(
        "\"tlogEntries\":[]",
        &format!("\"tlogEntries\":{closed}"),
        1,
    );
    assert_ne!(nested, text);
    s.file_fails(nested.as_bytes(), &[]);
    let nested = text.replacen("\"hint\":", &format!("\"hint\":{closed},\"x\":"), 1);
    s.file_fails(nested.as_bytes(), &[]);
    // As the signed statement.
    s.payload_fails(arrays, &[]);
    s.payload_fails(objects, &[]);
    let text = String::from_utf8(serde_json::to_vec(&s.statement()).unwrap()).unwrap();
    let nested = text.replacen(
        "\"resources\":",
        &format!("\"resources\":{closed},\"x\":"),
        1,
    );
    s.payload_fails(nested.into_bytes(), &[]);
}

#[test]
fn wrong_media_type_and_payload_type_are_rule_9_1() {
    let s = Signed2::new();
    for media in [
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle.v0.2+json",
        "APPLICATION/VND.DEV.SIGSTORE.BUNDLE.V0.3+JSON",
        "",
    ] {
        let bad = edit(&s.good, |v| v["mediaType"] = json!(media));
        s.file_fails(&bad, &["mediaType"]);
    }
    for payload_type in ["application/json", "application/vnd.in-toto+json ", ""] {
        let bad = edit(&s.good, |v| {
            v["dsseEnvelope"]["payloadType"] = json!(payload_type)
        });
        s.file_fails(&bad, &["payloadType"]);
    }
    // Members of the wrong type or missing.
    let bad = edit(&s.good, |v| v["mediaType"] = json!(3));
    s.file_fails(&bad, &[]);
    let bad = edit(&s.good, |v| {
        v["verificationMaterial"]
            .as_object_mut()
            .unwrap()
            .remove("publicKey");
    });
    s.file_fails(&bad, &["publicKey"]);
    let bad = edit(&s.good, |v| {
        v["dsseEnvelope"].as_object_mut().unwrap().remove("payload");
    });
    s.file_fails(&bad, &["payload"]);
    // A transparency-log entry: not the key method.
    let bad = edit(&s.good, |v| {
        v["verificationMaterial"]["tlogEntries"] = json!([{}])
    });
    s.file_fails(&bad, &["tlogEntries"]);
    // A certificate instead of the public key hint.
    let bad =
        edit(
            &s.good,
            |v| {
                v["verificationMaterial"] =
                    json!({"certificate": {"rawBytes": "AA=="}, "tlogEntries": []})
            },
        );
    s.file_fails(&bad, &[]);
}

#[test]
fn an_extra_member_at_any_level_is_refused() {
    let s = Signed2::new();
    // The envelope: rule 9.1.
    type Edit = fn(&mut Value);
    let envelope: [(&str, Edit); 5] = [
        ("top level", |v| v["extra"] = json!(1)),
        ("verificationMaterial", |v| {
            v["verificationMaterial"]["extra"] = json!(1)
        }),
        ("publicKey", |v| {
            v["verificationMaterial"]["publicKey"]["rawBytes"] = json!("AA==")
        }),
        ("dsseEnvelope", |v| v["dsseEnvelope"]["extra"] = json!(1)),
        ("signatures[0]", |v| {
            v["dsseEnvelope"]["signatures"][0]["extra"] = json!(1)
        }),
    ];
    for (level, f) in envelope {
        let bad = edit(&s.good, f);
        let msg = parse_fails(&bad, &["unknown field"]);
        expect_rule(s.check(&bad), Rule::SignatureFile, &["unknown field"]);
        assert!(!msg.is_empty(), "{level}");
    }
    // The statement: rule 9.2.
    let statement: [Edit; 6] = [
        |v| v["extra"] = json!(1),
        |v| v["subject"][0]["extra"] = json!(1),
        |v| v["subject"][0]["digest"]["sha512"] = json!("00"),
        |v| v["predicate"]["extra"] = json!(1),
        |v| v["predicate"]["serialization"]["extra"] = json!(1),
        |v| v["predicate"]["resources"][0]["extra"] = json!(1),
    ];
    for f in statement {
        let mut v = s.statement();
        f(&mut v);
        s.statement_fails(&v, &["unknown field"]);
    }
}

#[test]
fn statement_paths_outside_the_directory_are_rule_9_2() {
    let s = Signed2::new();
    let outside = [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "sub/../weights.bin",
        "sub//readme.txt",
        "sub/readme.txt/",
        "./weights.bin",
        ".",
        "..",
        "",
        "a\u{0}b",
    ];
    for name in outside {
        assert!(!valid_name(name), "{name:?}");
        // As a resource (digest and subject unchanged: only the name is wrong).
        let mut v = s.statement();
        v["predicate"]["resources"][0]["name"] = json!(name);
        s.statement_fails(&v, &["resource names"]);
        // As an ignored path.
        let mut v = s.statement();
        v["predicate"]["serialization"]["ignore_paths"][0] = json!(name);
        s.statement_fails(&v, &["ignore_paths"]);
    }
    // More resources than the limit (65,536), each well formed.
    let mut v = s.statement();
    let resource = v["predicate"]["resources"][0].clone();
    v["predicate"]["resources"] = (0..=65_536)
        .map(|i| {
            let mut r = resource.clone();
            r["name"] = json!(format!("r{i}"));
            r
        })
        .collect();
    expect_rule(
        Statement::parse(&sig_path(), &serde_json::to_vec(&v).unwrap()),
        Rule::SignatureStatement,
        &["at most 65536 resources", "65537"],
    );
    // A payload that is not UTF-8, or not JSON.
    s.payload_fails(b"\xff\xfe".to_vec(), &[]);
    s.payload_fails(b"not json".to_vec(), &[]);
    s.payload_fails(Vec::new(), &[]);
    // A name longer than the limit.
    let mut v = s.statement();
    v["predicate"]["resources"][0]["name"] = json!("a".repeat(4097));
    s.statement_fails(&v, &["resource names"]);
}

/// Standard or URL-safe base64 with padding, written here so that the tests do not trust the
/// encoder they test.
fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn non_canonical_base64_is_rule_9_1() {
    let s = Signed2::new();
    let b64 = |v: &Value, member: &str| -> String {
        match member {
            "payload" => v["dsseEnvelope"]["payload"].as_str().unwrap().into(),
            _ => v["dsseEnvelope"]["signatures"][0]["sig"]
                .as_str()
                .unwrap()
                .into(),
        }
    };
    let set = |bytes: &[u8], member: &str, text: String| -> Vec<u8> {
        edit(bytes, |v| match member {
            "payload" => v["dsseEnvelope"]["payload"] = json!(text),
            _ => v["dsseEnvelope"]["signatures"][0]["sig"] = json!(text),
        })
    };
    // The tool's signature: its payload ends "fQ==", its sig "5Q==" and holds '+' and '/'.
    let tool: Value = serde_json::from_slice(TOOL_P256).unwrap();
    let (payload, sig) = (b64(&tool, "payload"), b64(&tool, "sig"));
    assert!(payload.ends_with("fQ==") && sig.ends_with("5Q=="));
    assert!(sig.contains('+') && sig.contains('/'));
    // The encoder above agrees with the file (so the variants below differ only as intended).
    let f = SignatureFile::parse(&sig_path(), TOOL_P256).unwrap();
    assert_eq!(base64(&f.payload, false), payload);
    assert_eq!(base64(&f.signature, false), sig);

    for member in ["payload", "sig"] {
        let good = b64(&tool, member);
        let stem = good.trim_end_matches('=');
        let variants = [
            ("missing padding", stem.to_string()),
            ("half the padding", format!("{stem}=")),
            ("extra padding", format!("{good}=")),
            (
                "padding in the middle",
                format!("{}=={}", &good[..8], &good[8..]),
            ),
            (
                "non-zero trailing bits",
                format!("{}R==", &stem[..stem.len() - 1]),
            ),
            ("a newline", format!("{}\n{}", &good[..40], &good[40..])),
            ("a space", format!("{} {}", &good[..40], &good[40..])),
            ("a leading space", format!(" {good}")),
            ("a trailing CRLF", format!("{good}\r\n")),
            (
                "a character outside base64",
                format!("{}*{}", &good[..4], &good[5..]),
            ),
        ];
        for (what, text) in variants {
            assert_ne!(text, good);
            let bad = set(TOOL_P256, member, text);
            let msg = parse_fails(&bad, &[member, "canonical base64"]);
            assert!(msg.contains(member), "{member}, {what}: {msg}");
        }
    }
    // URL-safe alphabet: the tool's sig has '+' and '/'.
    let url_sig = sig.replace('+', "-").replace('/', "_");
    parse_fails(
        &set(TOOL_P256, "sig", url_sig),
        &["sig", "canonical base64"],
    );
    // And a payload whose standard encoding has '+' and '/' (0xfb 0xff 0xfe is "+//+").
    let f = SignatureFile {
        hint: s.key.public().hint(),
        payload: vec![0xfb, 0xff, 0xfe, b'{', b'}'],
        signature: vec![0x30, 0x00],
    };
    let bytes = f.to_bytes();
    assert_eq!(SignatureFile::parse(&sig_path(), &bytes).unwrap(), f);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let standard = b64(&v, "payload");
    assert_eq!(standard, base64(&f.payload, false));
    let url = base64(&f.payload, true);
    assert!(standard.starts_with("+//+") && url.starts_with("-__-"));
    s.file_fails(
        &set(&bytes, "payload", url),
        &["payload", "canonical base64"],
    );

    // Through the check, on our own signature.
    let v: Value = serde_json::from_slice(&s.good).unwrap();
    let good = b64(&v, "sig");
    let stem = good.trim_end_matches('=');
    if stem.len() != good.len() {
        s.file_fails(
            &set(&s.good, "sig", stem.to_string()),
            &["canonical base64"],
        );
    }
    s.file_fails(
        &set(&s.good, "sig", format!("{}\n{}", &good[..10], &good[10..])),
        &["canonical base64"],
    );
    // A signature that decodes to nothing, or to more than any DER ECDSA signature.
    s.file_fails(&set(&s.good, "sig", String::new()), &["sig"]);
    s.file_fails(&set(&s.good, "sig", base64(&[0x30; 300], false)), &["sig"]);
    // Bytes that decode but are no DER signature: a signature that does not verify (9.3).
    expect_rule(
        s.check(&set(&s.good, "sig", base64(&[0x30, 0x03, 1, 2, 3], false))),
        Rule::SignatureKey,
        &["does not verify"],
    );
}

#[test]
fn not_exactly_one_signature_is_rule_9_1() {
    let s = Signed2::new();
    let two = edit(&s.good, |v| {
        let sig = v["dsseEnvelope"]["signatures"][0].clone();
        v["dsseEnvelope"]["signatures"]
            .as_array_mut()
            .unwrap()
            .push(sig);
    });
    s.file_fails(&two, &["exactly one signature", "found 2"]);
    let zero = edit(&s.good, |v| v["dsseEnvelope"]["signatures"] = json!([]));
    s.file_fails(&zero, &["exactly one signature", "found 0"]);
    let not_a_list = edit(&s.good, |v| {
        v["dsseEnvelope"]["signatures"] = v["dsseEnvelope"]["signatures"][0].clone()
    });
    s.file_fails(&not_a_list, &[]);
    // keyid is optional and never read (as in model_signing).
    let no_keyid = edit(&s.good, |v| {
        v["dsseEnvelope"]["signatures"][0]
            .as_object_mut()
            .unwrap()
            .remove("keyid");
    });
    s.check(&no_keyid).unwrap();
    let keyid = edit(&s.good, |v| {
        v["dsseEnvelope"]["signatures"][0]["keyid"] = json!("k")
    });
    s.check(&keyid).unwrap();
}

#[test]
fn uppercase_and_malformed_hex_digests_are_refused() {
    let s = Signed2::new();
    // The key hint: rule 9.1.
    for hint in [
        s.key.public().hint().to_uppercase(),
        s.key.public().hint()[1..].to_string(),
        format!("{}0", s.key.public().hint()),
        "g".repeat(64),
        String::new(),
    ] {
        let bad = edit(&s.good, |v| {
            v["verificationMaterial"]["publicKey"]["hint"] = json!(hint)
        });
        s.file_fails(&bad, &["publicKey.hint"]);
    }
    // A resource digest in uppercase (the same bytes, so the subject digest still holds).
    let mut v = s.statement();
    let d = v["predicate"]["resources"][0]["digest"]
        .as_str()
        .unwrap()
        .to_uppercase();
    v["predicate"]["resources"][0]["digest"] = json!(d);
    s.statement_fails(&v, &["64 lowercase hex digits"]);
    // The subject digest in uppercase.
    let mut v = s.statement();
    let d = v["subject"][0]["digest"]["sha256"]
        .as_str()
        .unwrap()
        .to_uppercase();
    v["subject"][0]["digest"]["sha256"] = json!(d);
    s.statement_fails(&v, &["subject digest"]);
    // A short digest, another algorithm.
    let mut v = s.statement();
    v["predicate"]["resources"][0]["digest"] = json!("abcd");
    s.statement_fails(&v, &["64 lowercase hex digits"]);
    let mut v = s.statement();
    v["predicate"]["resources"][0]["algorithm"] = json!("SHA256");
    s.statement_fails(&v, &["algorithm"]);
}

#[test]
fn a_subject_digest_that_does_not_cover_the_resources_is_rule_9_2() {
    let s = Signed2::new();
    let mut v = s.statement();
    v["subject"][0]["digest"]["sha256"] = json!("0".repeat(64));
    s.statement_fails(&v, &["subject digest"]);
    // The resources listed in another order: the digest covers the listed order.
    let mut v = s.statement();
    v["predicate"]["resources"]
        .as_array_mut()
        .unwrap()
        .reverse();
    s.statement_fails(&v, &["subject digest"]);
    // ... unless recomputed over that order (model_signing accepts it; so do we).
    let resources: Vec<Resource> = v["predicate"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Resource {
            name: r["name"].as_str().unwrap().into(),
            digest: r["digest"].as_str().unwrap().into(),
        })
        .collect();
    v["subject"][0]["digest"]["sha256"] = json!(subject_digest(&resources).unwrap());
    s.check(&s.signed(serde_json::to_vec_pretty(&v).unwrap()))
        .unwrap();
    // Two subjects, none.
    let mut v = s.statement();
    let subject = v["subject"][0].clone();
    v["subject"].as_array_mut().unwrap().push(subject);
    s.statement_fails(&v, &["exactly one subject"]);
    let mut v = s.statement();
    v["subject"] = json!([]);
    s.statement_fails(&v, &["exactly one subject"]);
    // Other statement or predicate types, serializations.
    type Edit = fn(&mut Value);
    let others: [(Edit, &str); 6] = [
        (
            |v| v["_type"] = json!("https://in-toto.io/Statement/v0.1"),
            "_type",
        ),
        (
            |v| v["predicateType"] = json!("https://model_signing/signature/v1.1"),
            "predicateType",
        ),
        (
            |v| v["predicate"]["serialization"]["method"] = json!("shards"),
            "serialization",
        ),
        (
            |v| v["predicate"]["serialization"]["hash_type"] = json!("blake2"),
            "serialization",
        ),
        (
            |v| v["predicate"]["serialization"]["allow_symlinks"] = json!(true),
            "serialization",
        ),
        (|v| v["predicate"] = json!(null), "in-toto statement"),
    ];
    for (f, part) in others {
        let mut v = s.statement();
        f(&mut v);
        s.statement_fails(&v, &[part]);
    }
}

#[test]
fn a_resource_listed_twice_is_rule_9_2() {
    let s = Signed2::new();
    let mut v = s.statement();
    let first = v["predicate"]["resources"][0].clone();
    v["predicate"]["resources"]
        .as_array_mut()
        .unwrap()
        .push(first);
    // With the subject digest over the list as given, so that only the duplicate is wrong.
    let digests: Vec<Resource> = v["predicate"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Resource {
            name: r["name"].as_str().unwrap().into(),
            digest: r["digest"].as_str().unwrap().into(),
        })
        .collect();
    v["subject"][0]["digest"]["sha256"] = json!(subject_digest(&digests).unwrap());
    s.statement_fails(&v, &["each resource once", "twice"]);
}

#[test]
fn duplicate_json_keys_are_refused_at_every_level() {
    let s = Signed2::new();
    let text = String::from_utf8(s.good.clone()).unwrap();
    // In the envelope: the first value or the last, whichever a reader keeps, is ambiguous.
    for (from, to) in [
        ("{\"mediaType\":", "{\"mediaType\":\"x\",\"mediaType\":"),
        ("{\"hint\":", "{\"hint\":\"x\",\"hint\":"),
        ("\"payloadType\":", "\"payloadType\":\"x\",\"payloadType\":"),
        ("{\"sig\":", "{\"sig\":\"AA==\",\"sig\":"),
        ("\"tlogEntries\":", "\"tlogEntries\":[],\"tlogEntries\":"),
        // The same key spelled with an escape.
        (
            "{\"mediaType\":",
            "{\"mediaType\":\"x\",\"media\\u0054ype\":",
        ),
    ] {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{from}");
        s.file_fails(bad.as_bytes(), &["duplicate key"]);
    }
    // In the statement (signed by the trusted key).
    let payload = String::from_utf8(serde_json::to_vec_pretty(&s.statement()).unwrap()).unwrap();
    for (from, to) in [
        ("\"_type\":", "\"_type\": \"x\", \"_type\":"),
        (
            "\"name\": \"weights.bin\"",
            "\"name\": \"x\", \"name\": \"weights.bin\"",
        ),
        ("\"sha256\":", "\"sha256\": \"x\", \"sha256\":"),
        ("\"resources\":", "\"resources\": [], \"resources\":"),
    ] {
        let bad = payload.replacen(from, to, 1);
        assert_ne!(bad, payload, "{from}");
        s.payload_fails(bad.into_bytes(), &["duplicate key"]);
    }
}

#[test]
fn model_sig_must_be_a_regular_file() {
    let s = Signed2::new();
    let path = s.dir.join(SIGNATURE_FILE);
    // A symbolic link to a valid signature: not followed.
    let elsewhere = s.dir.parent().unwrap().join("valid.sig");
    std::fs::write(&elsewhere, &s.good).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    expect_rule(
        read_signature(&s.dir),
        Rule::SignatureFile,
        &["a regular file", "a symbolic link"],
    );
    // A dangling one.
    std::fs::remove_file(&elsewhere).unwrap();
    expect_rule(
        read_signature(&s.dir),
        Rule::SignatureFile,
        &["a symbolic link"],
    );
    std::fs::remove_file(&path).unwrap();
    // A directory.
    std::fs::create_dir(&path).unwrap();
    expect_rule(
        read_signature(&s.dir),
        Rule::SignatureFile,
        &["a regular file", "not a regular file"],
    );
    std::fs::remove_dir(&path).unwrap();
    // A FIFO with no writer: refused at once, not waited on.
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let dir = s.dir.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read_signature(&dir).map(|f| f.is_some()));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("reading a FIFO model.sig must not block");
    expect_rule(result, Rule::SignatureFile, &["not a regular file"]);
    std::fs::remove_file(&path).unwrap();
    // No model.sig at all: not signed, no error.
    assert_eq!(read_signature(&s.dir).unwrap(), None);
}

#[test]
fn links_and_special_files_in_the_directory_are_rule_9_4() {
    let s = Signed2::new();
    let key = SigningKey::generate_p256();
    type Make = fn(&Path);
    let cases: [(&str, Make); 4] = [
        ("link", |d| {
            std::os::unix::fs::symlink("weights.bin", d.join("link")).unwrap()
        }),
        ("sub/link", |d| {
            std::os::unix::fs::symlink("../weights.bin", d.join("sub/link")).unwrap()
        }),
        ("dirlink", |d| {
            std::os::unix::fs::symlink("sub", d.join("dirlink")).unwrap()
        }),
        ("dangling", |d| {
            std::os::unix::fs::symlink("nowhere", d.join("dangling")).unwrap()
        }),
    ];
    for (name, make) in cases {
        make(&s.dir);
        let p = s.dir.join(name);
        // Checking a signature over the directory.
        let msg = expect_rule(s.check(&s.good), Rule::SignedFiles, &["a symbolic link"]);
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        // Signing it.
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("copy");
        std::fs::create_dir_all(copy.join("sub")).unwrap();
        std::fs::write(copy.join("weights.bin"), b"w").unwrap();
        make(&copy);
        expect_rule(
            sign_dir(&copy, "copy", &key, &BTreeMap::new()),
            Rule::SignedFiles,
            &["a symbolic link", name],
        );
        assert!(!copy.join(SIGNATURE_FILE).exists(), "nothing signed");
        std::fs::remove_file(&p).unwrap();
    }
    // A FIFO in a subdirectory: named, not opened.
    let fifo = s.dir.join("sub/fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    expect_rule(
        s.check(&s.good),
        Rule::SignedFiles,
        &["sub/fifo", "not a regular file or directory"],
    );
    std::fs::remove_file(&fifo).unwrap();
    s.check(&s.good).unwrap();
}

/// The 10 files the tool's `example_*` and `canonical_*` signatures cover, written in `dir`.
fn tool_model(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    let fp16 = std::fs::read(Path::new(DATA).join("fp16.safetensors")).unwrap();
    let files: [(&str, &[u8]); 10] = [
        ("B_upper.txt", b"B"),
        ("a_lower.txt", b"a"),
        ("fp16.safetensors", &fp16),
        ("manifest.json", b"{\"name\":\"test\"}\n"),
        ("quo\"te.txt", b"q\"x"),
        ("sub/deeper/empty.bin", b""),
        ("sub/readme.txt", b"hello\n"),
        ("sub-a", b"dash"),
        ("sub.txt", b"dot"),
        ("\u{fc} \u{e9}.txt", b"uml"),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Checks the tool's signature `bytes` against `dir` with `key` trusted.
fn check_tool(dir: &Path, bytes: &[u8], key: &PublicKey) -> Result<Signed> {
    let file = SignatureFile::parse(&dir.join(SIGNATURE_FILE), bytes)?;
    check_dir(
        dir,
        &file,
        std::slice::from_ref(key),
        &BTreeMap::new(),
        &BTreeSet::new(),
    )
}

#[test]
fn the_model_signing_tools_signatures_parse_verify_and_check() {
    let p256 = PublicKey::from_pem(Path::new("pub.pem"), PUB_P256).unwrap();
    let p384 = PublicKey::from_pem(Path::new("pub384.pem"), PUB_P384).unwrap();
    assert_eq!(
        p256.hint(),
        "8a00bbb2fdab4bf1adfd6e89e4de36cfaf55686e041147aee695ec4097b87ef8",
        "the hint is the SHA-256 of the PEM text, as model_signing computes it"
    );
    assert_eq!(
        p384.hint(),
        "fdd06f1a81e1e45917f64f0fb71721900e818123cfbbccede60454b9e2b628be"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    tool_model(&dir);
    let want = [
        "B_upper.txt",
        "a_lower.txt",
        "fp16.safetensors",
        "manifest.json",
        "quo\"te.txt",
        "sub/deeper/empty.bin",
        "sub/readme.txt",
        "sub-a",
        "sub.txt",
        "\u{fc} \u{e9}.txt",
    ];
    for (name, bytes, key, curve) in [
        ("example_p256", TOOL_P256, &p256, "P-256"),
        ("example_p384", TOOL_P384, &p384, "P-384"),
        ("canonical_p256", CANONICAL_P256, &p256, "P-256"),
    ] {
        // The envelope parses; its signature verifies over pae(payload) with the tool's key.
        let file =
            SignatureFile::parse(&sig_path(), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(file.hint, key.hint(), "{name}");
        assert!(key.verifies(&pae(&file.payload), &file.signature), "{name}");
        assert!(
            !key.verifies(&pae(&file.payload[1..]), &file.signature),
            "{name}"
        );
        // The statement parses, lists the 10 files in the tool's order, and reads back.
        let statement = Statement::parse(&sig_path(), &file.payload).unwrap();
        let names: Vec<&str> = statement
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, want, "{name}");
        let mut ignored = statement.ignore_paths.clone();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                ".git",
                ".gitattributes",
                ".github",
                ".gitignore",
                "model.sig"
            ]
        );
        assert_eq!(
            Statement::parse(&sig_path(), &statement.to_payload()).unwrap(),
            statement
        );
        // And the file bytes round-trip (the tool writes the same compact layout).
        assert_eq!(
            SignatureFile::parse(&sig_path(), &file.to_bytes()).unwrap(),
            file
        );
        // The directory re-created checks, with model.sig in it or not.
        let signed = check_tool(&dir, bytes, key).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(signed.curve, curve);
        assert_eq!(signed.files, want);
        std::fs::write(dir.join(SIGNATURE_FILE), bytes).unwrap();
        let on_disk = read_signature(&dir).unwrap().unwrap();
        assert_eq!(on_disk, file);
        check_dir(
            &dir,
            &on_disk,
            std::slice::from_ref(key),
            &BTreeMap::new(),
            &BTreeSet::new(),
        )
        .unwrap();
        std::fs::remove_file(dir.join(SIGNATURE_FILE)).unwrap();
        // The other key is not the signer's (9.3); a changed file is named (9.4).
        let other = if key == &p256 { &p384 } else { &p256 };
        expect_rule(
            check_tool(&dir, bytes, other),
            Rule::SignatureKey,
            &[&file.hint],
        );
        std::fs::write(dir.join("sub/readme.txt"), b"hellO\n").unwrap();
        expect_rule(
            check_tool(&dir, bytes, key),
            Rule::SignedFiles,
            &["changed: sub/readme.txt"],
        );
        std::fs::write(dir.join("sub/readme.txt"), b"hello\n").unwrap();
    }
    // The P-256 and P-384 signatures of the tool carry the same statement (other key orders).
    let a = Statement::parse(
        &sig_path(),
        &SignatureFile::parse(&sig_path(), TOOL_P256)
            .unwrap()
            .payload,
    )
    .unwrap();
    let b = Statement::parse(
        &sig_path(),
        &SignatureFile::parse(&sig_path(), TOOL_P384)
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(a.resources, b.resources);
    // A key the hint names that did not sign: the hint of the P-256 key on the P-384 signature.
    let mut forged = SignatureFile::parse(&sig_path(), TOOL_P384).unwrap();
    forged.hint = p256.hint();
    expect_rule(
        check_tool(&dir, &forged.to_bytes(), &p256),
        Rule::SignatureKey,
        &["does not verify"],
    );
}

#[test]
fn the_tools_signatures_of_odd_names_and_of_an_empty_directory_check() {
    let p256 = PublicKey::from_pem(Path::new("pub.pem"), PUB_P256).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Names with a backslash, a newline and a tab, and an emoji (a surrogate pair in JSON).
    let odd = tmp.path().join("oddm");
    std::fs::create_dir(&odd).unwrap();
    for (name, bytes) in [
        ("back\\slash", b"z"),
        ("new\nline\ttab", b"x"),
        ("\u{1f600}.bin", b"y"),
    ] {
        std::fs::write(odd.join(name), bytes).unwrap();
    }
    let signed = check_tool(&odd, TOOL_ODD_NAMES, &p256).unwrap();
    assert_eq!(
        signed.files,
        ["back\\slash", "new\nline\ttab", "\u{1f600}.bin"]
    );
    // An empty directory: no resources, the subject digest of nothing.
    let empty = tmp.path().join("emptym");
    std::fs::create_dir(&empty).unwrap();
    let signed = check_tool(&empty, TOOL_EMPTY_DIR, &p256).unwrap();
    assert!(signed.files.is_empty());
    std::fs::create_dir(empty.join("subdir")).unwrap();
    check_tool(&empty, TOOL_EMPTY_DIR, &p256).expect("empty directories contribute nothing");
    std::fs::write(empty.join("subdir/x"), b"").unwrap();
    expect_rule(
        check_tool(&empty, TOOL_EMPTY_DIR, &p256),
        Rule::SignedFiles,
        &["extra: subdir/x", "the 0 files signed"],
    );
}

#[test]
fn our_signature_of_the_tools_directory_matches_the_canonical_layout() {
    // `bundle sign`'s writer over the same 10 files gives the statement of the canonical
    // layout (same names, order, digests, ignore_paths), so the tool verifies it too.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    tool_model(&dir);
    let key = SigningKey::generate_p256();
    sign_dir(&dir, "model", &key, &BTreeMap::new()).unwrap();
    let ours = read_signature(&dir).unwrap().unwrap();
    let ours = Statement::parse(&sig_path(), &ours.payload).unwrap();
    let canonical = SignatureFile::parse(&sig_path(), CANONICAL_P256).unwrap();
    let canonical = Statement::parse(&sig_path(), &canonical.payload).unwrap();
    assert_eq!(ours, canonical);
}
