//! Runs checks in order: a check runs when selected and when every prerequisite passed; one
//! that cannot run is recorded as skipped with the reason, never as passed.

use std::time::Instant;

use serde_json::{json, Value};

use crate::verify::check::Check;
use crate::verify::options::VerifyOptions;
use crate::verify::report::{CheckResult, Status};

/// A failed check's detail and figures.
pub(crate) type Fail = (String, Value);
/// What a check returns: its detail and figures, as a pass or a failure.
pub(crate) type Outcome = std::result::Result<(String, Value), Fail>;

pub(crate) struct Runner<'o> {
    options: &'o VerifyOptions,
    pub results: Vec<CheckResult>,
    /// Checks that ran and passed, selected or not: what gates the checks that need them.
    passed: Vec<Check>,
}

impl<'o> Runner<'o> {
    pub fn new(options: &'o VerifyOptions) -> Self {
        Runner {
            options,
            results: Vec::new(),
            passed: Vec::new(),
        }
    }

    /// Why `check` cannot run, if one of its prerequisites did not pass.
    pub fn blocked(&self, check: Check) -> Option<String> {
        let p = check
            .prerequisites()
            .iter()
            .find(|p| !self.passed.contains(p))?;
        let failed = self
            .results
            .iter()
            .any(|r| r.name == *p && r.status == Status::Fail);
        Some(if failed {
            format!("not run: {p} failed")
        } else {
            format!("not run: needs {p}, which did not run")
        })
    }

    /// Whether `check` ran and passed (selected or not).
    pub fn has_passed(&self, check: Check) -> bool {
        self.passed.contains(&check)
    }

    /// Records a check that did not run, and why.
    pub fn skip(&mut self, check: Check, detail: impl Into<String>) {
        self.results.push(CheckResult {
            name: check,
            status: Status::Skip,
            detail: detail.into(),
            figures: json!({}),
            seconds: 0.0,
        });
    }

    /// Runs `f` on what the prerequisites of `check` proved: `input` is `Some` exactly when
    /// they can have passed (for the data and model checks, the open bundle). A check others
    /// need still runs, silently, when not selected; a failure then stays a failure.
    pub fn run_on<T>(&mut self, check: Check, input: Option<T>, f: impl FnOnce(T) -> Outcome) {
        let selected = self.options.selected(check);
        if !selected && !check.gates_others() {
            self.skip(check, "not selected");
            return;
        }
        let input = match (input, self.blocked(check)) {
            (Some(input), None) => Ok(input),
            (_, Some(why)) => Err(why),
            (None, None) => Err(format!("not run: nothing for {check} to check")),
        };
        let (status, detail, figures, seconds) = match input {
            Err(why) => (Status::Skip, why, json!({}), 0.0),
            Ok(input) => {
                let t = Instant::now();
                let outcome = f(input);
                let seconds = t.elapsed().as_secs_f64();
                if outcome.is_ok() {
                    // A prerequisite that ran clean gates its dependents, selected or not.
                    self.passed.push(check);
                }
                match (outcome, selected) {
                    (Ok((d, f)), true) => (Status::Pass, d, f, seconds),
                    (Err((d, f)), true) => (Status::Fail, d, f, seconds),
                    (Ok(_), false) => (Status::Skip, "not selected".into(), json!({}), 0.0),
                    (Err((d, _)), false) => (
                        Status::Fail,
                        format!(
                            "not selected, but failed as a prerequisite of the selected checks: {d}"
                        ),
                        json!({}),
                        0.0,
                    ),
                }
            }
        };
        self.results.push(CheckResult {
            name: check,
            status,
            detail,
            // An unselected prerequisite says so in its figures.
            figures: if selected {
                figures
            } else {
                json!({ "selected": false })
            },
            seconds,
        });
    }

    /// [`Runner::run_on`] for a check that needs nothing but its prerequisites' verdicts.
    pub fn run(&mut self, check: Check, f: impl FnOnce() -> Outcome) {
        self.run_on(check, Some(()), |()| f());
    }
}
