//! A mounted tree as `lstat` and content hashes, and the check of a mount against a fixture's
//! manifest (`fixtures/*.tree.json`), for each way an image can be served.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, PartialEq)]
pub struct Node {
    pub kind: &'static str,
    pub size: Option<u64>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Option<i64>,
    pub sha256: Option<String>,
    pub target: Option<PathBuf>,
}

pub fn sha256(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// Everything below `root` as lstat and content hashes, keyed by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let list = fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in list {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
            let ft = meta.file_type();
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let (kind, size, sha, target) = if ft.is_dir() {
                stack.push(path.clone());
                ("dir", None, None, None)
            } else if ft.is_symlink() {
                let t = fs::read_link(&path).expect("readlink");
                ("symlink", Some(meta.len()), None, Some(t))
            } else if ft.is_file() {
                ("file", Some(meta.len()), Some(sha256(&path)), None)
            } else {
                assert!(ft.is_fifo() || ft.is_block_device() || ft.is_char_device());
                ("special", None, None, None)
            };
            out.insert(
                rel,
                Node {
                    kind,
                    size,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mtime: Some(meta.mtime()),
                    sha256: sha,
                    target,
                },
            );
        }
    }
    out
}

/// Who serves the image: what each shows where an image carries no Rock Ridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// isomgr's FUSE driver: DESIGN's names (ISO9660 case kept), files 0444, dirs 0555, and
    /// set-id bits hidden.
    Fuse,
    /// Linux's isofs with its defaults (`map=normal`): ISO9660 names in lower case, files and
    /// dirs 0555, set-id bits shown, and genisoimage's `rr_moved` (which has no RE entry) shown
    /// empty.
    Kernel,
}

/// The tree under `base` is the one `manifest` describes, as `view` shows it: the same paths,
/// and per entry the type, size, mode, owner, mtime, content and symlink target.
///
/// Under Linux's isofs, a Rock Ridge name of 254 bytes or more shows cut short (it stops
/// adding NM entries there), and Linux 6.1 wraps times past 2038.
pub fn assert_matches_manifest(base: &Path, name: &str, manifest: &serde_json::Value, view: View) {
    let mut got = snapshot(base);
    let entries = manifest["entries"].as_array().expect("entries");
    let plain_names = manifest["names"] == "iso9660";
    let want: Vec<String> = entries
        .iter()
        .map(|e| {
            let path = e["path"].as_str().expect("path").trim_start_matches('/');
            if view == View::Kernel && plain_names {
                path.to_lowercase()
            } else {
                path.to_owned()
            }
        })
        .collect();
    let made_by_genisoimage = manifest["made_by"]
        .as_str()
        .is_some_and(|m| m.contains("genisoimage"));
    if view == View::Kernel && made_by_genisoimage && !want.iter().any(|p| p == "rr_moved") {
        if let Some(moved) = got.get("rr_moved") {
            assert_eq!(moved.kind, "dir", "{name}: rr_moved");
            let inside = fs::read_dir(base.join("rr_moved")).expect("listing rr_moved");
            assert_eq!(inside.count(), 0, "{name}: the kernel shows rr_moved empty");
            got.remove("rr_moved");
        }
    }
    // Linux's isofs stops adding Rock Ridge NM entries once a name would reach 254 bytes: a
    // longer name shows as its first NM entry, cut wherever that ends (even inside a UTF-8
    // character). Such an entry is found by that prefix.
    let keys: Vec<String> = want
        .iter()
        .map(|path| {
            let leaf = path.rsplit('/').next().expect("a name");
            if view != View::Kernel || leaf.len() < 254 || got.contains_key(path) {
                return path.clone();
            }
            let dir_len = path.len() - leaf.len();
            let found: Vec<&String> = got
                .keys()
                .filter(|k| !want.contains(k))
                .filter(|k| {
                    let shown = k.trim_end_matches('\u{FFFD}');
                    shown.len() >= dir_len + 100 && path.starts_with(shown)
                })
                .collect();
            assert_eq!(
                found.len(),
                1,
                "{name}: {path} cut by the kernel: {found:?}"
            );
            found[0].clone()
        })
        .collect();
    let have: Vec<&String> = got.keys().collect();
    let mut keys_sorted: Vec<&String> = keys.iter().collect();
    keys_sorted.sort();
    assert_eq!(have, keys_sorted, "{name}: paths");
    for (e, path) in entries.iter().zip(&keys) {
        let g = &got[path];
        let kind = e["type"].as_str().expect("type");
        assert_eq!(g.kind, kind, "{name}: {path}");
        if kind != "dir" {
            assert_eq!(g.size, e["size"].as_u64(), "{name}: {path} size");
        }
        // A UDF bridge mounted as UDF shows the UDF side's owners and permissions, and
        // genisoimage records none there (the kernel shows 65534 and read-only modes).
        if !(view == View::Kernel && manifest["fs"] == "udf") {
            let mode = match (e["mode"].as_str(), kind, view) {
                (_, "symlink", _) => 0o777,
                (Some(m), _, View::Fuse) => u32::from_str_radix(m, 8).expect("octal mode") & 0o1777,
                (Some(m), _, View::Kernel) => u32::from_str_radix(m, 8).expect("octal mode"),
                (None, "dir", _) | (None, _, View::Kernel) => 0o555,
                (None, _, View::Fuse) => 0o444,
            };
            assert_eq!(g.mode, mode, "{name}: {path} mode {:o}", g.mode);
            if let Some(uid) = e["uid"].as_u64() {
                assert_eq!(u64::from(g.uid), uid, "{name}: {path} uid");
            }
            if let Some(gid) = e["gid"].as_u64() {
                assert_eq!(u64::from(g.gid), gid, "{name}: {path} gid");
            }
        }
        if let Some(mtime) = e["mtime"].as_i64() {
            // Linux 6.1's isofs (iso_date returns an int) wraps times past 2038.
            let wrapped = i64::from(mtime as i32);
            let ok = g.mtime == Some(mtime) || (view == View::Kernel && g.mtime == Some(wrapped));
            assert!(ok, "{name}: {path} mtime {:?}, want {mtime}", g.mtime);
        }
        if let Some(sha) = e["sha256"].as_str() {
            assert_eq!(g.sha256.as_deref(), Some(sha), "{name}: {path} content");
        }
        if let Some(target) = e["target"].as_str() {
            assert_eq!(
                g.target.as_deref(),
                Some(Path::new(target)),
                "{name}: {path} target"
            );
        }
    }
}
