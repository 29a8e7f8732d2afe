//! ISO9660 (ECMA-119) with Rock Ridge, Joliet and El Torito, and the UDF label.
//!
//! Owns the on-disk format: `ondisk` holds the types and codecs shared by reading and writing.
//! Nothing here prints, spawns or looks at the clock.

pub mod ondisk;
pub mod write;
