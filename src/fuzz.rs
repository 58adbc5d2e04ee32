//! Damaged input for the property tests that fuzz the parsers of outside input (camera
//! files, run configs, point lists, codec extradata, RTSP requests): a valid input with a
//! few of the faults real files and packets show. Starting from a valid input reaches
//! the checks deep inside a parser that random bytes rarely get past.

use proptest::prelude::*;
use proptest::sample::Index;

/// Longest piece a single fault removes, repeats or inserts: damage stays local, so most
/// of the input is still valid around it.
const MAX_PIECE: usize = 32;

/// One fault, at positions relative to the input's length when it is applied.
#[derive(Debug, Clone)]
enum Fault {
    /// One bit flipped (ASCII stays ASCII unless the top bit flips).
    FlipBit { at: Index, bit: u8 },
    /// Cut off here: a file half written, a request half sent.
    Truncate { at: Index },
    /// A piece left out.
    Remove { at: Index, len: usize },
    /// A piece of the input repeated elsewhere: damage in the input's own vocabulary
    /// (keys, quotes, brackets, header names).
    Repeat { from: Index, len: usize, to: Index },
    /// Random bytes inserted.
    Insert { at: Index, bytes: Vec<u8> },
}

impl Fault {
    fn apply(&self, input: &mut Vec<u8>) {
        let len = input.len();
        match self {
            Fault::FlipBit { at, bit } => {
                if len > 0 {
                    input[at.index(len)] ^= 1 << bit;
                }
            }
            Fault::Truncate { at } => input.truncate(at.index(len + 1)),
            Fault::Remove { at, len: n } => {
                let start = at.index(len + 1);
                input.drain(start..(start + n).min(len));
            }
            Fault::Repeat { from, len: n, to } => {
                let start = from.index(len + 1);
                let piece = input[start..(start + n).min(len)].to_vec();
                let to = to.index(len + 1);
                input.splice(to..to, piece);
            }
            Fault::Insert { at, bytes } => {
                let at = at.index(len + 1);
                input.splice(at..at, bytes.iter().copied());
            }
        }
    }
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Fault::FlipBit { at, bit }),
        any::<Index>().prop_map(|at| Fault::Truncate { at }),
        (any::<Index>(), 1..=MAX_PIECE).prop_map(|(at, len)| Fault::Remove { at, len }),
        (any::<Index>(), 1..=MAX_PIECE, any::<Index>()).prop_map(|(from, len, to)| Fault::Repeat {
            from,
            len,
            to
        }),
        (
            any::<Index>(),
            prop::collection::vec(any::<u8>(), 1..=MAX_PIECE)
        )
            .prop_map(|(at, bytes)| Fault::Insert { at, bytes }),
    ]
}

/// `valid` with one to four faults applied in turn.
pub(crate) fn damaged(valid: &[u8]) -> impl Strategy<Value = Vec<u8>> {
    let valid = valid.to_vec();
    prop::collection::vec(fault(), 1..=4).prop_map(move |faults| {
        let mut input = valid.clone();
        for fault in &faults {
            fault.apply(&mut input);
        }
        input
    })
}

/// `valid` text damaged as by [`damaged`] and read back as text, bytes that are not UTF-8
/// becoming U+FFFD: the damage reaches the parser behind a loader's UTF-8 check.
pub(crate) fn damaged_text(valid: &str) -> impl Strategy<Value = String> {
    damaged(valid.as_bytes()).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}
