//! TEMPORARY compile-only stand-in for `crate::iso9660`'s reader API until main lands.
//! Removed at the merge; never part of the final branch.
#![allow(dead_code, clippy::all)]
use std::ffi::{OsStr, OsString};
use std::io;

pub use crate::iso9660::ondisk::Timestamp;

pub trait ReadAt: Send + Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn size(&self) -> io::Result<u64>;
}
impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}
#[derive(Debug, thiserror::Error)]
#[error("stand-in")]
pub struct Error;
impl Error {
    pub fn errno(&self) -> i32 {
        libc::EIO
    }
}
pub struct VolumeInfo {
    pub label: Option<String>,
    pub volume_size: u64,
    pub image_size: u64,
}
pub struct Image<R> {
    src: R,
    info: VolumeInfo,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub target: Option<OsString>,
    pub id: u64,
}
impl<R: ReadAt> Image<R> {
    pub fn open(_src: R) -> Result<Image<R>, Error> {
        Err(Error)
    }
    pub fn info(&self) -> &VolumeInfo {
        &self.info
    }
    pub fn root(&self) -> Entry {
        unreachable!()
    }
    pub fn read_dir(&self, _dir: &Entry) -> Result<Vec<Entry>, Error> {
        Err(Error)
    }
    pub fn lookup(&self, _path: &str) -> Result<Entry, Error> {
        Err(Error)
    }
    pub fn read_at(&self, _file: &Entry, _offset: u64, _buf: &mut [u8]) -> Result<usize, Error> {
        Err(Error)
    }
    pub fn readlink<'a>(&self, e: &'a Entry) -> Option<&'a OsStr> {
        e.target.as_deref()
    }
}
