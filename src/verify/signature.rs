//! The `signature` check (spec section 10.1, rules 9.1 to 9.4): who made the bundle. It
//! passes when `model.sig` is a signature by one of `--trusted-key` over exactly the bundle's
//! files; it fails on a missing signature (with a trusted key, or `--require-signature`), a
//! key that is not trusted, a signature that does not verify, and any changed, missing or
//! extra file, each named; it is skipped, with the reason, when no key is given.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::json;

use crate::error::Violation;
use crate::format::rules::Rule;
use crate::read::Bundle;
use crate::signing::{check_dir, checked_digests, read_signature, SIGNATURE_FILE};
use crate::verify::check::Check;
use crate::verify::integrity::fail_with;
use crate::verify::options::VerifyOptions;
use crate::verify::runner::{Outcome, Runner};

/// Runs the check on the bundle in `dir` (`bundle` when it opened; `digests_checked` when its
/// checksums passed, so that the manifest's digests stand for the files). Without a trusted
/// key a well-formed signature is not checked: the check is skipped, with the signer's hint.
pub(crate) fn run(
    r: &mut Runner<'_>,
    dir: &Path,
    bundle: Option<&Bundle>,
    options: &VerifyOptions,
    digests_checked: bool,
) {
    if options.trusted_keys.is_empty() && options.selected(Check::Signature) {
        match read_signature(dir) {
            Ok(None) if !options.require_signature => {
                return r.skip(
                    Check::Signature,
                    "not run: no --trusted-key given (the bundle is not signed)",
                )
            }
            Ok(Some(f)) => {
                return r.skip(
                    Check::Signature,
                    format!(
                        "not run: signed by the key of hint {}; give --trusted-key to check it",
                        f.hint
                    ),
                )
            }
            _ => {}
        }
    }
    r.run(Check::Signature, || {
        check(dir, bundle, options, digests_checked)
    });
}

/// The check itself: fails on a missing signature, a malformed one, an untrusted key, a bad
/// signature and any changed, missing or extra file.
fn check(
    dir: &Path,
    bundle: Option<&Bundle>,
    options: &VerifyOptions,
    digests_checked: bool,
) -> Outcome {
    let keys = &options.trusted_keys;
    let hints: Vec<String> = keys.iter().map(|k| k.hint()).collect();
    let file = read_signature(dir).map_err(|e| fail_with(&e))?;
    let Some(file) = file else {
        let why = if keys.is_empty() {
            "--require-signature"
        } else {
            "--trusted-key"
        };
        let e = Violation::new(
            dir.join(SIGNATURE_FILE),
            Rule::SignatureFile,
            format!("a signature ({why})"),
            "no model.sig",
        );
        return Err((
            e.to_string(),
            json!({ "signed": false, "trusted_keys": hints, "rule": Rule::SignatureFile.number() }),
        ));
    };
    let known = match (bundle, digests_checked) {
        (Some(b), true) => checked_digests(b),
        _ => BTreeMap::new(),
    };
    // The files no signature of a bundle may leave out.
    let mut required: BTreeSet<String> = bundle
        .map(|b| checked_digests(b).into_keys().collect())
        .unwrap_or_default();
    required.insert("manifest.json".into());
    let figures = |signed: Option<(&str, usize)>| {
        json!({
            "signed": true,
            "hint": file.hint,
            "curve": signed.map(|s| s.0),
            "files": signed.map(|s| s.1),
            "trusted_keys": hints,
        })
    };
    match check_dir(dir, &file, keys, &known, &required) {
        Ok(s) => Ok((
            format!(
                "signed by a trusted key ({} {}) over the {} files of the bundle, unchanged",
                s.curve,
                s.hint,
                s.files.len()
            ),
            figures(Some((s.curve, s.files.len()))),
        )),
        Err(e) => {
            let (detail, mut f) = fail_with(&e);
            let mut all = figures(None);
            if let (Some(a), Some(rule)) = (all.as_object_mut(), f.get_mut("rule")) {
                a.insert("rule".into(), rule.take());
            }
            Err((detail, all))
        }
    }
}
