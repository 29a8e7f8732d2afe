//! ISO9660 (ECMA-119) with Rock Ridge, Joliet and El Torito, and UDF (ECMA-167) for reading.
//!
//! Owns the on-disk format: `ondisk` holds the types and codecs shared by reading and writing;
//! `descriptor`, `susp`, `udf` and `read` parse untrusted images; `write` builds images from
//! directory trees (its `stream`/`tree::walk` shell is the one place that touches files). Nothing here prints, spawns or
//! looks at the clock; the only I/O is positioned reads through [`ReadAt`].

pub mod descriptor;
pub mod eltorito;
pub mod error;
pub mod ondisk;
pub mod read;
pub mod source;
pub mod susp;
mod udf;
pub mod write;
mod zisofs;

pub use descriptor::Fs;
pub use error::Error;
pub use ondisk::Timestamp;
pub use read::{probe, Entry, Image, Kind, Names, VolumeInfo};
pub use source::ReadAt;
