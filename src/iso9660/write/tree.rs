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

impl Meta {
    /// What isomgr gives an entry it makes itself (a boot catalog, a directory on the way to a
    /// graft): `mode`, owned by root, dated `now`.
    pub fn made(mode: u32, now: i64) -> Meta {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime: now,
            atime: now,
            ctime: now,
        }
    }
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
    /// The source file's (device, inode), by which [`compact`] finds the same file put into
    /// the image twice (a hard link between SRC and a graft, one file grafted at two places);
    /// `None` for what mkiso makes (the boot catalog).
    pub inode: Option<(u64, u64)>,
}

/// A directory tree's metadata. Invariant: node 0 is a directory; every child's `parent` is
/// the directory listing it; `data` indexes are in range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
    pub data: Vec<FileData>,
    /// Nodes grafted in from elsewhere (`mkiso --graft`) and where they come from, so that
    /// [`node_path`] names the real source.
    pub grafted: Vec<(NodeId, PathBuf)>,
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
    walk_at(root, &[], strict, exclude, warnings)
}

/// [`walk`] of a tree that goes at `at` in the image (its path from the image's root, for
/// `exclude`).
fn walk_at(
    root: &Path,
    at: &[u8],
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
    let mut stack: Vec<(NodeId, PathBuf, Vec<u8>)> = vec![(0, root.to_path_buf(), at.to_vec())];
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
                        inode: Some(key),
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
    count_file_links(&mut tree);
    Ok(tree)
}

/// `mkiso --graft AT=SOURCE`: the file or directory `source` (a symlink there followed) put
/// into the image at `at`, a path from the image's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graft {
    pub at: PathBuf,
    pub source: PathBuf,
}

impl Graft {
    /// Parses `AT=SOURCE` (the first `=` splits; AT with or without a leading `/`).
    pub fn parse(arg: &str) -> Result<Graft, String> {
        let (at, source) = arg
            .split_once('=')
            .ok_or_else(|| format!("{arg:?}: not PATH_IN_IMAGE=SOURCE"))?;
        if source.is_empty() {
            return Err(format!("{arg:?}: no source after ="));
        }
        let at = PathBuf::from(at);
        let names = graft_names(&at).map_err(|why| format!("{arg:?}: {why}"))?;
        if names.is_empty() {
            return Err(format!(
                "{arg:?}: the image's root is SRC_DIR; name a path inside the image"
            ));
        }
        Ok(Graft {
            at,
            source: PathBuf::from(source),
        })
    }
}

/// The names along a graft's place in the image: no `..`.
fn graft_names(at: &Path) -> Result<Vec<&OsStr>, &'static str> {
    let mut names = Vec::new();
    for c in at.components() {
        match c {
            std::path::Component::Normal(n) => names.push(n),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => return Err("a path in the image may not use `..`"),
        }
    }
    Ok(names)
}

/// Puts `g` into `tree`: what is at its place goes (a whole directory), missing directories
/// on the way are made (0755, owned by root, dated `now`). Its entries are walked as the
/// source tree is (`strict`, `exclude` with paths in the image). The replaced entries stay
/// in `tree.nodes`, unreachable, until [`compact`].
pub fn graft(
    tree: &mut Tree,
    g: &Graft,
    strict: bool,
    exclude: &Exclude,
    now: i64,
    warnings: &mut Vec<Warning>,
) -> Result<(), Error> {
    let err = |why: String| Error::Graft {
        at: g.at.display().to_string(),
        source_path: g.source.clone(),
        why,
    };
    let names = graft_names(&g.at).map_err(|why| err(why.into()))?;
    let Some((last, dirs)) = names.split_last() else {
        return Err(err("no path in the image".into()));
    };
    let md = fs::metadata(&g.source).map_err(|e| err(format!("reading its metadata: {e}")))?;
    let at_rel = names
        .iter()
        .map(|n| n.as_bytes())
        .collect::<Vec<_>>()
        .join(&b'/');
    // what goes in: a walked directory, or one file
    let sub = if md.is_dir() {
        walk_at(&g.source, &at_rel, strict, exclude, warnings)?
    } else if md.is_file() {
        Tree {
            nodes: vec![Node {
                name: Vec::new(),
                parent: 0,
                meta: meta_of(&md),
                kind: Kind::File { data: 0 },
                serial: 0,
                nlink: 1,
            }],
            data: vec![FileData {
                path: g.source.clone(),
                size: md.len(),
                inode: Some((md.dev(), md.ino())),
            }],
            grafted: Vec::new(),
        }
    } else {
        return Err(err(
            "not a file or directory (an ISO image cannot hold it)".into()
        ));
    };
    let mut parent: NodeId = 0;
    for (i, name) in dirs.iter().enumerate() {
        parent = match child_named(tree, parent, name.as_bytes()) {
            Some(id) if matches!(tree.nodes.get(id).map(|n| &n.kind), Some(Kind::Dir { .. })) => id,
            Some(_) => {
                let on_the_way: PathBuf = dirs.iter().take(i + 1).collect();
                return Err(err(format!(
                    "{} is not a directory in the image",
                    on_the_way.display()
                )));
            }
            None => {
                let meta = Meta::made(libc::S_IFDIR | 0o755, now);
                let id = tree.nodes.len();
                push_child(
                    tree,
                    parent,
                    name,
                    meta,
                    Kind::Dir {
                        children: Vec::new(),
                    },
                    0,
                );
                insert_child(tree, parent, id);
                id
            }
        };
    }
    if let Some(old) = child_named(tree, parent, last.as_bytes()) {
        remove_child(tree, parent, old);
    }
    let (node_base, data_base) = (tree.nodes.len(), tree.data.len());
    for (i, mut n) in sub.nodes.into_iter().enumerate() {
        if i == 0 {
            n.name = last.as_bytes().to_vec();
            n.parent = parent;
        } else {
            n.parent += node_base;
        }
        match &mut n.kind {
            Kind::Dir { children } => children.iter_mut().for_each(|c| *c += node_base),
            Kind::File { data } => *data += data_base,
            Kind::Symlink { .. } => {}
        }
        tree.nodes.push(n);
    }
    tree.data.extend(sub.data);
    tree.grafted.push((node_base, g.source.clone()));
    insert_child(tree, parent, node_base);
    Ok(())
}

/// The child of directory `dir` named `name`.
pub(super) fn child_named(tree: &Tree, dir: NodeId, name: &[u8]) -> Option<NodeId> {
    tree.children(dir)
        .iter()
        .copied()
        .find(|&c| tree.nodes.get(c).is_some_and(|n| n.name == name))
}

/// Adds node `id` to directory `dir`'s children, in name order.
/// Takes `id` out of directory `dir`'s children (the node stays in `tree.nodes`, unreachable:
/// [`compact`] drops it).
pub(super) fn remove_child(tree: &mut Tree, dir: NodeId, id: NodeId) {
    if let Some(Node {
        kind: Kind::Dir { children },
        ..
    }) = tree.nodes.get_mut(dir)
    {
        children.retain(|&c| c != id);
    }
}

pub(super) fn insert_child(tree: &mut Tree, dir: NodeId, id: NodeId) {
    let name = tree
        .nodes
        .get(id)
        .map(|n| n.name.clone())
        .unwrap_or_default();
    let at = tree
        .children(dir)
        .partition_point(|&c| tree.nodes.get(c).is_some_and(|n| n.name < name));
    if let Some(Node {
        kind: Kind::Dir { children },
        ..
    }) = tree.nodes.get_mut(dir)
    {
        children.insert(at, id);
    }
}

/// The part of `tree` reachable from its root, numbered as [`walk`] numbers a tree: nodes in
/// the order it visits them, file data in first-name order, serial numbers and link counts
/// anew. Names of one source file share its data and serial number (hard links), also where
/// they came in separately (SRC and a graft, or two grafts of one file).
pub fn compact(tree: &Tree) -> Tree {
    let mut out = Tree::default();
    // old data index -> (new data index, serial), and the same by source file
    let mut data_map: HashMap<usize, (usize, u32)> = HashMap::new();
    let mut by_inode: HashMap<(u64, u64), (usize, u32)> = HashMap::new();
    let mut serial = 1u32;
    let root = tree.nodes.first().cloned();
    let Some(mut root) = root else {
        return out;
    };
    root.kind = Kind::Dir {
        children: Vec::new(),
    };
    root.serial = serial;
    out.nodes.push(root);
    let mut stack: Vec<(NodeId, NodeId)> = vec![(0, 0)];
    while let Some((old_dir, new_dir)) = stack.pop() {
        let mut children = Vec::new();
        let mut subdirs = Vec::new();
        for &c in tree.children(old_dir) {
            let Some(n) = tree.nodes.get(c) else { continue };
            let mut n = n.clone();
            n.parent = new_dir;
            serial = serial.saturating_add(1);
            n.serial = serial;
            match &mut n.kind {
                Kind::Dir { children } => children.clear(),
                Kind::File { data } => {
                    let (new, s) = *data_map.entry(*data).or_insert_with(|| {
                        let d = tree.data.get(*data).cloned().unwrap_or(FileData {
                            path: PathBuf::new(),
                            size: 0,
                            inode: None,
                        });
                        let inode = d.inode;
                        let add = || {
                            out.data.push(d);
                            (out.data.len() - 1, serial)
                        };
                        match inode {
                            Some(key) => *by_inode.entry(key).or_insert_with(add),
                            None => add(),
                        }
                    });
                    *data = new;
                    n.serial = s;
                }
                Kind::Symlink { .. } => {}
            }
            let id = out.nodes.len();
            if let Some((_, from)) = tree.grafted.iter().find(|(g, _)| *g == c) {
                out.grafted.push((id, from.clone()));
            }
            if matches!(n.kind, Kind::Dir { .. }) {
                subdirs.push((c, id));
            }
            out.nodes.push(n);
            children.push(id);
        }
        if let Some(d) = out.nodes.get_mut(new_dir) {
            d.nlink = 2 + u32::try_from(subdirs.len()).unwrap_or(u32::MAX - 2);
            d.kind = Kind::Dir { children };
        }
        stack.extend(subdirs.into_iter().rev());
    }
    count_file_links(&mut out);
    out
}

/// Gives every name of a file the number of its names inside the tree.
fn count_file_links(tree: &mut Tree) {
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
}

pub(super) fn push_child(
    tree: &mut Tree,
    parent: NodeId,
    name: &OsStr,
    meta: Meta,
    kind: Kind,
    serial: u32,
) {
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

/// The source path of node `id`, rebuilt from the names up to the root at `root`, or up to
/// what was grafted in and where from.
pub fn node_path(tree: &Tree, root: &Path, id: NodeId) -> PathBuf {
    let mut parts = Vec::new();
    let mut cur = id;
    let mut guard = tree.nodes.len();
    let mut base = root;
    while cur != 0 && guard > 0 {
        guard -= 1;
        if let Some((_, from)) = tree.grafted.iter().find(|(g, _)| *g == cur) {
            base = from;
            break;
        }
        match tree.nodes.get(cur) {
            Some(n) => {
                parts.push(OsStr::from_bytes(&n.name));
                cur = n.parent;
            }
            None => break,
        }
    }
    let mut p = base.to_path_buf();
    for part in parts.iter().rev() {
        p.push(part);
    }
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A walked tree is already compact: compact gives it back as it was (order, data,
    /// serial numbers, link counts), hard links and all.
    #[test]
    fn compact_keeps_a_walked_tree_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        for d in ["a/b/c", "a/d", "e"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in ["a/x", "a/b/y", "a/b/c/z", "e/w", "top"] {
            fs::write(r.join(f), f).unwrap();
        }
        fs::hard_link(r.join("a/x"), r.join("e/x-again")).unwrap();
        std::os::unix::fs::symlink("a/x", r.join("link")).unwrap();
        let t = walk(r, false, &Exclude::default(), &mut Vec::new()).unwrap();
        assert_eq!(compact(&t), t);
    }

    /// Grafts replace a file and a whole directory, make missing parents, and what they
    /// replaced is gone after compact (nodes and file data both).
    #[test]
    fn grafts_replace_and_make_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path().join("src");
        fs::create_dir_all(r.join("d/sub")).unwrap();
        fs::write(r.join("d/sub/old"), "old").unwrap();
        fs::write(r.join("f"), "old f").unwrap();
        let new_f = tmp.path().join("new-f");
        fs::write(&new_f, "new f").unwrap();
        let new_d = tmp.path().join("new-d");
        fs::create_dir(&new_d).unwrap();
        fs::write(new_d.join("inside"), "inside").unwrap();
        let mut t = walk(&r, false, &Exclude::default(), &mut Vec::new()).unwrap();
        for (at, source) in [("f", &new_f), ("/d", &new_d), ("x/y/f2", &new_f)] {
            let g = Graft::parse(&format!("{at}={}", source.display())).unwrap();
            graft(&mut t, &g, false, &Exclude::default(), 7, &mut Vec::new()).unwrap();
        }
        let t = compact(&t);
        let in_image = |mut id: NodeId| {
            let mut names = Vec::new();
            while id != 0 {
                names.push(String::from_utf8_lossy(&t.nodes[id].name).into_owned());
                id = t.nodes[id].parent;
            }
            names.reverse();
            names.join("/")
        };
        let paths: Vec<String> = (1..t.nodes.len()).map(in_image).collect();
        assert_eq!(
            paths,
            ["d", "f", "x", "d/inside", "x/y", "x/y/f2"],
            "in walk order"
        );
        let shown: Vec<PathBuf> = (1..t.nodes.len()).map(|id| node_path(&t, &r, id)).collect();
        assert_eq!(
            shown,
            [
                new_d.clone(),
                new_f.clone(),
                r.join("x"),
                new_d.join("inside"),
                r.join("x/y"),
                new_f.clone()
            ],
            "sources named where they are"
        );
        let sources: Vec<&Path> = t.data.iter().map(|d| d.path.as_path()).collect();
        assert_eq!(
            sources,
            [new_f.as_path(), &new_d.join("inside")],
            "one file grafted at two places is stored once"
        );
        let (f, f2) = (&t.nodes[2], &t.nodes[6]);
        assert_eq!((f.kind.clone(), f.nlink), (Kind::File { data: 0 }, 2));
        assert_eq!(
            (f2.kind.clone(), f2.nlink, f2.serial),
            (f.kind.clone(), 2, f.serial)
        );
        let made = &t.nodes[3];
        assert_eq!(
            (made.meta.mode, made.meta.uid, made.meta.mtime),
            (libc::S_IFDIR | 0o755, 0, 7)
        );
        for bad in ["=x", "/=x", "a=", "../a=x", "a/../../b=x", "no-equals"] {
            assert!(Graft::parse(bad).is_err(), "{bad}");
        }
    }

    /// A file of SRC with a second name in a grafted directory (a hard link) is one file in
    /// the image: its data once, one serial number, a link count of 2 for each name; a file
    /// of the same content but another inode stays a file of its own.
    #[test]
    fn a_hard_link_between_src_and_a_graft_shares_its_data() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path().join("src");
        let extra = tmp.path().join("extra");
        fs::create_dir_all(&r).unwrap();
        fs::create_dir_all(&extra).unwrap();
        fs::write(r.join("kernel"), "vmlinuz").unwrap();
        fs::hard_link(r.join("kernel"), extra.join("kernel")).unwrap();
        fs::write(extra.join("copy"), "vmlinuz").unwrap();
        let mut t = walk(&r, false, &Exclude::default(), &mut Vec::new()).unwrap();
        let g = Graft::parse(&format!("boot={}", extra.display())).unwrap();
        graft(&mut t, &g, false, &Exclude::default(), 7, &mut Vec::new()).unwrap();
        let t = compact(&t);
        let names: Vec<(&[u8], &Kind, u32, u32)> = t.nodes[1..]
            .iter()
            .map(|n| (&n.name[..], &n.kind, n.nlink, n.serial))
            .collect();
        let (k0, k1) = (Kind::File { data: 0 }, Kind::File { data: 1 });
        assert_eq!(
            names,
            [
                (
                    &b"boot"[..],
                    &Kind::Dir {
                        children: vec![3, 4]
                    },
                    2,
                    2
                ),
                (b"kernel", &k0, 2, 3),
                (b"copy", &k1, 1, 4),
                (b"kernel", &k0, 2, 3),
            ]
        );
        assert_eq!(t.data.len(), 2);
    }

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
