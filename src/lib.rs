//! isomgr: makes optical-disc images appear as directories by themselves.
pub mod cli;
pub mod iso9660;
