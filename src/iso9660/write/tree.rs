//! The source tree's metadata as plain data, and the walk that collects it.
//!
//! [`walk`] is the only part touching the disk: readdir and lstat, never file contents, so
//! memory is bounded by the number of entries and names. Children are sorted by name bytes so
//! everything derived from a tree (serial numbers, data order, the image) is deterministic.

use super::{Error, Warning};
use crate::iso9660::ondisk::mode;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Index into [`Tree::nodes`]; the root is 0.
pub type NodeId = usize;

/// POSIX attributes as lstat reports them (times in Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Full `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub atime: i64,
    pub ctime: i64,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory with its children sorted by name bytes.
    Dir { children: Vec<NodeId> },
    /// A regular file; `data` indexes [`Tree::data`] (hard links share it).
    File { data: usize },
    /// A symlink and its target bytes.
    Symlink { target: Vec<u8> },
}

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The name in its directory as raw bytes (empty for the root).
    pub name: Vec<u8>,
    pub parent: NodeId,
    pub meta: Meta,
    pub kind: Kind,
    /// File serial number for RRIP PX, assigned in walk order (hard links share one).
    pub serial: u32,
    /// Link count inside the tree: 2 + subdirectories for a directory, the number of names of
    /// the same file in the tree for a file, 1 for a symlink.
    pub nlink: u32,
}

/// The contents of one regular file, written once however many names it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileData {
    pub path: PathBuf,
    pub size: u64,
}

/// A directory tree's metadata. Invariant: node 0 is a directory; every child's `parent` is
/// the directory listing it; `data` indexes are in range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
    pub data: Vec<FileData>,
}

impl Tree {
    /// Number of file names (hard links counted once per name).
    pub fn file_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n.kind, Kind::File { .. }))
            .count()
    }

    /// Number of directories, the root included.
    pub fn dir_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n.kind, Kind::Dir { .. }))
            .count()
    }

    /// The children of `id` (empty for non-directories and unknown ids).
    pub fn children(&self, id: NodeId) -> &[NodeId] {
        match self.nodes.get(id).map(|n| &n.kind) {
            Some(Kind::Dir { children }) => children,
            _ => &[],
        }
    }

    /// Total bytes of file data (each file once).
    pub fn data_bytes(&self) -> u64 {
        self.data.iter().map(|d| d.size).sum()
    }
}

/// Entries left out of the image (`mkiso --exclude`): shell globs (`*`, `?`, `[...]`, as
/// fnmatch(3) reads them). A pattern without a `/` is matched against each entry's name at any
/// depth; one with a `/` against the entry's path from the source root (`*` then stays within
/// one name; a leading `/` or `./` only says so: `/boot.cat` is the root's). A directory left
/// out takes its whole subtree.
#[derive(Clone, Debug, Default)]
pub struct Exclude {
    names: Vec<std::ffi::CString>,
    paths: Vec<std::ffi::CString>,
}

impl Exclude {
    /// The patterns as given; `Err` names one that cannot be a pattern (empty, or with a NUL
    /// byte, or `/` alone).
    pub fn new(patterns: &[String]) -> Result<Exclude, String> {
        let mut e = Exclude::default();
        for p in patterns {
            let trimmed = p.trim_start_matches("./").trim_start_matches('/');
            let bad = |why: &str| format!("--exclude {p:?}: {why}");
            if trimmed.is_empty() {
                return Err(bad("matches nothing (an empty pattern, or the root)"));
            }
            let c = std::ffi::CString::new(trimmed).map_err(|_| bad("has a NUL byte"))?;
            if p.contains('/') {
                e.paths.push(c);
            } else {
                e.names.push(c);
            }
        }
        Ok(e)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.paths.is_empty()
    }

    /// Whether the entry `name` at `rel` (its path from the source root) is left out.
    pub fn matches(&self, rel: &[u8], name: &[u8]) -> bool {
        let fnmatch = |pattern: &std::ffi::CStr, s: &[u8], flags: libc::c_int| {
            std::ffi::CString::new(s).is_ok_and(|s| {
                // SAFETY: both are NUL-terminated strings that live across the call.
                unsafe { libc::fnmatch(pattern.as_ptr(), s.as_ptr(), flags) == 0 }
            })
        };
        self.names.iter().any(|p| fnmatch(p, name, 0))
            || self
                .paths
                .iter()
                .any(|p| fnmatch(p, rel, libc::FNM_PATHNAME))
    }
}

/// Walks the tree at `root` without following symlinks (the root itself is followed),
/// leaving out what `exclude` matches (never looked at, not even lstat).
/// FIFOs, sockets and devices are skipped with a warning, or an error when `strict`.
pub fn walk(
    root: &Path,
    strict: bool,
    exclude: &Exclude,
    warnings: &mut Vec<Warning>,
) -> Result<Tree, Error> {
    let md = fs::metadata(root).map_err(|source| Error::Stat {
        path: root.to_path_buf(),
        source,
    })?;
    if !md.is_dir() {
        return Err(Error::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut tree = Tree::default();
    let mut serial = 1u32;
    tree.nodes.push(Node {
        name: Vec::new(),
        parent: 0,
        meta: meta_of(&md),
        kind: Kind::Dir {
            children: Vec::new(),
        },
        serial,
        nlink: 2,
    });
    // (dev, ino) of files with more than one link -> (data index, serial)
    let mut links: HashMap<(u64, u64), (usize, u32)> = HashMap::new();
    // (directory, its path, its path from the root when there are exclusions)
    let mut stack: Vec<(NodeId, PathBuf, Vec<u8>)> = vec![(0, root.to_path_buf(), Vec::new())];
    while let Some((dir_id, dir_path, dir_rel)) = stack.pop() {
        let rd = fs::read_dir(&dir_path).map_err(|source| Error::ReadDir {
            path: dir_path.clone(),
            source,
        })?;
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|source| Error::ReadDir {
                path: dir_path.clone(),
                source,
            })?;
            names.push(ent.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut children = Vec::with_capacity(names.len());
        let mut subdirs = Vec::new();
        for name in names {
            // (only kept when there is something to exclude)
            let mut rel = Vec::new();
            if !exclude.is_empty() {
                rel.extend_from_slice(&dir_rel);
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(name.as_bytes());
                if exclude.matches(&rel, name.as_bytes()) {
                    continue;
                }
            }
            let path = dir_path.join(&name);
            let md = fs::symlink_metadata(&path).map_err(|source| Error::Stat {
                path: path.clone(),
                source,
            })?;
            let meta = meta_of(&md);
            let kind = match meta.mode & mode::S_IFMT {
                mode::S_IFDIR => Kind::Dir {
                    children: Vec::new(),
                },
                mode::S_IFLNK => {
                    let t = fs::read_link(&path).map_err(|source| Error::ReadLink {
                        path: path.clone(),
                        source,
                    })?;
                    Kind::Symlink {
                        target: t.as_os_str().as_bytes().to_vec(),
                    }
                }
                mode::S_IFREG => {
                    let key = (md.dev(), md.ino());
                    let shared = if md.nlink() > 1 {
                        links.get(&key).copied()
                    } else {
                        None
                    };
                    if let Some((data, s)) = shared {
                        let id = tree.nodes.len();
                        push_child(&mut tree, dir_id, &name, meta, Kind::File { data }, s);
                        children.push(id);
                        continue;
                    }
                    let data = tree.data.len();
                    tree.data.push(FileData {
                        path: path.clone(),
                        size: md.len(),
                    });
                    if md.nlink() > 1 {
                        links.insert(key, (data, serial + 1));
                    }
                    Kind::File { data }
                }
                other => {
                    let kind = match other {
                        mode::S_IFIFO => "FIFO",
                        mode::S_IFSOCK => "socket",
                        mode::S_IFCHR => "character device",
                        mode::S_IFBLK => "block device",
                        _ => "special file",
                    };
                    if strict {
                        return Err(Error::Special { path, kind });
                    }
                    warnings.push(Warning::SkippedSpecial { path, kind });
                    continue;
                }
            };
            serial = serial.saturating_add(1);
            let is_dir = matches!(kind, Kind::Dir { .. });
            let id = tree.nodes.len();
            push_child(&mut tree, dir_id, &name, meta, kind, serial);
            children.push(id);
            if is_dir {
                subdirs.push((id, path, rel));
            }
        }
        if let Some(n) = tree.nodes.get_mut(dir_id) {
            n.nlink = 2 + u32::try_from(subdirs.len()).unwrap_or(u32::MAX - 2);
            n.kind = Kind::Dir { children };
        }
        stack.extend(subdirs.into_iter().rev());
    }
    // every name of a file gets the number of its names inside the tree
    let mut names_per_data = vec![0u32; tree.data.len()];
    for n in &tree.nodes {
        if let Kind::File { data } = n.kind {
            if let Some(c) = names_per_data.get_mut(data) {
                *c = c.saturating_add(1);
            }
        }
    }
    for n in &mut tree.nodes {
        if let Kind::File { data } = n.kind {
            n.nlink = names_per_data.get(data).copied().unwrap_or(1);
        }
    }
    Ok(tree)
}

fn push_child(tree: &mut Tree, parent: NodeId, name: &OsStr, meta: Meta, kind: Kind, serial: u32) {
    let nlink = match kind {
        Kind::Dir { .. } => 2,
        _ => 1,
    };
    tree.nodes.push(Node {
        name: name.as_bytes().to_vec(),
        parent,
        meta,
        kind,
        serial,
        nlink,
    });
}

fn meta_of(md: &fs::Metadata) -> Meta {
    Meta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        atime: md.atime(),
        ctime: md.ctime(),
    }
}

/// The source path of node `id`, rebuilt from the names up to the root at `root`.
pub fn node_path(tree: &Tree, root: &Path, id: NodeId) -> PathBuf {
    let mut parts = Vec::new();
    let mut cur = id;
    let mut guard = tree.nodes.len();
    while cur != 0 && guard > 0 {
        guard -= 1;
        match tree.nodes.get(cur) {
            Some(n) => {
                parts.push(OsStr::from_bytes(&n.name));
                cur = n.parent;
            }
            None => break,
        }
    }
    let mut p = root.to_path_buf();
    for part in parts.iter().rev() {
        p.push(part);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns_match_names_anywhere_and_paths_from_the_root() {
        let e = Exclude::new(&["*.tmp".into(), "./a/*/c".into(), "/top".into()]).unwrap();
        assert!(e.matches(b"x/y.tmp", b"y.tmp"));
        assert!(e.matches(b"y.tmp", b"y.tmp"));
        assert!(e.matches(b"a/b/c", b"c"));
        assert!(!e.matches(b"a/b/d/c", b"c"), "* stays within one name");
        assert!(!e.matches(b"z/a/b/c", b"c"), "paths are from the root");
        assert!(e.matches(b"top", b"top"));
        assert!(
            !e.matches(b"x/top", b"top"),
            "a leading / means from the root"
        );
        assert!(!e.matches(b"x/y.tmp.keep", b"y.tmp.keep"));
        for bad in ["", "/", "./", "//"] {
            let err = Exclude::new(&[bad.into()]).unwrap_err();
            assert!(err.contains("matches nothing"), "{bad:?}: {err}");
        }
        assert!(Exclude::new(&[]).unwrap().is_empty());
    }
}
