//! Writes a [`Plan`] to disk: a temporary file beside the output, metadata first, then each
//! file's data streamed in walk order, then a rename. The imperative shell of the writer.
//!
//! The temporary file has no name while it is written (`O_TMPFILE`): a build that is
//! interrupted, killed (even with SIGKILL) or crashes leaves nothing behind, as the kernel frees
//! the unnamed file with its last descriptor. Only once complete is it linked in as
//! `OUT.tmp-PID` and renamed over OUT. Where the file system has no `O_TMPFILE` (NFS, most FUSE
//! file systems), the file is `OUT.tmp-PID` from the start, removed on any error and by
//! [`remove_pending_tmp`] (the command line calls it on SIGINT, SIGTERM and SIGHUP); only
//! SIGKILL leaves it there.
//!
//! Memory stays bounded whatever the data size: small files are gathered in one reused batch
//! buffer, large ones copied with `copy_file_range` (read/write where the kernel cannot),
//! only their data segments (`SEEK_DATA`/`SEEK_HOLE`), so holes stay holes in the image. Each
//! file must still have the size it had when listed. On any error the temporary file is
//! removed and nothing appears at the output path.

use super::layout::Plan;
use super::tree::Tree;
use super::{Error, Progress};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Files up to this size are read whole into the batch buffer.
pub(super) const SMALL_FILE: u64 = 1 << 20;
/// Batch buffer size: consecutive small files are written with one `pwrite`.
const BATCH: usize = 8 << 20;
/// Largest single copy request, so progress moves during a big file.
const COPY_CHUNK: u64 = 64 << 20;
/// Buffer of the read/write fallback copy.
const FALLBACK_BUF: usize = 1 << 20;

/// Where an image goes: the output path and the temporary file written first.
#[derive(Debug)]
pub struct Target {
    output: PathBuf,
    tmp: PathBuf,
}

/// Removes the temporary file unless the image was renamed into place.
struct TmpGuard {
    path: PathBuf,
    armed: bool,
}

impl TmpGuard {
    /// From now on the named file is removed on drop, or by [`remove_pending_tmp`].
    fn arm(&mut self) {
        self.armed = true;
        if let Ok(c) = std::ffi::CString::new(self.path.as_os_str().as_bytes()) {
            // Leaked: a signal handler may read it at any moment, so it is never freed.
            PENDING.store(c.into_raw(), Ordering::SeqCst);
        }
    }

    /// The file is the image now (renamed into place): keep it.
    fn disarm(&mut self) {
        self.armed = false;
        PENDING.store(ptr::null_mut(), Ordering::SeqCst);
    }
}

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
            PENDING.store(ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

/// The named temporary file of the build in progress, a NUL-terminated path, or null.
static PENDING: AtomicPtr<libc::c_char> = AtomicPtr::new(ptr::null_mut());

/// Removes the named temporary file of the build in progress, if there is one. Makes only
/// async-signal-safe calls: it is meant for a handler of SIGINT, SIGTERM or SIGHUP that then
/// lets the signal end the process. (An unnamed `O_TMPFILE` file needs nothing: the kernel
/// frees it with the process.)
pub fn remove_pending_tmp() {
    let p = PENDING.swap(ptr::null_mut(), Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: `p` came from CString::into_raw and is never freed.
        unsafe { libc::unlink(p) };
    }
}

impl Target {
    /// Checks that `output` can be written and is not inside the tree at `src`, and names the
    /// temporary file (`OUT.tmp-PID` in the output's directory).
    pub fn prepare(src: &Path, output: &Path) -> Result<Target, Error> {
        let src_canon = fs::canonicalize(src).map_err(|source| Error::Stat {
            path: src.to_path_buf(),
            source,
        })?;
        let file_name = output.file_name().ok_or_else(|| Error::Create {
            path: output.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "output has no file name"),
        })?;
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let parent_canon = fs::canonicalize(&parent).map_err(|source| Error::Create {
            path: output.to_path_buf(),
            source,
        })?;
        if parent_canon.starts_with(&src_canon) {
            return Err(Error::OutputInsideSource {
                output: output.to_path_buf(),
                source_dir: src.to_path_buf(),
            });
        }
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        Ok(Target {
            output: output.to_path_buf(),
            tmp: parent_canon.join(tmp_name),
        })
    }

    /// Writes the image of `tree` as planned and renames it into place.
    pub fn write(
        &self,
        tree: &Tree,
        plan: &Plan,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), Error> {
        let dir = self.tmp.parent().unwrap_or(Path::new("."));
        // ISOMGR_NO_TMPFILE: a testing aid, to behave as on a file system without O_TMPFILE.
        let unnamed = if std::env::var_os("ISOMGR_NO_TMPFILE").is_some() {
            Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
        } else {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o644)
                .open(dir)
        };
        let (out, named) = match unnamed {
            Ok(f) => (f, false),
            // No O_TMPFILE here: EOPNOTSUPP, or EISDIR from a kernel that predates it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&self.tmp)
                    .map_err(|source| Error::Create {
                        path: self.tmp.clone(),
                        source,
                    })?;
                (f, true)
            }
            Err(source) => {
                return Err(Error::Create {
                    path: self.tmp.clone(),
                    source,
                })
            }
        };
        let mut guard = TmpGuard {
            path: self.tmp.clone(),
            armed: false,
        };
        if named {
            guard.arm();
        }
        let werr = |source: io::Error| Error::Write {
            path: self.output.clone(),
            source,
        };
        out.write_all_at(&plan.metadata, 0).map_err(werr)?;
        let mut w = DataWriter {
            out: &out,
            output: &self.output,
            batch: Vec::new(),
            batch_start: 0,
            done: 0,
            total: tree.data_bytes(),
            progress,
        };
        (w.progress)(Progress {
            done: 0,
            total: w.total,
        });
        for (f, &off) in tree.data.iter().zip(&plan.data_offsets) {
            w.file(&f.path, f.size, off)?;
        }
        w.flush()?;
        // Holes left between and after data segments read as zeros and stay unallocated;
        // extending last (rather than first) keeps the data writes appending, which is faster.
        out.set_len(plan.image_bytes()).map_err(werr)?;
        // No fsync, like genisoimage, xorriso and cp: the rename still means the image is
        // never seen half-written, and syncing 1 GiB costs seconds the caller may not want.
        if !named {
            guard.path = self.link_to_a_free_name(&out)?;
            guard.arm();
        }
        drop(out);
        fs::rename(&guard.path, &self.output).map_err(|source| Error::Rename {
            from: guard.path.clone(),
            to: self.output.clone(),
            source,
        })?;
        guard.disarm();
        Ok(())
    }

    /// Links the finished unnamed file in as `OUT.tmp-PID`, or, where a file of that name is
    /// left over (a killed build of a process with the same PID), `OUT.tmp-PID.1` and so on:
    /// never over a file isomgr did not make now.
    fn link_to_a_free_name(&self, file: &File) -> Result<PathBuf, Error> {
        let mut n = 0u32;
        loop {
            let name = if n == 0 {
                self.tmp.clone()
            } else {
                let mut s = self.tmp.clone().into_os_string();
                s.push(format!(".{n}"));
                PathBuf::from(s)
            };
            match link_unnamed(file, &name) {
                Ok(()) => return Ok(name),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && n < 99 => n += 1,
                Err(source) => return Err(Error::Create { path: name, source }),
            }
        }
    }
}

/// Gives the unnamed (`O_TMPFILE`) file `file` the name `path`: by `AT_EMPTY_PATH`, which
/// kernels before 6.10 allow only with CAP_DAC_READ_SEARCH, else by its /proc/self/fd link.
fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    match link_at(file.as_raw_fd(), Path::new(""), path, libc::AT_EMPTY_PATH) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EPERM)) => {
            link_via_proc(file, path)
        }
        r => r,
    }
}

fn link_via_proc(file: &File, path: &Path) -> io::Result<()> {
    let proc = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    link_at(libc::AT_FDCWD, &proc, path, libc::AT_SYMLINK_FOLLOW)
}

fn link_at(dirfd: i32, from: &Path, to: &Path, flags: i32) -> io::Result<()> {
    let from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; `dirfd` is AT_FDCWD or a descriptor we own.
    let r = unsafe { libc::linkat(dirfd, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

struct DataWriter<'a> {
    out: &'a File,
    output: &'a Path,
    batch: Vec<u8>,
    batch_start: u64,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
}

fn open_source(path: &Path) -> Result<File, Error> {
    // O_NOATIME keeps atimes as they were; only the owner (or root) may ask for it.
    // O_NONBLOCK: a FIFO put in the file's place since the listing must not hang the build
    // (it is refused as not a regular file); regular files ignore it.
    let open = |flags| {
        OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_NONBLOCK)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        }),
        Err(source) => Err(Error::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Checks that `file` (opened from `path`) is still a regular file of the size listed.
fn check_size(file: &File, path: &Path, expected: u64) -> Result<(), Error> {
    let md = file.metadata().map_err(|source| Error::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    if !md.is_file() {
        return Err(Error::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let actual = md.len();
    if actual != expected {
        return Err(Error::SizeChanged {
            path: path.to_path_buf(),
            expected,
            actual,
        });
    }
    Ok(())
}

fn is_write_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG | libc::EROFS)
    )
}

impl DataWriter<'_> {
    fn report(&mut self) {
        (self.progress)(Progress {
            done: self.done,
            total: self.total,
        });
    }

    fn flush(&mut self) -> Result<(), Error> {
        if !self.batch.is_empty() {
            self.out
                .write_all_at(&self.batch, self.batch_start)
                .map_err(|source| Error::Write {
                    path: self.output.to_path_buf(),
                    source,
                })?;
            self.batch.clear();
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, size: u64, offset: u64) -> Result<(), Error> {
        let src = open_source(path)?;
        check_size(&src, path, size)?;
        // `large` moves `done` along as it copies; the file counts once, whatever it reported.
        let start = self.done;
        if size <= SMALL_FILE {
            // Reads one byte past the size, so it also finds a file that grew.
            self.small(&src, path, size as usize, offset)?;
        } else {
            self.flush()?;
            self.large(&src, path, size, offset)?;
            check_size(&src, path, size)?;
        }
        self.done = start + size;
        self.report();
        Ok(())
    }

    /// Reads a small file whole into the batch. Empty files take no place there (they all
    /// point at the first data sector), only the check that they are still empty.
    fn small(&mut self, src: &File, path: &Path, size: usize, offset: u64) -> Result<(), Error> {
        if size == 0 {
            return read_whole(src, path, &mut [0u8; 1]);
        }
        let fits = offset >= self.batch_start
            && (offset - self.batch_start) as usize + size <= BATCH.max(size);
        if !self.batch.is_empty() && !fits {
            self.flush()?;
        }
        if self.batch.is_empty() {
            self.batch_start = offset;
        }
        let at = (offset - self.batch_start) as usize;
        self.batch.resize(at + size + 1, 0);
        read_whole(src, path, self.batch.get_mut(at..).unwrap_or_default())?;
        self.batch.truncate(at + size);
        Ok(())
    }

    /// Copies the data segments of a large file; holes are skipped (the image was sized with
    /// `set_len` at the end, so they read back as zeros and stay unallocated).
    fn large(&mut self, src: &File, path: &Path, size: u64, base: u64) -> Result<(), Error> {
        let fd = src.as_raw_fd();
        let mut pos = 0u64;
        let start_done = self.done;
        while pos < size {
            let data = match seek(fd, pos, libc::SEEK_DATA) {
                Ok(d) => d,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                Err(_) => pos,
            };
            if data >= size {
                break;
            }
            let end = seek(fd, data, libc::SEEK_HOLE).map_or(size, |h| h.clamp(data + 1, size));
            self.copy_range(src, path, data, base + data, end - data, start_done, size)?;
            pos = end;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_range(
        &mut self,
        src: &File,
        path: &Path,
        mut from: u64,
        mut to: u64,
        len: u64,
        start_done: u64,
        file_size: u64,
    ) -> Result<(), Error> {
        let end = from + len;
        let mut use_cfr = true;
        let mut buf = Vec::new();
        while from < end {
            let want = (end - from).min(COPY_CHUNK);
            let n = if use_cfr {
                let mut off_in = from as libc::loff_t;
                let mut off_out = to as libc::loff_t;
                // SAFETY: both descriptors are open for the duration of the call and the
                // offset pointers point to live locals.
                let r = unsafe {
                    libc::copy_file_range(
                        src.as_raw_fd(),
                        &mut off_in,
                        self.out.as_raw_fd(),
                        &mut off_out,
                        want as usize,
                        0,
                    )
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                            use_cfr = false;
                            continue;
                        }
                        _ if is_write_errno(&e) => {
                            return Err(Error::Write {
                                path: self.output.to_path_buf(),
                                source: e,
                            })
                        }
                        _ => {
                            return Err(Error::Read {
                                path: path.to_path_buf(),
                                source: e,
                            })
                        }
                    }
                }
                r as u64
            } else {
                if buf.is_empty() {
                    buf = vec![0u8; FALLBACK_BUF];
                }
                let chunk = buf
                    .get_mut(..(want as usize).min(FALLBACK_BUF))
                    .unwrap_or_default();
                let r = match src.read_at(chunk, from) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(Error::Read {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                };
                self.out
                    .write_all_at(chunk.get(..r).unwrap_or_default(), to)
                    .map_err(|source| Error::Write {
                        path: self.output.to_path_buf(),
                        source,
                    })?;
                r as u64
            };
            if n == 0 {
                // the file ended before its listed size
                let actual = src.metadata().map_or(from, |m| m.len());
                return Err(Error::SizeChanged {
                    path: path.to_path_buf(),
                    expected: file_size,
                    actual,
                });
            }
            from += n;
            to += n;
            self.done = start_done + from.min(end);
            self.report();
        }
        Ok(())
    }
}

/// Reads `src` into `buf`, one byte longer than the file was listed: end of file must come
/// exactly there, so a file that grew or shrank since it was checked is an error.
fn read_whole(src: &File, path: &Path, buf: &mut [u8]) -> Result<(), Error> {
    let size = buf.len().saturating_sub(1);
    let changed = |actual: u64| Error::SizeChanged {
        path: path.to_path_buf(),
        expected: size as u64,
        actual,
    };
    let mut got = 0;
    let mut reader = src;
    while got < buf.len() {
        match reader.read(buf.get_mut(got..).unwrap_or_default()) {
            Ok(0) if got == size => return Ok(()),
            Ok(0) => return Err(changed(got as u64)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Err(changed(src.metadata().map_or(got as u64, |m| m.len())))
}

fn seek(fd: i32, pos: u64, whence: i32) -> io::Result<u64> {
    // SAFETY: lseek on a descriptor we own; no memory is passed.
    let r = unsafe { libc::lseek(fd, pos as libc::off_t, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::iso9660::write::plan_for_tests;

    #[test]
    fn unnamed_files_are_linked_either_way() {
        let tmp = tempfile::tempdir().unwrap();
        for (linked, (name, link)) in [
            (
                "empty-path",
                link_unnamed as fn(&File, &Path) -> io::Result<()>,
            ),
            ("proc", link_via_proc),
        ]
        .into_iter()
        .enumerate()
        {
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o644)
                .open(tmp.path())
                .unwrap();
            f.write_all_at(name.as_bytes(), 0).unwrap();
            // nothing new in the directory until it is linked
            assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), linked, "{name}");
            let to = tmp.path().join(name);
            link(&f, &to).unwrap();
            assert_eq!(fs::read(&to).unwrap(), name.as_bytes());
            let e = link(&f, &to).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{name}");
        }
    }

    #[test]
    fn a_left_over_temporary_name_is_kept_and_another_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a.txt"), b"aaaa").unwrap();
        let out = tmp.path().join("out.iso");
        let target = Target::prepare(&src, &out).unwrap();
        // what a killed build of a process with this PID would have left
        fs::write(&target.tmp, b"not ours").unwrap();
        let (t, plan) = plan_for_tests(&src);
        target.write(&t, &plan, &mut |_| {}).unwrap();
        assert_eq!(fs::read(&target.tmp).unwrap(), b"not ours");
        assert_eq!(fs::metadata(&out).unwrap().len(), plan.image_bytes());
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            3,
            "src, out.iso, the old one"
        );
    }

    fn build_after(change: impl Fn(&Path)) -> Result<(), Error> {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a.txt"), b"aaaa").unwrap();
        fs::write(src.join("big.bin"), vec![1u8; 3 << 20]).unwrap();
        let (t, plan) = plan_for_tests(&src);
        change(&src);
        let out = tmp.path().join("out.iso");
        let target = Target::prepare(&src, &out)?;
        let r = target.write(&t, &plan, &mut |_| {});
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if r.is_err() {
            assert_eq!(names, ["src"], "partial image left behind");
        }
        r
    }

    #[test]
    fn file_that_grew_after_listing_is_an_error_naming_it() {
        let e = build_after(|s| fs::write(s.join("a.txt"), b"aaaaaaaa").unwrap()).unwrap_err();
        assert!(
            matches!(&e, Error::SizeChanged { path, expected: 4, actual: 8 }
            if path.ends_with("a.txt")),
            "{e}"
        );
    }

    #[test]
    fn a_fifo_in_a_files_place_is_refused_without_hanging() {
        let e = build_after(|s| {
            fs::remove_file(s.join("a.txt")).unwrap();
            let p = std::ffi::CString::new(s.join("a.txt").as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);
        })
        .unwrap_err();
        assert!(
            matches!(&e, Error::NotRegular { path } if path.ends_with("a.txt")),
            "{e}"
        );
    }

    /// Reads `data` as a small file listed with `listed` bytes.
    fn read_small(data: &[u8], listed: usize) -> Result<Vec<u8>, Error> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, data).unwrap();
        let out = File::create(tmp.path().join("out")).unwrap();
        let mut progress = |_| {};
        let mut w = DataWriter {
            out: &out,
            output: Path::new("out"),
            batch: Vec::new(),
            batch_start: 0,
            done: 0,
            total: 0,
            progress: &mut progress,
        };
        w.small(&File::open(&path).unwrap(), &path, listed, 2048)?;
        Ok(w.batch)
    }

    #[test]
    fn a_small_file_must_end_where_it_was_listed_to() {
        assert_eq!(read_small(b"abcd", 4).unwrap(), b"abcd");
        assert_eq!(read_small(b"", 0).unwrap(), b"");
        for (data, listed, actual) in [(&b"abcdefgh"[..], 4, 8), (b"ab", 4, 2), (b"x", 0, 1)] {
            let e = read_small(data, listed).unwrap_err();
            assert!(
                matches!(e, Error::SizeChanged { expected, actual: a, .. }
                    if expected == listed as u64 && a == actual),
                "{data:?} listed {listed}: {e}"
            );
        }
    }

    #[test]
    fn large_file_that_shrank_is_an_error_naming_it() {
        let e = build_after(|s| {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(s.join("big.bin"))
                .unwrap();
            f.set_len(1 << 20).unwrap();
        })
        .unwrap_err();
        assert!(
            matches!(&e, Error::SizeChanged { path, .. } if path.ends_with("big.bin")),
            "{e}"
        );
        assert!(e.to_string().contains("changed size"));
    }

    #[test]
    fn unchanged_tree_builds() {
        build_after(|_| {}).unwrap();
    }
}
