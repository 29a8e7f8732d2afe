//! A recording [`Sys`]: every call goes into one ordered list of typed [`Call`]s, and the next
//! call of a kind can be told to fail with an errno. Clones share the record, so a test keeps
//! one clone and hands the other to the code under test. It touches nothing on the system.
//!
//! The views (`mounts`, `loops`, `list_dir`, `filesystems`) return what the test set; the fake
//! does not derive them from the calls.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{CallKind, FileId, LoopDev, LoopEntry, MountEntry, MountFlags, Sys};

/// One recorded call, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    AttachLoop {
        image: PathBuf,
        read_only: bool,
    },
    DetachLoop {
        device: PathBuf,
    },
    Mount {
        source: PathBuf,
        target: PathBuf,
        fstype: String,
        flags: MountFlags,
    },
    Unmount {
        target: PathBuf,
        lazy: bool,
    },
    MakeDir {
        path: PathBuf,
        mode: u32,
    },
    RemoveDir {
        path: PathBuf,
    },
    ListDir {
        path: PathBuf,
    },
    Mounts,
    Loops,
    Filesystems,
    ProbeLoop,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    fail: HashMap<CallKind, i32>,
    next_loop: u32,
    mounts: Vec<MountEntry>,
    loops: Vec<LoopEntry>,
    dirs: HashMap<PathBuf, Vec<OsString>>,
    filesystems: Vec<String>,
}

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct FakeSys {
    state: Arc<Mutex<State>>,
}

impl FakeSys {
    pub fn new() -> Self {
        FakeSys::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next call of `kind` fails with `errno` (once).
    pub fn fail_next(&self, kind: CallKind, errno: i32) {
        self.lock().fail.insert(kind, errno);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    pub fn set_mounts(&self, mounts: Vec<MountEntry>) {
        self.lock().mounts = mounts;
    }

    pub fn set_loops(&self, loops: Vec<LoopEntry>) {
        self.lock().loops = loops;
    }

    pub fn set_dir(&self, path: &Path, names: &[&str]) {
        self.lock()
            .dirs
            .insert(path.to_owned(), names.iter().map(OsString::from).collect());
    }

    pub fn set_filesystems(&self, fs: &[&str]) {
        self.lock().filesystems = fs.iter().map(|s| (*s).to_owned()).collect();
    }

    /// Records `call`; fails it if told to.
    fn record(&self, kind: CallKind, call: Call) -> io::Result<()> {
        let mut s = self.lock();
        s.calls.push(call);
        match s.fail.remove(&kind) {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }
}

impl Sys for FakeSys {
    fn attach_loop(&self, _image: &File, path: &Path, read_only: bool) -> io::Result<LoopDev> {
        self.record(
            CallKind::AttachLoop,
            Call::AttachLoop {
                image: path.to_owned(),
                read_only,
            },
        )?;
        let mut s = self.lock();
        let n = s.next_loop;
        s.next_loop += 1;
        Ok(LoopDev::new(
            PathBuf::from(format!("/dev/loop{n}")),
            n,
            FileId { dev: 0, ino: 0 },
            None,
        ))
    }

    fn detach_loop(&self, dev: &LoopDev) -> io::Result<()> {
        self.record(
            CallKind::DetachLoop,
            Call::DetachLoop {
                device: dev.path.clone(),
            },
        )
    }

    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
    ) -> io::Result<()> {
        self.record(
            CallKind::Mount,
            Call::Mount {
                source: source.to_owned(),
                target: target.to_owned(),
                fstype: fstype.to_owned(),
                flags,
            },
        )
    }

    fn unmount(&self, target: &Path, lazy: bool) -> io::Result<()> {
        self.record(
            CallKind::Unmount,
            Call::Unmount {
                target: target.to_owned(),
                lazy,
            },
        )
    }

    fn make_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(
            CallKind::MakeDir,
            Call::MakeDir {
                path: path.to_owned(),
                mode,
            },
        )
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.record(
            CallKind::RemoveDir,
            Call::RemoveDir {
                path: path.to_owned(),
            },
        )
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.record(
            CallKind::ListDir,
            Call::ListDir {
                path: path.to_owned(),
            },
        )?;
        Ok(self.lock().dirs.get(path).cloned().unwrap_or_default())
    }

    fn mounts(&self) -> io::Result<Vec<MountEntry>> {
        self.record(CallKind::Mounts, Call::Mounts)?;
        Ok(self.lock().mounts.clone())
    }

    fn loops(&self) -> io::Result<Vec<LoopEntry>> {
        self.record(CallKind::Loops, Call::Loops)?;
        Ok(self.lock().loops.clone())
    }

    fn filesystems(&self) -> io::Result<Vec<String>> {
        self.record(CallKind::Filesystems, Call::Filesystems)?;
        Ok(self.lock().filesystems.clone())
    }

    fn probe_loop(&self) -> io::Result<()> {
        self.record(CallKind::ProbeLoop, Call::ProbeLoop)
    }
}
