//! The inode table behind the FUSE filesystem: which inode is which file of which medium, what the
//! root lists, and the readdir cookies.
//!
//! Pure: no I/O, no clock, no locks. Directory contents come in from the adapter (which reads
//! them with the ISO9660 reader) through [`Table::install_children`]; times come in as arguments.
//! Generic over the medium handle `M` (an `Arc<Image>` in the driver) and the entry `E` (an
//! `iso9660::Entry`) so it is tested without images.
//!
//! Invariants:
//! - Inode numbers come from one 64-bit counter and are never reused, so an inode the kernel still
//!   holds can never name another file. Within a present medium, a file keeps its inode: each
//!   directory is indexed once and the index is kept while the medium is present.
//! - Root readdir cookies are a medium's insertion sequence (monotonic), directory cookies are an
//!   entry's position in its immutable index; both stay valid while media come and go.
//! - Removing a medium takes its name out of the root and drops the table's handle `M` at once;
//!   nodes the kernel still references stay (for getattr and forget) until forgotten.
//! - Hard links: the names of one file of a medium ([`NodeData::link_key`]) all resolve to the
//!   inode of the name indexed first, so the kernel shows one inode (`st_ino`, `d_ino`) with
//!   several names, as on the disc the image was made from; copying tools keep them linked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

use super::iso9660::Kind;

/// Inode of the mount root (FUSE_ROOT_ID).
pub const ROOT_INO: u64 = 1;
/// Readdir cookies 1 and 2 are "." and ".."; real entries start here.
const FIRST_COOKIE: u64 = 3;
/// Longest name a medium directory may have (NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;

/// What the table needs to know about an entry of an image.
pub trait NodeData: Clone {
    fn name(&self) -> &OsStr;
    fn kind(&self) -> Kind;
    /// For a directory with entries, what identifies its contents in the medium (where its
    /// records start): two nodes with the same key list the same entries.
    fn dir_key(&self) -> Option<u64> {
        None
    }
    /// For a file with more than one name in the medium (hard links), what identifies it: its
    /// data and attributes. Equal keys are one file.
    fn link_key(&self) -> Option<LinkKey> {
        None
    }
}

/// What identifies one file that has several names in a medium: the place and size of its data
/// and its attributes, opaque to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkKey(pub [u64; 6]);

/// What the table keeps per medium (the image): it gives the entry of the medium's top
/// directory, so the top node is made only when the kernel first looks the medium up
/// (thousands of media served, few browsed: no node for the others).
pub trait MediumData<E>: Clone {
    fn top(&self) -> E;
}

/// Identity of one medium for its whole life in the table; doubles as the FUSE generation of its
/// inodes. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediumId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddError {
    /// Empty, ".", "..", longer than [`MAX_NAME_LEN`], or containing '/' or NUL.
    InvalidName,
    /// Another present medium already holds the name.
    NameTaken,
}

/// A node's answer that needs the directory's index first: the adapter reads the directory
/// with `image` and hands the entries to [`Table::install_children`], then asks again.
#[derive(Clone, Debug)]
pub struct NeedIndex<M, E> {
    pub dir: u64,
    pub medium: MediumId,
    pub image: M,
    pub entry: E,
}

/// Outcome of an operation that may need a directory index.
#[derive(Debug)]
pub enum Step<T, M, E> {
    Done(T),
    NeedIndex(NeedIndex<M, E>),
    Err(i32),
}

/// What getattr describes.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr<'a, E> {
    /// The mount root: `media` directories, changed last at `mtime`.
    Root { media: usize, mtime: SystemTime },
    /// A file or directory of a medium (its top directory included).
    Node { entry: &'a E, generation: u64 },
}

/// A file found by lookup; the kernel now holds one more reference to `ino`.
#[derive(Clone, Debug, PartialEq)]
pub struct Found<E> {
    pub ino: u64,
    pub generation: u64,
    pub entry: E,
}

/// One readdir row; `cookie` is the offset to resume after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirRow {
    pub ino: u64,
    pub cookie: u64,
    pub kind: Kind,
    pub name: OsString,
}

/// A medium just taken out of the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub id: MediumId,
    /// `(parent, name)` of each node of the medium below its top directory that the kernel
    /// still references: entries it keeps cached, and so never forgets, unless told to drop
    /// them. The top directory itself is the root entry named like the medium.
    pub held: Vec<(u64, OsString)>,
}

/// Counts for statfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub media: usize,
    pub nodes: usize,
}

#[derive(Debug)]
struct Medium<M> {
    name: String,
    seq: u64,
    /// `None` once removed: only open file handles keep the image alive then.
    image: Option<M>,
    top: u64,
    nodes: usize,
    /// Keys of the directories indexed or listed so far ([`NodeData::dir_key`]): each directory
    /// of the image appears once in the tree, however many records point at it. Sorted; a
    /// vector, not a set: most media are browsed a few directories deep, and 10,000 media each
    /// with an empty set would cost half a megabyte.
    dirs: Vec<u64>,
    /// Files with several names, once a directory holding one is indexed (boxed and made on
    /// demand: most media have none).
    links: Option<Box<Links>>,
}

/// The names of one file of a medium, shown as one inode.
#[derive(Debug, Default)]
struct Links {
    /// Each file with several names -> the inode of its name indexed first, which every one of
    /// its names resolves to.
    first: HashMap<LinkKey, u64>,
    /// `(directory, name)` of the other names the kernel was handed that inode under: it
    /// caches those entries too, to be dropped when the medium goes.
    aliases: HashSet<(u64, OsString)>,
}

#[derive(Debug)]
struct Node<E> {
    medium: MediumId,
    parent: u64,
    entry: E,
    /// Kernel references (lookups minus forgets).
    lookups: u64,
    /// Boxed: most nodes are files, and the node table is sized for all of them.
    children: Option<Box<Children>>,
}

/// A directory's index. Its entries' inodes are allocated in one run (`first`, `first + 1`...
/// in readdir order), so the index holds no inode and no name of its own: lookups binary-search
/// the run by name, through an offset list when the run is not already in name order. At most
/// 4 bytes per entry beyond the nodes themselves, none for a directory already in order (most:
/// ISO9660 records are sorted, and so are most Rock Ridge names).
#[derive(Debug)]
struct Children {
    first: u64,
    order: Order,
}

#[derive(Debug)]
enum Order {
    /// The run is in name order; this many entries.
    InRun(u32),
    /// Offsets into the run, in name order.
    Sorted(Box<[u32]>),
}

impl Children {
    fn len(&self) -> usize {
        match &self.order {
            Order::InRun(n) => *n as usize,
            Order::Sorted(s) => s.len(),
        }
    }

    /// The offset into the run of the `i`th entry in name order.
    fn by_name(&self, i: usize) -> u32 {
        match &self.order {
            Order::InRun(_) => i as u32,
            Order::Sorted(s) => s[i],
        }
    }
}

#[derive(Debug)]
pub struct Table<M, E> {
    next_ino: u64,
    next_medium: u64,
    next_seq: u64,
    root_mtime: SystemTime,
    names: HashMap<String, MediumId>,
    by_seq: BTreeMap<u64, MediumId>,
    media: HashMap<MediumId, Medium<M>>,
    /// Boxed: the table is sized for every node the kernel knows (a power of two, often
    /// twice the count), so slots stay small and the nodes themselves are allocated once.
    nodes: HashMap<u64, Box<Node<E>>>,
}

/// Adds `key` to the sorted `keys`; false when it was there already.
fn claim(keys: &mut Vec<u64>, key: u64) -> bool {
    match keys.binary_search(&key) {
        Ok(_) => false,
        Err(i) => {
            keys.insert(i, key);
            true
        }
    }
}

/// A name the kernel could show as one directory entry of the root or of a directory.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && name.len() <= MAX_NAME_LEN
        && !name.contains(&b'/')
        && !name.contains(&0)
}

impl<M: MediumData<E>, E: NodeData> Table<M, E> {
    pub fn new(now: SystemTime) -> Self {
        Table {
            next_ino: ROOT_INO + 1,
            next_medium: 1,
            next_seq: FIRST_COOKIE,
            root_mtime: now,
            names: HashMap::new(),
            by_seq: BTreeMap::new(),
            media: HashMap::new(),
            nodes: HashMap::new(),
        }
    }

    fn alloc_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    /// Puts a medium in the root as directory `name`; its top directory's node is made at the
    /// first lookup ([`MediumData::top`]).
    pub fn add(&mut self, name: &str, image: M, now: SystemTime) -> Result<MediumId, AddError> {
        if !valid_name(name.as_bytes()) {
            return Err(AddError::InvalidName);
        }
        if self.names.contains_key(name) {
            return Err(AddError::NameTaken);
        }
        let id = MediumId(self.next_medium);
        self.next_medium += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        let top_ino = self.alloc_ino();
        self.media.insert(
            id,
            Medium {
                name: name.to_owned(),
                seq,
                image: Some(image),
                top: top_ino,
                nodes: 0,
                dirs: Vec::new(),
                links: None,
            },
        );
        self.names.insert(name.to_owned(), id);
        self.by_seq.insert(seq, id);
        self.root_mtime = now;
        Ok(id)
    }

    /// Takes `name` out of the root. The table lets go of the medium's image at once; nodes the
    /// kernel still references stay until forgotten, but serve getattr only. The entries the
    /// kernel holds for them are returned, for the driver to invalidate.
    pub fn remove(&mut self, name: &str, now: SystemTime) -> Option<Removed> {
        let id = self.names.remove(name)?;
        self.root_mtime = now;
        let mut held = Vec::new();
        let Some(medium) = self.media.get_mut(&id) else {
            return Some(Removed { id, held });
        };
        self.by_seq.remove(&medium.seq);
        medium.image = None;
        let mut dropped = 0;
        self.nodes.retain(|_, node| {
            if node.medium != id {
                return true;
            }
            node.children = None;
            if node.lookups == 0 {
                dropped += 1;
                false
            } else {
                if node.parent != ROOT_INO {
                    held.push((node.parent, node.entry.name().to_owned()));
                }
                true
            }
        });
        medium.nodes -= dropped;
        if let Some(links) = medium.links.take() {
            held.extend(links.aliases);
        }
        if medium.nodes == 0 {
            self.media.remove(&id);
        }
        Some(Removed { id, held })
    }

    /// Names in the root, in the order they were added.
    pub fn names(&self) -> Vec<String> {
        self.by_seq
            .values()
            .filter_map(|id| self.media.get(id).map(|m| m.name.clone()))
            .collect()
    }

    pub fn usage(&self) -> Usage {
        Usage {
            media: self.names.len(),
            nodes: self.nodes.len(),
        }
    }

    /// Present media's handles, for statfs totals.
    pub fn images(&self) -> impl Iterator<Item = &M> {
        self.media.values().filter_map(|m| m.image.as_ref())
    }

    /// The medium a node belongs to, with its name while present.
    pub fn medium_of(&self, ino: u64) -> Option<(MediumId, Option<&str>)> {
        let node = self.nodes.get(&ino)?;
        let medium = self.media.get(&node.medium)?;
        let name = medium.image.as_ref().map(|_| medium.name.as_str());
        Some((node.medium, name))
    }

    fn need_index(&self, dir: u64) -> Result<Option<NeedIndex<M, E>>, i32> {
        let node = self.nodes.get(&dir).ok_or(libc::ENOENT)?;
        if node.entry.kind() != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        if node.children.is_some() {
            return Ok(None);
        }
        let medium = self.media.get(&node.medium).ok_or(libc::ENOENT)?;
        let image = medium.image.clone().ok_or(libc::ENOENT)?;
        Ok(Some(NeedIndex {
            dir,
            medium: node.medium,
            image,
            entry: node.entry.clone(),
        }))
    }

    /// Indexes directory `dir` once. Entries whose name could not be a directory entry, later
    /// duplicates of a name, and directories already listed elsewhere in the medium are left
    /// out so lookup and readdir agree. The last rule keeps a hostile image's directory that
    /// contains itself or an ancestor from showing as an endless tree, and one listed by many
    /// parents from multiplying it (a real image lists each directory once). Ignored when the
    /// directory is gone, already indexed, or its medium was removed meanwhile. Returns how
    /// many entries were left out.
    pub fn install_children(&mut self, dir: u64, medium: MediumId, entries: Vec<E>) -> usize {
        let present = self.media.get(&medium).is_some_and(|m| m.image.is_some());
        let wanted = present
            && self
                .nodes
                .get(&dir)
                .is_some_and(|n| n.medium == medium && n.children.is_none());
        if !wanted {
            return 0;
        }
        let mut skipped = 0;
        let mut kept: Vec<E> = Vec::with_capacity(entries.len());
        if let Some(m) = self.media.get_mut(&medium) {
            // The directory itself (already claimed, unless it is the top one).
            if let Some(k) = self.nodes.get(&dir).and_then(|n| n.entry.dir_key()) {
                claim(&mut m.dirs, k);
            }
            let mut seen = HashSet::with_capacity(entries.len());
            for entry in entries {
                let name = entry.name();
                let usable = valid_name(name.as_bytes()) && seen.insert(name.to_owned());
                // Only a kept entry claims its directory.
                let listed_elsewhere = usable
                    && entry.kind() == Kind::Dir
                    && entry.dir_key().is_some_and(|k| !claim(&mut m.dirs, k));
                if !usable || listed_elsewhere {
                    skipped += 1;
                    continue;
                }
                kept.push(entry);
            }
        }
        // At most u32::MAX entries: a directory's records cannot describe more in an image
        // whose directory sizes are 32-bit.
        kept.truncate(u32::MAX as usize);
        let in_order = kept.windows(2).all(|w| w[0].name() < w[1].name());
        let order = if in_order {
            Order::InRun(kept.len() as u32)
        } else {
            let mut sorted: Vec<u32> = (0..kept.len() as u32).collect();
            sorted.sort_unstable_by(|&a, &b| kept[a as usize].name().cmp(kept[b as usize].name()));
            Order::Sorted(sorted.into_boxed_slice())
        };
        let children = Children {
            first: self.next_ino,
            order,
        };
        let added = kept.len();
        let mut linked = Vec::new();
        for entry in kept {
            let ino = self.alloc_ino();
            if let Some(k) = entry.link_key() {
                linked.push((k, ino));
            }
            self.nodes.insert(
                ino,
                Box::new(Node {
                    medium,
                    parent: dir,
                    entry,
                    lookups: 0,
                    children: None,
                }),
            );
        }
        if let Some(m) = self.media.get_mut(&medium) {
            m.nodes += added;
            if !linked.is_empty() {
                let links = m.links.get_or_insert_with(Box::default);
                for (k, ino) in linked {
                    links.first.entry(k).or_insert(ino);
                }
            }
        }
        if let Some(node) = self.nodes.get_mut(&dir) {
            node.children = Some(Box::new(children));
        }
        skipped
    }

    /// The inode that node `ino` is shown as: the first-indexed name of its file where it has
    /// several names, else itself.
    fn same_file(&self, ino: u64) -> u64 {
        let Some(node) = self.nodes.get(&ino) else {
            return ino;
        };
        let Some(key) = node.entry.link_key() else {
            return ino;
        };
        self.media
            .get(&node.medium)
            .and_then(|m| m.links.as_ref())
            .and_then(|l| l.first.get(&key))
            .copied()
            .filter(|first| self.nodes.contains_key(first))
            .unwrap_or(ino)
    }

    /// The inode of the entry called `name` in an indexed directory.
    fn child_named(&self, children: &Children, name: &OsStr) -> Option<u64> {
        let name_of = |off: u32| {
            self.nodes
                .get(&(children.first + u64::from(off)))
                .map(|n| n.entry.name())
        };
        // Binary search over name order (names in a run are unique).
        let (mut lo, mut hi) = (0usize, children.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let off = children.by_name(mid);
            match name_of(off).map(|n| n.cmp(name)) {
                Some(std::cmp::Ordering::Equal) => return Some(children.first + u64::from(off)),
                Some(std::cmp::Ordering::Greater) => hi = mid,
                // None: not reached (a present medium's indexed nodes are never dropped).
                Some(std::cmp::Ordering::Less) | None => lo = mid + 1,
            }
        }
        None
    }

    /// Resolves `name` in `parent`; on success the kernel holds one more reference.
    pub fn lookup(&mut self, parent: u64, name: &OsStr) -> Step<Found<E>, M, E> {
        let ino = if parent == ROOT_INO {
            let Some(id) = name.to_str().and_then(|n| self.names.get(n)) else {
                return Step::Err(libc::ENOENT);
            };
            let id = *id;
            let Some(m) = self.media.get_mut(&id) else {
                return Step::Err(libc::ENOENT);
            };
            let top = m.top;
            if let std::collections::hash_map::Entry::Vacant(slot) = self.nodes.entry(top) {
                let Some(entry) = m.image.as_ref().map(MediumData::top) else {
                    return Step::Err(libc::ENOENT);
                };
                m.nodes += 1;
                slot.insert(Box::new(Node {
                    medium: id,
                    parent: ROOT_INO,
                    entry,
                    lookups: 0,
                    children: None,
                }));
            }
            top
        } else {
            match self.need_index(parent) {
                Err(errno) => return Step::Err(errno),
                Ok(Some(need)) => return Step::NeedIndex(need),
                Ok(None) => {}
            }
            let found = self
                .nodes
                .get(&parent)
                .and_then(|n| n.children.as_ref())
                .and_then(|c| self.child_named(c, name));
            let Some(ino) = found else {
                return Step::Err(libc::ENOENT);
            };
            let first = self.same_file(ino);
            if first != ino {
                let medium = self.nodes.get(&ino).map(|n| n.medium);
                let links = medium
                    .and_then(|id| self.media.get_mut(&id))
                    .and_then(|m| m.links.as_mut());
                if let Some(links) = links {
                    links.aliases.insert((parent, name.to_owned()));
                }
            }
            first
        };
        match self.nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups += 1;
                Step::Done(Found {
                    ino,
                    generation: node.medium.0,
                    entry: node.entry.clone(),
                })
            }
            None => Step::Err(libc::ENOENT),
        }
    }

    /// The kernel dropped `n` references to `ino`. A node of a removed medium goes once unreferenced.
    pub fn forget(&mut self, ino: u64, n: u64) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return;
        }
        let id = node.medium;
        let Some(medium) = self.media.get_mut(&id) else {
            return;
        };
        if medium.image.is_some() {
            return;
        }
        self.nodes.remove(&ino);
        medium.nodes = medium.nodes.saturating_sub(1);
        if medium.nodes == 0 {
            self.media.remove(&id);
        }
    }

    pub fn attr(&self, ino: u64) -> Option<Attr<'_, E>> {
        if ino == ROOT_INO {
            return Some(Attr::Root {
                media: self.names.len(),
                mtime: self.root_mtime,
            });
        }
        let node = self.nodes.get(&ino)?;
        Some(Attr::Node {
            entry: &node.entry,
            generation: node.medium.0,
        })
    }

    /// What an open of `ino` reads from: the medium's image and the entry. Only for files of
    /// present media.
    pub fn open(&self, ino: u64) -> Result<(M, E), i32> {
        if ino == ROOT_INO {
            return Err(libc::EISDIR);
        }
        let node = self.nodes.get(&ino).ok_or(libc::ENOENT)?;
        match node.entry.kind() {
            Kind::Dir => return Err(libc::EISDIR),
            Kind::Symlink => return Err(libc::ELOOP),
            Kind::File | Kind::Other => {}
        }
        let medium = self.media.get(&node.medium).ok_or(libc::ENOENT)?;
        let image = medium.image.clone().ok_or(libc::ENOENT)?;
        Ok((image, node.entry.clone()))
    }

    pub fn entry(&self, ino: u64) -> Option<&E> {
        self.nodes.get(&ino).map(|n| &n.entry)
    }

    /// Up to `max` rows of directory `ino` after cookie `offset`, "." and ".." included.
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> Step<Vec<DirRow>, M, E> {
        let mut rows = Vec::new();
        let parent = if ino == ROOT_INO {
            ROOT_INO
        } else {
            match self.need_index(ino) {
                Err(errno) => return Step::Err(errno),
                Ok(Some(need)) => return Step::NeedIndex(need),
                Ok(None) => self.nodes.get(&ino).map_or(ROOT_INO, |n| n.parent),
            }
        };
        for (cookie, name, target) in [(1, ".", ino), (2, "..", parent)] {
            if offset < cookie && rows.len() < max {
                rows.push(DirRow {
                    ino: target,
                    cookie,
                    kind: Kind::Dir,
                    name: OsString::from(name),
                });
            }
        }
        let start = offset.max(FIRST_COOKIE - 1).saturating_add(1);
        if ino == ROOT_INO {
            for (&seq, id) in self.by_seq.range(start..) {
                if rows.len() >= max {
                    break;
                }
                if let Some(m) = self.media.get(id) {
                    rows.push(DirRow {
                        ino: m.top,
                        cookie: seq,
                        kind: Kind::Dir,
                        name: OsString::from(&m.name),
                    });
                }
            }
            return Step::Done(rows);
        }
        let Some(children) = self.nodes.get(&ino).and_then(|n| n.children.as_ref()) else {
            return Step::Err(libc::ENOENT);
        };
        let skip = start - FIRST_COOKIE;
        for i in skip..children.len() as u64 {
            if rows.len() >= max {
                break;
            }
            let child = children.first + i;
            if let Some(node) = self.nodes.get(&child) {
                rows.push(DirRow {
                    ino: self.same_file(child),
                    cookie: FIRST_COOKIE + i,
                    kind: node.entry.kind(),
                    name: node.entry.name().to_owned(),
                });
            }
        }
        Step::Done(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    #[derive(Clone, Debug, PartialEq)]
    struct Fake {
        name: OsString,
        kind: Kind,
        key: Option<u64>,
        link: Option<u64>,
    }
    impl NodeData for Fake {
        fn name(&self) -> &OsStr {
            &self.name
        }
        fn kind(&self) -> Kind {
            self.kind
        }
        fn dir_key(&self) -> Option<u64> {
            self.key
        }
        fn link_key(&self) -> Option<LinkKey> {
            self.link.map(|k| LinkKey([k, 0, 0, 0, 0, 0]))
        }
    }
    fn dir(name: &str) -> Fake {
        Fake {
            name: name.into(),
            kind: Kind::Dir,
            key: None,
            link: None,
        }
    }
    fn dir_at(name: &str, key: u64) -> Fake {
        Fake {
            key: Some(key),
            ..dir(name)
        }
    }
    fn file(name: &str) -> Fake {
        Fake {
            name: name.into(),
            kind: Kind::File,
            key: None,
            link: None,
        }
    }
    fn linked(name: &str, key: u64) -> Fake {
        Fake {
            link: Some(key),
            ..file(name)
        }
    }
    type Img = Arc<(&'static str, Fake)>;
    impl MediumData<Fake> for Img {
        fn top(&self) -> Fake {
            self.1.clone()
        }
    }
    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }
    fn table() -> Table<Img, Fake> {
        Table::new(t(0))
    }
    fn found(step: Step<Found<Fake>, Img, Fake>) -> Found<Fake> {
        match step {
            Step::Done(f) => f,
            other => panic!("expected a hit, got {other:?}"),
        }
    }
    fn rows(step: Step<Vec<DirRow>, Img, Fake>) -> Vec<(u64, String)> {
        match step {
            Step::Done(r) => r
                .into_iter()
                .map(|r| (r.cookie, r.name.to_string_lossy().into_owned()))
                .collect(),
            other => panic!("expected rows, got {other:?}"),
        }
    }
    /// Looks `name` up in `parent`, indexing the directory from `listing` when asked to.
    fn walk(tb: &mut Table<Img, Fake>, parent: u64, name: &str, listing: &[Fake]) -> Found<Fake> {
        match tb.lookup(parent, OsStr::new(name)) {
            Step::NeedIndex(need) => {
                tb.install_children(need.dir, need.medium, listing.to_vec());
                found(tb.lookup(parent, OsStr::new(name)))
            }
            other => found(other),
        }
    }

    /// The names of one file (hard links) are one inode: a lookup of any of them gives the
    /// first-indexed name's inode, readdir shows that inode for each, the kernel's references
    /// count on it, and when the medium goes every name the kernel was given it under is
    /// handed back for invalidation. Another medium's file with the same key is its own.
    #[test]
    fn hard_links_are_one_inode_under_every_name() {
        let mut tb = table();
        let top_listing = [dir("a"), linked("k2", 7), linked("other", 8)];
        let a_listing = [linked("k", 7), file("plain")];
        let mut ids = Vec::new();
        for m in ["m", "n"] {
            tb.add(m, Arc::new(("M", dir(""))), t(1)).unwrap();
            let top = walk(&mut tb, ROOT_INO, m, &[]).ino;
            let k2 = walk(&mut tb, top, "k2", &top_listing);
            let a = walk(&mut tb, top, "a", &top_listing).ino;
            let k = walk(&mut tb, a, "k", &a_listing);
            assert_eq!(k.ino, k2.ino, "{m}: a/k is k2");
            assert_eq!(k.entry, k2.entry);
            let other = found(tb.lookup(top, OsStr::new("other")));
            let plain = found(tb.lookup(a, OsStr::new("plain")));
            assert!(other.ino != k2.ino && plain.ino != k2.ino);
            let shown = |tb: &Table<Img, Fake>, dir: u64| match tb.readdir(dir, 2, 100) {
                Step::Done(r) => r
                    .into_iter()
                    .map(|r| (r.name.into_string().unwrap(), r.ino))
                    .collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            };
            assert_eq!(
                shown(&tb, top),
                [
                    ("a".into(), a),
                    ("k2".into(), k2.ino),
                    ("other".into(), other.ino)
                ]
            );
            assert_eq!(
                shown(&tb, a),
                [("k".into(), k2.ino), ("plain".into(), plain.ino)]
            );
            ids.push((top, a, k2.ino));
        }
        assert_ne!(ids[0].2, ids[1].2, "media do not share files");

        let (top, a, k2) = ids[0];
        let removed = tb.remove("m", t(2)).unwrap();
        let held: HashSet<(u64, String)> = removed
            .held
            .into_iter()
            .map(|(p, n)| (p, n.into_string().unwrap()))
            .collect();
        for want in [(top, "k2"), (a, "k")] {
            assert!(
                held.contains(&(want.0, want.1.into())),
                "{want:?} in {held:?}"
            );
        }
        // two lookups (k2, a/k) hold the shared node
        tb.forget(k2, 1);
        assert!(tb.attr(k2).is_some());
        tb.forget(k2, 1);
        assert!(tb.attr(k2).is_none());
    }

    #[test]
    fn root_lists_exactly_the_media_present_in_insertion_order() {
        let mut tb = table();
        tb.add("b", Arc::new(("B", dir(""))), t(1)).unwrap();
        tb.add("a", Arc::new(("A", dir(""))), t(2)).unwrap();
        tb.add("c", Arc::new(("C", dir(""))), t(3)).unwrap();
        assert_eq!(tb.remove("a", t(4)).map(|r| r.id), Some(MediumId(2)));
        assert_eq!(tb.names(), ["b", "c"]);
        let listed = rows(tb.readdir(ROOT_INO, 0, 100));
        assert_eq!(
            listed.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            [".", "..", "b", "c"]
        );
        assert_eq!(
            tb.attr(ROOT_INO),
            Some(Attr::Root {
                media: 2,
                mtime: t(4)
            })
        );
    }

    #[test]
    fn rejects_invalid_and_taken_names() {
        let mut tb = table();
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert_eq!(
                tb.add(bad, Arc::new(("I", dir(""))), t(1)),
                Err(AddError::InvalidName),
                "{bad:?}"
            );
        }
        tb.add("x", Arc::new(("I", dir(""))), t(1)).unwrap();
        assert_eq!(
            tb.add("x", Arc::new(("J", dir(""))), t(1)),
            Err(AddError::NameTaken)
        );
        assert_eq!(tb.remove("nope", t(2)), None);
    }

    #[test]
    fn root_readdir_offsets_stay_valid_while_media_come_and_go() {
        let mut tb = table();
        for n in ["a", "b", "c", "d"] {
            tb.add(n, Arc::new(("I", dir(""))), t(1)).unwrap();
        }
        // First page: ".", "..", "a", "b".
        let first = rows(tb.readdir(ROOT_INO, 0, 4));
        assert_eq!(first.last().map(|r| r.1.as_str()), Some("b"));
        let resume = first.last().map(|r| r.0).unwrap();
        // "a" (already listed) and "c" (not yet) go, "e" comes: the rest is "d", "e".
        tb.remove("a", t(2));
        tb.remove("c", t(2));
        tb.add("e", Arc::new(("I", dir(""))), t(2)).unwrap();
        let rest = rows(tb.readdir(ROOT_INO, resume, 100));
        assert_eq!(
            rest.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            ["d", "e"]
        );
    }

    #[test]
    fn directory_is_indexed_once_and_inodes_are_stable() {
        let mut tb = table();
        tb.add("m", Arc::new(("I", dir(""))), t(1)).unwrap();
        let top = found(tb.lookup(ROOT_INO, OsStr::new("m")));
        let listing = [file("x"), dir("sub"), file("y")];
        let x1 = walk(&mut tb, top.ino, "x", &listing);
        // The index is there now: no second read is asked for.
        let x2 = found(tb.lookup(top.ino, OsStr::new("x")));
        assert_eq!(x1.ino, x2.ino);
        // A late second install (a racing reader) changes nothing.
        tb.install_children(top.ino, MediumId(1), vec![file("other")]);
        assert!(matches!(
            tb.lookup(top.ino, OsStr::new("other")),
            Step::Err(libc::ENOENT)
        ));
        let listed = rows(tb.readdir(top.ino, 0, 100));
        assert_eq!(
            listed,
            [
                (1, ".".to_owned()),
                (2, "..".to_owned()),
                (3, "x".to_owned()),
                (4, "sub".to_owned()),
                (5, "y".to_owned())
            ]
        );
        assert_eq!(rows(tb.readdir(top.ino, 4, 100)), [(5, "y".to_owned())]);
        assert!(matches!(
            tb.lookup(x1.ino, OsStr::new("z")),
            Step::Err(libc::ENOTDIR)
        ));
    }

    #[test]
    fn unusable_and_duplicate_names_from_an_image_are_left_out() {
        let mut tb = table();
        tb.add("m", Arc::new(("I", dir(""))), t(1)).unwrap();
        let top = found(tb.lookup(ROOT_INO, OsStr::new("m")));
        let skipped = tb.install_children(
            top.ino,
            MediumId(1),
            vec![
                file("ok"),
                file(""),
                file(".."),
                file("a/b"),
                file("ok"),
                file("n\0ul"),
            ],
        );
        assert_eq!(skipped, 5);
        let listed = rows(tb.readdir(top.ino, 2, 100));
        assert_eq!(listed, [(3, "ok".to_owned())]);
    }

    #[test]
    fn a_directory_listed_twice_in_a_medium_is_left_out_the_second_time() {
        let mut tb = table();
        tb.add("m", Arc::new(("I", dir_at("", 20))), t(1)).unwrap();
        let top = found(tb.lookup(ROOT_INO, OsStr::new("m")));
        let a = walk(
            &mut tb,
            top.ino,
            "a",
            &[dir_at("a", 21), dir_at("top", 20), dir_at("c", 30)],
        );
        assert_eq!(
            rows(tb.readdir(top.ino, 2, 100)),
            [(3, "a".to_owned()), (4, "c".to_owned())]
        );
        let skipped = tb.install_children(
            a.ino,
            MediumId(1),
            vec![
                dir_at("self", 21),
                dir_at("up", 20),
                dir_at("b", 22),
                dir("e"),
            ],
        );
        assert_eq!(skipped, 2);
        assert_eq!(
            rows(tb.readdir(a.ino, 2, 100)),
            [(3, "b".to_owned()), (4, "e".to_owned())]
        );
        // Not a loop, but listed already: one directory shows once, however many records
        // point at it.
        let b = found(tb.lookup(a.ino, OsStr::new("b")));
        let skipped = tb.install_children(
            b.ino,
            MediumId(1),
            vec![dir_at("alias_of_c", 30), dir_at("new", 31), file("f")],
        );
        assert_eq!(skipped, 1);
    }

    #[test]
    fn inode_numbers_are_never_reused() {
        let mut tb = table();
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            tb.add("m", Arc::new(("I", dir(""))), t(round)).unwrap();
            let top = found(tb.lookup(ROOT_INO, OsStr::new("m")));
            let a = walk(&mut tb, top.ino, "a", &[file("a"), file("b")]);
            assert!(seen.insert(top.ino));
            assert!(seen.insert(a.ino));
            assert_eq!(a.generation, round + 1);
            tb.forget(a.ino, 1);
            tb.forget(top.ino, 1);
            tb.remove("m", t(round));
        }
        assert_eq!(tb.usage(), Usage { media: 0, nodes: 0 });
    }

    #[test]
    fn removal_keeps_referenced_nodes_until_forgotten_and_drops_the_image() {
        let image: Img = Arc::new(("I", dir("")));
        let mut tb = table();
        tb.add("m", image.clone(), t(1)).unwrap();
        let top = found(tb.lookup(ROOT_INO, OsStr::new("m")));
        let f = walk(&mut tb, top.ino, "f", &[file("f"), file("g")]);
        let (held, _) = tb.open(f.ino).unwrap();
        assert_eq!(Arc::strong_count(&image), 3);
        let removed = tb.remove("m", t(2)).unwrap();
        // The kernel's entry for "f" is reported, for invalidation; the top is the root entry.
        assert_eq!(removed.held, vec![(top.ino, OsString::from("f"))]);
        // Only our copy and the open handle's remain.
        assert_eq!(Arc::strong_count(&image), 2);
        assert!(matches!(
            tb.lookup(ROOT_INO, OsStr::new("m")),
            Step::Err(libc::ENOENT)
        ));
        // Referenced nodes still answer getattr, nothing else.
        assert!(matches!(tb.attr(f.ino), Some(Attr::Node { .. })));
        assert_eq!(tb.open(f.ino).err(), Some(libc::ENOENT));
        assert!(matches!(
            tb.lookup(top.ino, OsStr::new("g")),
            Step::Err(libc::ENOENT)
        ));
        assert!(matches!(
            tb.readdir(top.ino, 0, 10),
            Step::Err(libc::ENOENT)
        ));
        // "g" was never looked up: gone already.
        assert_eq!(tb.usage(), Usage { media: 0, nodes: 2 });
        tb.forget(f.ino, 1);
        tb.forget(top.ino, 1);
        assert_eq!(tb.usage(), Usage { media: 0, nodes: 0 });
        assert!(tb.attr(f.ino).is_none());
        drop(held);
        assert_eq!(Arc::strong_count(&image), 1);
    }

    #[test]
    fn forget_counts_every_lookup() {
        let mut tb = table();
        tb.add("m", Arc::new(("I", dir(""))), t(1)).unwrap();
        let top = found(tb.lookup(ROOT_INO, OsStr::new("m")));
        let f = walk(&mut tb, top.ino, "f", &[file("f")]);
        found(tb.lookup(top.ino, OsStr::new("f")));
        tb.remove("m", t(2));
        tb.forget(f.ino, 1);
        assert!(tb.attr(f.ino).is_some(), "one reference is left");
        tb.forget(f.ino, 5);
        assert!(tb.attr(f.ino).is_none());
        // Forgetting unknown inodes is harmless.
        tb.forget(f.ino, 1);
        tb.forget(999, 1);
    }

    #[test]
    fn index_for_a_removed_medium_is_not_installed() {
        let mut tb = table();
        tb.add("m", Arc::new(("I", dir(""))), t(1)).unwrap();
        let top = found(tb.lookup(ROOT_INO, OsStr::new("m")));
        let need = match tb.lookup(top.ino, OsStr::new("f")) {
            Step::NeedIndex(n) => n,
            other => panic!("{other:?}"),
        };
        tb.remove("m", t(2));
        tb.add("m", Arc::new(("J", dir(""))), t(3)).unwrap();
        tb.install_children(need.dir, need.medium, vec![file("f")]);
        assert_eq!(
            tb.usage().nodes,
            1,
            "the old top (referenced) only: the new one is made at its first lookup"
        );
        found(tb.lookup(ROOT_INO, OsStr::new("m")));
        assert_eq!(tb.usage().nodes, 2, "old top and new top");
    }

    #[test]
    fn open_is_for_files_of_present_media() {
        let mut tb = table();
        tb.add("m", Arc::new(("I", dir(""))), t(1)).unwrap();
        let top = found(tb.lookup(ROOT_INO, OsStr::new("m")));
        let listing = [
            file("f"),
            dir("d"),
            Fake {
                kind: Kind::Symlink,
                ..file("l")
            },
        ];
        let d = walk(&mut tb, top.ino, "d", &listing);
        let l = walk(&mut tb, top.ino, "l", &listing);
        let f = walk(&mut tb, top.ino, "f", &listing);
        assert_eq!(tb.open(d.ino).err(), Some(libc::EISDIR));
        assert_eq!(tb.open(l.ino).err(), Some(libc::ELOOP));
        assert_eq!(tb.open(ROOT_INO).err(), Some(libc::EISDIR));
        assert_eq!(tb.open(12345).err(), Some(libc::ENOENT));
        assert_eq!(tb.open(f.ino).map(|(i, _)| i.0), Ok("I"));
        assert_eq!(tb.medium_of(f.ino), Some((MediumId(1), Some("m"))));
    }

    #[test]
    fn lookups_find_every_name_whether_the_listing_is_in_name_order_or_not() {
        for listing in [
            ["a", "b", "c", "d", "e"],
            ["e", "c", "a", "d", "b"],
            ["b", "a", "c", "e", "d"],
        ] {
            let mut tb = table();
            tb.add("m", Arc::new(("I", dir(""))), t(1)).unwrap();
            let top = found(tb.lookup(ROOT_INO, OsStr::new("m")));
            let files: Vec<Fake> = listing.iter().map(|n| file(n)).collect();
            for (i, n) in listing.iter().enumerate() {
                let f = walk(&mut tb, top.ino, n, &files);
                assert_eq!(f.entry.name, OsString::from(*n), "{listing:?}");
                // Readdir order stays the listing's; inodes follow it.
                assert_eq!(f.ino, top.ino + 1 + i as u64, "{listing:?} {n}");
            }
            assert!(matches!(
                tb.lookup(top.ino, OsStr::new("zz")),
                Step::Err(libc::ENOENT)
            ));
            assert!(matches!(
                tb.lookup(top.ino, OsStr::new("0")),
                Step::Err(libc::ENOENT)
            ));
        }
    }
}
