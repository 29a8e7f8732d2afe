//! Errors of the ISO9660 reader. Each says where in the image it happened; the caller adds
//! which image (the reader never sees the path).

use std::io;

/// What went wrong reading an image. Parser variants carry the sector and offset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {len} bytes at byte offset {offset}")]
    Io {
        offset: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("image is truncated: {what} at byte offset {offset} needs {need} bytes but the image ends at {size}")]
    Truncated {
        what: &'static str,
        offset: u64,
        need: u64,
        size: u64,
    },
    #[error("not an ISO9660 or UDF image: no volume descriptor at sector 16")]
    NotAnImage,
    #[error("volume descriptor at sector {sector}: {why}")]
    Descriptor { sector: u64, why: String },
    #[error("directory record at sector {sector} offset {offset}: {why}")]
    Record {
        sector: u64,
        offset: usize,
        why: String,
    },
    #[error("system use area at sector {sector} offset {offset}: {why}")]
    Susp {
        sector: u64,
        offset: usize,
        why: String,
    },
    #[error("directory loop: {path} at sector {sector} is one of its own ancestors")]
    Loop { path: String, sector: u64 },
    #[error("{what} ({value}) exceeds the limit of {limit}")]
    Limit {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("{path}: no such file or directory in the image")]
    NotFound { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: is a directory")]
    IsADirectory { path: String },
    #[error("the image has neither an ISO9660 directory tree nor a UDF one")]
    NoIsoTree,
    /// `offset` 0: not known (no UDF structure is at byte 0).
    #[error("UDF structure{}: {why}", at_offset(*.offset))]
    Udf { offset: u64, why: String },
    #[error("{path}: interleaved files are not supported")]
    Interleaved { path: String },
    #[error("{path}: compressed (zisofs): {why}")]
    Compressed { path: String, why: String },
}

fn at_offset(offset: u64) -> String {
    if offset == 0 {
        String::new()
    } else {
        format!(" at byte offset {offset}")
    }
}

impl Error {
    /// The errno a filesystem should answer with for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound { .. } => libc::ENOENT,
            Error::NotADirectory { .. } => libc::ENOTDIR,
            Error::IsADirectory { .. } => libc::EISDIR,
            Error::Loop { .. } => libc::ELOOP,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }

    pub(crate) fn record(sector: u64, offset: usize, why: impl Into<String>) -> Self {
        Error::Record {
            sector,
            offset,
            why: why.into(),
        }
    }

    pub(crate) fn descriptor(sector: u64, why: impl Into<String>) -> Self {
        Error::Descriptor {
            sector,
            why: why.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
