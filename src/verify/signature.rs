//! The `signature` check (spec section 10.1, rules 9.1 to 9.4): who made the bundle. It
//! passes when `model.sig` is a signature by one of `--trusted-key` over exactly the bundle's
//! files; it fails on a missing signature (with a trusted key, or `--require-signature`), a
//! key that is not trusted, a signature that does not verify, and any changed, missing or
//! extra file, each named; it is skipped, with the reason, when no key is given.

use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result, Violation};
use crate::format::rules::Rule;
use crate::read::Bundle;
use crate::signing::envelope::SignatureFile;
use crate::signing::{check_bundle_signature, read_signature, SIGNATURE_FILE};
use crate::verify::check::Check;
use crate::verify::options::VerifyOptions;
use crate::verify::runner::{Outcome, Runner};

/// Runs the check on the bundle in `dir` (`bundle` when it opened; `digests_checked` when its
/// checksums passed, so that the manifest's digests stand for the files). `model.sig` is read
/// once. Without a trusted key a well-formed signature is not checked: the check is skipped,
/// with the signer's hint.
pub(crate) fn run(
    r: &mut Runner<'_>,
    dir: &Path,
    bundle: Option<&Bundle>,
    options: &VerifyOptions,
    digests_checked: bool,
) {
    let file = read_signature(dir);
    if options.trusted_keys.is_empty() && options.selected(Check::Signature) {
        match &file {
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
        check(dir, file, bundle, options, digests_checked)
    });
}

/// The check itself on `model.sig` as read: fails on a missing signature, a malformed one, an
/// untrusted key, a bad signature and any changed, missing or extra file, with its rule in the
/// figures.
fn check(
    dir: &Path,
    file: Result<Option<SignatureFile>>,
    bundle: Option<&Bundle>,
    options: &VerifyOptions,
    digests_checked: bool,
) -> Outcome {
    let keys = &options.trusted_keys;
    let hints: Vec<String> = keys.iter().map(|k| k.hint()).collect();
    let rule = |e: &Error| e.rule().map(|r| r.number());
    let file = match file {
        Ok(Some(f)) => f,
        Ok(None) => {
            let why = if keys.is_empty() {
                "--require-signature"
            } else {
                "--trusted-key"
            };
            let e: Error = Violation::new(
                dir.join(SIGNATURE_FILE),
                Rule::SignatureFile,
                format!("a signature ({why})"),
                "no model.sig",
            )
            .into();
            let figures = json!({ "signed": false, "trusted_keys": hints, "rule": rule(&e) });
            return Err((e.to_string(), figures));
        }
        Err(e) => {
            let figures = json!({ "signed": true, "trusted_keys": hints, "rule": rule(&e) });
            return Err((e.to_string(), figures));
        }
    };
    match check_bundle_signature(dir, &file, bundle, keys, digests_checked) {
        Ok(s) => Ok((
            format!(
                "signed by a trusted key ({} {}) over the {} files of the bundle, unchanged",
                s.curve,
                s.hint,
                s.files.len()
            ),
            json!({
                "signed": true,
                "hint": file.hint,
                "curve": s.curve,
                "files": s.files.len(),
                "trusted_keys": hints,
            }),
        )),
        Err(e) => Err((
            e.to_string(),
            json!({
                "signed": true,
                "hint": file.hint,
                "curve": null,
                "files": null,
                "trusted_keys": hints,
                "rule": rule(&e),
            }),
        )),
    }
}
