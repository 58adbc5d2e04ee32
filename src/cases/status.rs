//! The case lifecycle. Automatic steps: `detected → filed` when the dwell is reached,
//! `→ verifying` when the problem is no longer seen, `verifying → closed` when it stayed
//! away for the verification window (auto-verified), `closed → reopened` when it comes
//! back within the cooldown. The city's workflow sets `dispatched` and `handled`; an
//! operator may close or reopen by hand, and reject a case as a false positive
//! (`rejected`, terminal).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Seen in the zone, dwell not yet reached; not reported.
    Detected,
    /// Reported to the city.
    Filed,
    /// An inspector was sent (set externally).
    Dispatched,
    /// The inspector reports it handled (set externally); verification decides.
    Handled,
    /// No longer seen; closes when absent for the verification window.
    Verifying,
    Closed,
    /// Came back after closing, within the cooldown.
    Reopened,
    /// Rejected by an operator as a false positive (terminal).
    Rejected,
}

pub const ALL: [Status; 8] = [
    Status::Detected,
    Status::Filed,
    Status::Dispatched,
    Status::Handled,
    Status::Verifying,
    Status::Closed,
    Status::Reopened,
    Status::Rejected,
];

/// The statuses an operator may set with `set-status` (rejecting has its own action).
pub const SETTABLE: [Status; 4] = [
    Status::Dispatched,
    Status::Handled,
    Status::Closed,
    Status::Reopened,
];

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Detected => "detected",
            Status::Filed => "filed",
            Status::Dispatched => "dispatched",
            Status::Handled => "handled",
            Status::Verifying => "verifying",
            Status::Closed => "closed",
            Status::Reopened => "reopened",
            Status::Rejected => "rejected",
        }
    }

    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match self {
            Detected => to == Filed,
            Filed | Reopened => {
                matches!(to, Dispatched | Handled | Verifying | Closed | Rejected)
            }
            Dispatched => matches!(to, Handled | Verifying | Closed | Rejected),
            Handled => matches!(to, Verifying | Closed | Rejected),
            // Seen again during verification: back to where it was.
            Verifying => matches!(
                to,
                Filed | Dispatched | Handled | Reopened | Closed | Rejected
            ),
            Closed => to == Reopened,
            Rejected => false,
        }
    }

    /// Statuses an operator may set by hand (`cases set-status`): [`SETTABLE`].
    pub fn settable_externally(self) -> bool {
        SETTABLE.contains(&self)
    }

    /// Not closed and not rejected: the problem may still be there (candidates included).
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Closed | Status::Rejected)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment in tables.
        f.pad(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown status `{s}` (one of {})", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_automatic_path_is_allowed() {
        use Status::*;
        for (a, b) in [
            (Detected, Filed),
            (Filed, Verifying),
            (Verifying, Closed),
            (Closed, Reopened),
            (Reopened, Verifying),
        ] {
            assert!(a.can_become(b), "{a} → {b}");
        }
    }

    #[test]
    fn closed_and_detected_cannot_skip_ahead() {
        use Status::*;
        assert!(!Closed.can_become(Filed));
        assert!(!Closed.can_become(Dispatched));
        assert!(!Detected.can_become(Closed));
        assert!(!Detected.can_become(Dispatched));
        assert!(!Handled.can_become(Dispatched));
    }

    #[test]
    fn rejected_is_terminal_and_reached_only_from_a_filed_case() {
        use Status::*;
        for from in ALL {
            assert!(!Rejected.can_become(from), "rejected → {from}");
            let allowed = matches!(from, Filed | Dispatched | Handled | Verifying | Reopened);
            assert_eq!(from.can_become(Rejected), allowed, "{from} → rejected");
        }
        assert!(!Rejected.settable_externally());
        assert!(!Rejected.is_open() && !Closed.is_open() && Verifying.is_open());
    }

    proptest! {
        /// Any sequence of requested transitions, applied only where allowed, never
        /// leaves the lifecycle: nothing returns to `detected`, and a case only reopens
        /// after being closed.
        #[test]
        fn no_illegal_transition(requests in proptest::collection::vec(0..ALL.len(), 1..40)) {
            let mut status = Status::Detected;
            let mut was_closed = false;
            for r in requests {
                let to = ALL[r];
                if status.can_become(to) {
                    prop_assert!(to != Status::Detected);
                    if to == Status::Reopened && status == Status::Closed {
                        prop_assert!(was_closed);
                    }
                    status = to;
                    was_closed |= status == Status::Closed;
                }
            }
        }

        #[test]
        fn names_round_trip(i in 0..ALL.len()) {
            prop_assert_eq!(ALL[i].as_str().parse::<Status>(), Ok(ALL[i]));
        }
    }
}
