//! What operators do to a case: set a workflow status, confirm it as a real violation, or
//! reject it as a false positive (with a reason). Verdicts feed the precision figures.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Status;

/// Why an operator rejected a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// What the robot saw is not a violation (a loading bay, a permitted stall…).
    NotAViolation,
    /// The detector mistook the object (a billboard for a car…).
    WrongClass,
    /// The same problem is already a case.
    Duplicate,
}

impl RejectReason {
    pub const ALL: [RejectReason; 3] = [
        RejectReason::NotAViolation,
        RejectReason::WrongClass,
        RejectReason::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotAViolation => "not_a_violation",
            RejectReason::WrongClass => "wrong_class",
            RejectReason::Duplicate => "duplicate",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for RejectReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown reject reason `{s}` (one of {})", names.join(", "))
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictKind {
    /// A real violation.
    Confirmed,
    /// A false positive.
    Rejected,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Confirmed => "confirmed",
            VerdictKind::Rejected => "rejected",
        }
    }
}

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An operator's judgement of a case; the latest one counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// Set for rejections.
    pub reason: Option<RejectReason>,
    /// The operator's user name.
    pub by: String,
    /// Unix seconds.
    pub at: f64,
    pub note: Option<String>,
}

/// One thing an operator does to a case (CLI, API or console page alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    /// A workflow status: dispatched, handled, closed or reopened.
    SetStatus(Status),
    /// A real violation: the status stays, the verdict is recorded.
    Confirm,
    /// A false positive: the case becomes `rejected`.
    Reject(RejectReason),
}

impl OperatorAction {
    /// `case.set_status`, `case.confirm` or `case.reject`: the audit log's action name.
    pub fn audit_name(self) -> &'static str {
        match self {
            OperatorAction::SetStatus(_) => "case.set_status",
            OperatorAction::Confirm => "case.confirm",
            OperatorAction::Reject(_) => "case.reject",
        }
    }
}

impl fmt::Display for OperatorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatorAction::SetStatus(s) => write!(f, "set to {s}"),
            OperatorAction::Confirm => f.write_str("confirmed"),
            OperatorAction::Reject(r) => write!(f, "rejected ({r})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_reasons_round_trip_as_text_and_json() {
        for r in RejectReason::ALL {
            assert_eq!(r.as_str().parse::<RejectReason>(), Ok(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::String(r.to_string())
            );
        }
        let err = "bogus".parse::<RejectReason>().unwrap_err();
        assert!(
            err.contains("bogus") && err.contains("not_a_violation, wrong_class, duplicate"),
            "{err}"
        );
    }

    #[test]
    fn verdicts_serialise_in_lowercase() {
        let v = Verdict {
            kind: VerdictKind::Rejected,
            reason: Some(RejectReason::WrongClass),
            by: "li".into(),
            at: 1.0,
            note: None,
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["kind"], "rejected");
        assert_eq!(json["reason"], "wrong_class");
        assert_eq!(serde_json::from_value::<Verdict>(json).unwrap(), v);
    }
}
