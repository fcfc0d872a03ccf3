//! The error of byte-level document edits, shared by the member scanner
//! and the source edits built on it.

use std::fmt;

/// Why a document could not be edited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceError {
    /// The bytes are not one well-formed JSON value.
    NotJson {
        /// What is wrong, and where.
        message: String,
    },
    /// The document is well-formed JSON but not an object.
    NotAnObject,
    /// The document already has the partition field at its top level.
    FieldPresent {
        /// The reserved field name.
        field: String,
    },
    /// A document in an answer is not one of the reader's partition (its
    /// physical id is not built from the partition's id template).
    Foreign {
        /// The physical id it has.
        id: String,
    },
}

impl std::error::Error for SourceError {}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::NotJson { message } => {
                write!(f, "the document is not valid JSON: {message}")
            }
            SourceError::NotAnObject => f.write_str(
                "the document must be a JSON object (`{...}`), not an array, string, number, boolean or null",
            ),
            SourceError::Foreign { id } => write!(
                f,
                "a document in the answer has the id {id:?}, which is not one of this partition's ids; it is not handed on"
            ),
            SourceError::FieldPresent { field } => write!(
                f,
                "the document already has a top-level `{field}` field (or a key OpenSearch reads \
                 as it, such as `{field}.`), which is reserved for the tenant partition; remove it \
                 and retry"
            ),
        }
    }
}
