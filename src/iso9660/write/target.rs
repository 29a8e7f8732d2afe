//! Where an image goes (`-o`), decided before anything is read:
//! - a regular file, new or replaced (through a symlink, the file it names): the image is
//!   written beside it without a name (`O_TMPFILE`), so a build that is interrupted, killed
//!   (even with SIGKILL) or crashes leaves nothing behind; only once complete is it linked in as
//!   `OUT.tmp-PID` and renamed over OUT. Where the file system has no `O_TMPFILE` (NFS, most
//!   FUSE file systems), the file is `OUT.tmp-PID` from the start, removed on any error and by
//!   [`remove_pending_tmp`] (the command line calls it on SIGINT, SIGTERM and SIGHUP); only
//!   SIGKILL leaves it there;
//! - `-` (standard output), a pipe, a character device or a block device: written in place and
//!   in order, as `genisoimage -o` and `dd` do. Never replaced: `-o /dev/stdout` or
//!   `-o /dev/null` must not swap a system file for an image. A block device is opened
//!   exclusively (not while mounted), must hold the whole image, and is synced at the end.
//! - a directory, a socket, a terminal or a dangling symlink: refused up front.

use super::layout::Plan;
use super::stream::{self, Sink};
use super::tree::Tree;
use super::{Error, Progress};
use crate::iso9660::source::ReadAt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Seek};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The first of `sources` (the source tree and what is grafted into it) that `path`
/// (canonical) is, or is inside.
fn inside_which<'a>(sources: &[&'a Path], path: &Path) -> Result<Option<&'a Path>, Error> {
    for src in sources {
        let src_canon = fs::canonicalize(src).map_err(|source| Error::Stat {
            path: src.to_path_buf(),
            source,
        })?;
        if path.starts_with(src_canon) {
            return Ok(Some(src));
        }
    }
    Ok(None)
}

/// Where an image goes; see the module documentation.
#[derive(Debug)]
pub struct Target {
    /// The output as given, for messages.
    output: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A regular file at `path` (a symlink resolved), replaced by renaming `tmp` over it.
    Replace { path: PathBuf, tmp: PathBuf },
    /// Standard output, a pipe or a device, written in place.
    InPlace { file: File, block_device: bool },
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
    /// Decides where the image of the tree at `src` goes (see the module documentation).
    /// Opens a pipe or device at once, so that a busy device is found before the tree is read
    /// (opening a FIFO waits for its reader, as for any writer).
    /// `sources` are what the image is read from: the source tree, then what is grafted in.
    pub fn prepare(sources: &[&Path], output: &Path) -> Result<Target, Error> {
        let in_place = |output: &Path, file: File, block_device: bool| -> Result<Target, Error> {
            if file.is_terminal() {
                return Err(Error::OutputTerminal {
                    path: output.to_path_buf(),
                });
            }
            Ok(Target {
                output: output.to_path_buf(),
                kind: Kind::InPlace { file, block_device },
            })
        };
        if output.as_os_str() == "-" {
            let output = Path::new("standard output");
            let stdout = io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| Error::Open {
                    path: output.to_path_buf(),
                    source,
                })?;
            let file = File::from(stdout);
            // `mkiso SRC -o - > SRC/x.iso`: the shell made the file before mkiso ran; it would
            // be read while it is being written.
            if file.metadata().is_ok_and(|m| m.is_file()) {
                if let Ok(path) = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
                    if let Some(src) = inside_which(sources, &path)? {
                        return Err(Error::OutputInsideSource {
                            output: PathBuf::from(format!("standard output ({})", path.display())),
                            source_dir: src.to_path_buf(),
                        });
                    }
                }
            }
            return in_place(output, file, false);
        }
        let md = match fs::metadata(output) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Ok(target) = fs::read_link(output) {
                    return Err(Error::OutputDangling {
                        path: output.to_path_buf(),
                        target,
                    });
                }
                return Self::replace(sources, output, output);
            }
            Err(source) => {
                return Err(Error::Stat {
                    path: output.to_path_buf(),
                    source,
                })
            }
        };
        let ft = md.file_type();
        if ft.is_file() {
            let path = fs::canonicalize(output).map_err(|source| Error::Stat {
                path: output.to_path_buf(),
                source,
            })?;
            return Self::replace(sources, output, &path);
        }
        let refuse = |kind: &'static str| {
            Err(Error::OutputUnusable {
                path: output.to_path_buf(),
                kind,
            })
        };
        if ft.is_dir() {
            return refuse("directory");
        }
        if ft.is_socket() {
            return refuse("socket");
        }
        let block_device = ft.is_block_device();
        // O_EXCL on a block device: EBUSY while it is mounted or otherwise held exclusively.
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(if block_device { libc::O_EXCL } else { 0 })
            .open(output)
            .map_err(|source| Error::Open {
                path: output.to_path_buf(),
                source,
            })?;
        in_place(output, file, block_device)
    }

    /// A regular file at `path` (`output` as given), replaced: checks that it is not inside
    /// any of `sources` and names the temporary file (`OUT.tmp-PID` in its directory).
    fn replace(sources: &[&Path], output: &Path, path: &Path) -> Result<Target, Error> {
        let file_name = path.file_name().ok_or_else(|| Error::Create {
            path: output.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "output has no file name"),
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let parent_canon = fs::canonicalize(&parent).map_err(|source| Error::Create {
            path: output.to_path_buf(),
            source,
        })?;
        if let Some(src) = inside_which(sources, &parent_canon)? {
            return Err(Error::OutputInsideSource {
                output: output.to_path_buf(),
                source_dir: src.to_path_buf(),
            });
        }
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        Ok(Target {
            output: output.to_path_buf(),
            kind: Kind::Replace {
                path: parent_canon.join(file_name),
                tmp: parent_canon.join(tmp_name),
            },
        })
    }

    /// Writes the image of `tree` as planned: into place by rename, or in place.
    pub fn write(
        &self,
        tree: &Tree,
        plan: &Plan,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), Error> {
        match &self.kind {
            Kind::Replace { path, tmp } => self.write_and_rename(path, tmp, tree, plan, progress),
            Kind::InPlace { file, block_device } => {
                let werr = |source| Error::Write {
                    path: self.output.clone(),
                    source,
                };
                if *block_device {
                    let size = device_size(file).map_err(werr)?;
                    if size < plan.image_bytes() {
                        return Err(Error::DeviceTooSmall {
                            path: self.output.clone(),
                            size,
                            needed: plan.image_bytes(),
                        });
                    }
                }
                let mut sink = Sink::InOrder { file, pos: 0 };
                stream::write_image(&mut sink, &self.output, tree, plan, progress)?;
                if *block_device {
                    // Written when the command returns, before the medium is pulled.
                    file.sync_all().map_err(werr)?;
                }
                Ok(())
            }
        }
    }

    fn write_and_rename(
        &self,
        path: &Path,
        tmp: &Path,
        tree: &Tree,
        plan: &Plan,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), Error> {
        let dir = tmp.parent().unwrap_or(Path::new("."));
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
                    .open(tmp)
                    .map_err(|source| Error::Create {
                        path: tmp.to_path_buf(),
                        source,
                    })?;
                (f, true)
            }
            // The unnamed file has no name to show: the output's is the one the user knows.
            Err(source) => {
                return Err(Error::Create {
                    path: self.output.clone(),
                    source,
                })
            }
        };
        let mut guard = TmpGuard {
            path: tmp.to_path_buf(),
            armed: false,
        };
        if named {
            guard.arm();
        }
        stream::write_image(&mut Sink::Random(&out), &self.output, tree, plan, progress)?;
        // No fsync, like genisoimage, xorriso and cp: the rename still means the image is
        // never seen half-written, and syncing 1 GiB costs seconds the caller may not want.
        if !named {
            guard.path = link_to_a_free_name(&out, tmp)?;
            guard.arm();
        }
        drop(out);
        fs::rename(&guard.path, path).map_err(|source| Error::Rename {
            from: guard.path.clone(),
            to: self.output.clone(),
            source,
        })?;
        guard.disarm();
        Ok(())
    }
}

/// The size of the device open as `file`, in bytes (its end offset), with the position put
/// back at the start, where the in-order writes begin.
fn device_size(file: &File) -> io::Result<u64> {
    let size = ReadAt::size(file)?;
    let mut at: &File = file;
    at.rewind()?;
    Ok(size)
}

/// Links the finished unnamed file in as `tmp` (`OUT.tmp-PID`), or, where a file of that name
/// is left over (a killed build of a process with the same PID), `OUT.tmp-PID.1` and so on:
/// never over a file isomgr did not make now.
fn link_to_a_free_name(file: &File, tmp: &Path) -> Result<PathBuf, Error> {
    let mut n = 0u32;
    loop {
        let name = if n == 0 {
            tmp.to_path_buf()
        } else {
            let mut s = tmp.as_os_str().to_os_string();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::iso9660::write::plan_for_tests;
    use std::os::unix::fs::FileExt;

    impl Target {
        fn tmp(&self) -> &Path {
            match &self.kind {
                Kind::Replace { tmp, .. } => tmp,
                Kind::InPlace { .. } => panic!("{} is written in place", self.output.display()),
            }
        }
    }

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
        let target = Target::prepare(&[&src], &out).unwrap();
        // what a killed build of a process with this PID would have left
        fs::write(target.tmp(), b"not ours").unwrap();
        let (t, plan) = plan_for_tests(&src);
        target.write(&t, &plan, &mut |_| {}).unwrap();
        assert_eq!(fs::read(target.tmp()).unwrap(), b"not ours");
        assert_eq!(fs::metadata(&out).unwrap().len(), plan.image_bytes());
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            3,
            "src, out.iso, the old one"
        );
    }
}
