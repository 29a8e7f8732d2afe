//! isomgr: makes optical-disc images appear as directories by themselves.
pub mod fuse;
pub mod iso9660;
