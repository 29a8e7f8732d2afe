//! ISO9660 (ECMA-119) with Rock Ridge, Joliet and El Torito, and the UDF label.
//!
//! Owns the on-disk format: `ondisk` holds the types and codecs shared by reading and writing;
//! `descriptor`, `susp` and `read` parse untrusted images. Nothing here prints, spawns or
//! looks at the clock; the only I/O is positioned reads through [`ReadAt`].

pub mod descriptor;
pub mod error;
pub mod ondisk;
pub mod read;
pub mod source;
pub mod susp;

pub use descriptor::Fs;
pub use error::Error;
pub use ondisk::Timestamp;
pub use read::{probe, Entry, Image, Kind, Names, VolumeInfo};
pub use source::ReadAt;
