//! isomgr: makes optical-disc images appear as directories by themselves.
//!
//! Crate map:
//! - [`iso9660`]: the pure ISO9660 / Rock Ridge / Joliet / El Torito reader and the UDF label,
//!   with the on-disk types the writer shares. Bytes in, typed values or errors out.
//! - [`names`]: volume labels made into safe directory names, collisions resolved.
//! - [`cli`]: one module per subcommand; the only layer that prints.

pub mod cli;
pub mod iso9660;
pub mod names;
