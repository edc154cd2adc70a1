//! The recorded history: one [`Operation`] per client request, with its invocation and
//! completion times and what the client saw.

use std::fmt;

/// A value as the checker sees it: every write carries a value unique in the run, so the
/// value names the write that produced it. Bytes that no write produced read as
/// [`FOREIGN_VALUE`].
pub type ValueId = u64;

/// The value id given to bytes no client of this run wrote (always a violation).
pub const FOREIGN_VALUE: ValueId = u64::MAX;

/// What an operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// A linearizable `GET`.
    Read,
    /// An unconditional `PUT` of a unique value.
    Write {
        /// The value written.
        value: ValueId,
    },
    /// A `PUT` with `If-Match: "expected"`.
    Cas {
        /// The revision the key must have.
        expected: u64,
        /// The value written if it does.
        value: ValueId,
    },
    /// An unconditional `DELETE`.
    Delete,
}

/// What the client saw when the operation completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A read's answer: value and revision, or not found.
    Read(Option<(ValueId, u64)>),
    /// A write or successful CAS, with the new revision.
    Written {
        /// The revision the write got.
        revision: u64,
    },
    /// A CAS refused with `412`, with the key's current revision (None: absent).
    CasFailed {
        /// The current revision reported.
        current: Option<u64>,
    },
    /// A delete's answer.
    Deleted {
        /// Whether the key existed.
        existed: bool,
    },
    /// Indeterminate: a timeout, `503` or broken connection on a write. The write may take
    /// effect at any point after its invocation, or never.
    Unknown,
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client (a sequential process) that issued it.
    pub client: usize,
    /// The key it touched.
    pub key: String,
    /// What it asked.
    pub input: Input,
    /// What it saw.
    pub output: Output,
    /// When it was invoked, in nanoseconds since the run started.
    pub invoke_ns: u64,
    /// When it completed; `None` for an indeterminate operation (it may take effect later).
    pub complete_ns: Option<u64>,
}

impl Operation {
    /// Whether the outcome is unknown.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self.output, Output::Unknown)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        let input = match self.input {
            Input::Read => "read".to_string(),
            Input::Write { value } => format!("write v{value}"),
            Input::Cas { expected, value } => format!("cas r{expected} -> v{value}"),
            Input::Delete => "delete".to_string(),
        };
        let output = match self.output {
            Output::Read(Some((value, revision))) if value == FOREIGN_VALUE => {
                format!("read FOREIGN bytes @r{revision}")
            }
            Output::Read(Some((value, revision))) => format!("v{value} @r{revision}"),
            Output::Read(None) => "not found".to_string(),
            Output::Written { revision } => format!("ok r{revision}"),
            Output::CasFailed { current: Some(c) } => format!("412 current r{c}"),
            Output::CasFailed { current: None } => "412 absent".to_string(),
            Output::Deleted { existed } => format!("ok existed={existed}"),
            Output::Unknown => "INDETERMINATE".to_string(),
        };
        let complete = self.complete_ns.map_or("       ...  ".to_string(), |ns| {
            format!("{:>10.3}ms", ms(ns))
        });
        write!(
            f,
            "[{:>10.3}ms .. {complete}] c{:<2} {:<8} {input:<22} => {output}",
            ms(self.invoke_ns),
            self.client,
            self.key
        )
    }
}
