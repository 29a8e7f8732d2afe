//! The UDF tree: images made at run time by pycdlib (a Windows-style bridge whose ISO9660 tree
//! holds only README.TXT), genisoimage (`-udf`, `-udf -J`) and mkudffs (every partition and
//! descriptor layout it writes), read through `isomgr ls`, `cat` and `scan`, the library and
//! the FUSE driver, and checked against their source trees, blkid and 7-Zip's extraction.
//!
//! Needs genisoimage, mkudffs, 7z, blkid and pycdlib for /usr/bin/python3 (scripts/setup.sh
//! installs them); the FUSE test also needs root and /dev/fuse. Without them each test says so
//! and skips, or fails under CI=true.

mod common;

#[path = "common/tree.rs"]
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use isomgr::iso9660::{Image, Kind, Names};
use serde_json::Value;

use common::udf::{bridge_tree, have_pycdlib, pycdlib_bridge, README};
use common::watcher::{self, noise, Env, Watcher};
use common::{isomgr, output_ok, sha256_hex};
use tree::{snapshot, Node};

/// The UDF label the pycdlib bridge carries (its ISO9660 label is `WINLIKE`).
const BRIDGE_LABEL: &str = "Win Bridge";
/// The same as a directory name under the watcher's root.
const BRIDGE_NAME: &str = "Win_Bridge";

/// A bridge as Windows media are made: pycdlib puts README.TXT in both trees and everything
/// else, symlinks included, only in the UDF tree. `isomgr ls -R --json` shows exactly the
/// source tree (paths, types, sizes, symlink targets), `cat` gives every file's bytes, also
/// through symlinks (relative, with `..`, absolute), and `scan` reports the UDF label and file
/// system as blkid does. Without UDF support the listing would be README.TXT alone.
#[test]
fn a_windows_style_bridge_shows_its_udf_tree() {
    if !have_pycdlib() || !common::have_tool("blkid") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    bridge_tree(&src);
    let iso = tmp.path().join("bridge.iso");
    let iso9660_root = pycdlib_bridge(&src, &iso, BRIDGE_LABEL);
    assert_eq!(
        iso9660_root,
        ["README.TXT;1"],
        "the ISO9660 tree holds README.TXT alone"
    );
    let img = iso.to_str().unwrap();

    let got = ls_json(&iso);
    let want = bridge_view(&src);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the listed paths are the source tree's"
    );
    for (path, w) in &want {
        let g = &got[path];
        assert_eq!(g["type"], w.kind, "{path}: type");
        match w.kind {
            "file" => {
                assert_eq!(g["size"].as_u64(), w.size, "{path}: size");
                let out = isomgr(&["cat", img, &format!("/{path}")]);
                assert!(
                    out.status.success(),
                    "cat {path}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(Some(sha256_hex(&out.stdout)), w.sha256, "{path}: content");
            }
            "symlink" => {
                let target = w.target.as_ref().unwrap().to_str().unwrap();
                assert_eq!(g["target"], target, "{path}: target");
                assert_eq!(g["size"].as_u64(), w.size, "{path}: size is the target's");
            }
            _ => assert!(g.get("target").is_none(), "{path}: no target"),
        }
    }
    assert!(
        ls_json_at(&iso, "/emptydir").is_empty(),
        "the empty directory lists nothing"
    );

    // cat follows symlinks inside the image, wherever they lead.
    let random = fs::read(src.join("a/b/c/random.bin")).unwrap();
    for (path, want) in [
        ("/bootlink/c/random.bin", random.as_slice()),
        ("/abslink", random.as_slice()),
        ("/a/b/c/up", b"spaced out\n".as_slice()),
    ] {
        let out = isomgr(&["cat", img, path]);
        assert!(
            out.status.success(),
            "cat {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == want, "cat {path}: the target's bytes");
    }

    let row = scan_json(&iso);
    assert_eq!(row["label"], BRIDGE_LABEL, "scan: label");
    assert_eq!(row["fs"], "udf", "scan: fs");
    assert!(
        row["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "udf"),
        "scan: extensions {}",
        row["extensions"]
    );
    assert_eq!(row["complete"], true, "scan: complete");
    assert_eq!(blkid(&iso, "TYPE").as_deref(), Some("udf"));
    assert_eq!(blkid(&iso, "LABEL").as_deref(), Some(BRIDGE_LABEL));

    let image = Image::open(fs::File::open(&iso).unwrap()).unwrap();
    assert_eq!(image.names(), Names::Udf, "the tree shown is the UDF one");
}

/// `genisoimage -udf -J` writes both trees from the same names (its UDF names are its Joliet
/// names: a 100-character name is cut to 64 characters in both), so what tells them apart is
/// the directories: UDF directories are as long as their identifiers, Joliet ones whole
/// sectors. isomgr shows the UDF tree: every path, file, byte and time equal to what 7-Zip
/// extracts as UDF, the times equal to the source's (made in a time zone 5:30 east of UTC), and
/// each directory as long as its UDF identifiers.
#[test]
fn a_genisoimage_udf_joliet_image_shows_its_udf_tree() {
    if !common::have_tool("genisoimage") || !common::have_tool("7z") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let long = format!("{}-long.name", "N".repeat(90));
    genisoimage_tree(&src, &long);
    let iso = tmp.path().join("gj.iso");
    genisoimage(&["-udf", "-J", "-V", "UDFJ"], &src, &iso);

    let got = ls_json(&iso);
    let mut want = snapshot(&src);
    let node = want.remove(&long).unwrap();
    let cut: String = long.chars().take(64).collect();
    want.insert(cut.clone(), node);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the paths are the source's, the long name cut to 64 characters"
    );
    assert_udf_tree_of(&iso, &got, &want, &src, &[(&cut, &long)], tmp.path());

    let row = scan_json(&iso);
    assert_eq!(row["label"], "UDFJ");
    assert_eq!(row["fs"], "udf");
    let ext: BTreeSet<&str> = row["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ext, BTreeSet::from(["joliet", "udf"]));
}

/// `genisoimage -udf` without Joliet: the UDF tree holds whole names (100 characters, spaces,
/// mixed case, Latin-1 and other Unicode) where the ISO9660 tree holds 8.3 upper-case names.
/// isomgr lists the source's names, bytes and times, the same as 7-Zip extracts.
#[test]
fn a_genisoimage_udf_image_shows_names_iso9660_cannot_hold() {
    if !common::have_tool("genisoimage") || !common::have_tool("7z") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let long = format!("{}-long.name", "N".repeat(90));
    genisoimage_tree(&src, &long);
    let iso = tmp.path().join("g.iso");
    genisoimage(&["-udf", "-V", "UDFONLYNAMES"], &src, &iso);

    let got = ls_json(&iso);
    let want = snapshot(&src);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the source's whole names"
    );
    assert!(got.contains_key(&long), "the 100-character name is whole");
    assert_udf_tree_of(&iso, &got, &want, &src, &[], tmp.path());
}

/// Every layout mkudffs writes opens: blocks of 2048 bytes, and of 512, 1024 and 4096 as on
/// a stick or disk formatted with UDF; UDF 1.02 to 2.01, short,
/// long and embedded allocation descriptors, file entries with and without the extended form,
/// both allocation strategies, sparable partitions (CD-RW), DVD-RW/DVD-RAM layouts, free space
/// tables, an MBR in front. Each lists an empty root with exit 0, `scan` and blkid report its
/// label and file system, and the root directory has the owner, mode and time mkudffs gave it
/// (made in a time zone 5:30 east of UTC).
#[test]
fn udf_images_from_mkudffs_open_in_every_layout() {
    if !common::have_tool("mkudffs") || !common::have_tool("blkid") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let variants: &[(&str, &[&str])] = &[
        ("default", &[]),
        ("rev102", &["--udfrev=1.02"]),
        ("rev150", &["--udfrev=1.50"]),
        ("rev201", &["--udfrev=2.01"]),
        ("ad-short", &["--ad=short"]),
        ("ad-long", &["--ad=long"]),
        ("ad-inicb", &["--ad=inicb"]),
        ("noefe", &["--noefe"]),
        ("noefe-short", &["--noefe", "--ad=short"]),
        ("strategy4096", &["--strategy=4096"]),
        ("cdrw", &["--media-type=cdrw"]),
        ("cdrw-rev150", &["--media-type=cdrw", "--udfrev=1.50"]),
        (
            "cdrw-4tables",
            &["--media-type=cdrw", "--spartable=4", "--sparspace=16"],
        ),
        ("dvdrw", &["--media-type=dvdrw"]),
        ("dvdram", &["--media-type=dvdram"]),
        ("unalloctable", &["--space=unalloctable"]),
        ("mbr", &["--bootarea=mbr"]),
        // As on a stick or disk formatted with UDF (the later -b wins).
        ("bs512", &["-b", "512"]),
        ("bs1024", &["-b", "1024"]),
        ("bs4096", &["-b", "4096"]),
    ];
    for (label, opts) in variants {
        let img = tmp.path().join(format!("{label}.img"));
        let before = now();
        mkudffs(
            &img,
            10 << 20,
            label,
            opts,
            &["--uid=1234", "--gid=5678", "--mode=0750"],
        );
        let after = now();

        let out = isomgr(&["ls", "--json", img.to_str().unwrap(), "/"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{label}: ls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert!(rows.is_empty(), "{label}: the root is empty: {rows:?}");
        let out = isomgr(&["ls", "-R", "-l", img.to_str().unwrap()]);
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "{label}: ls -R -l"
        );
        let out = isomgr(&["cat", img.to_str().unwrap(), "/missing"]);
        assert_eq!(out.status.code(), Some(1), "{label}: cat of a missing file");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no such file"),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let row = scan_json(&img);
        assert_eq!(row["label"], *label, "{label}: scan label");
        assert_eq!(row["fs"], "udf", "{label}: scan fs");
        assert_eq!(row["complete"], true, "{label}: complete");
        assert_eq!(
            blkid(&img, "LABEL").as_deref(),
            Some(*label),
            "{label}: blkid"
        );
        assert_eq!(
            blkid(&img, "TYPE").as_deref(),
            Some("udf"),
            "{label}: blkid"
        );

        let image = Image::open(fs::File::open(&img).unwrap())
            .unwrap_or_else(|e| panic!("{label}: opening: {e}"));
        assert_eq!(image.names(), Names::Udf, "{label}");
        let root = image.root();
        assert_eq!(root.kind, Kind::Dir, "{label}: root");
        assert_eq!(root.mode, 0o750, "{label}: root mode {:o}", root.mode);
        assert_eq!((root.uid, root.gid), (1234, 5678), "{label}: root owner");
        assert!(
            (before - 1..=after + 1).contains(&root.mtime.secs),
            "{label}: root mtime {} not within [{before}, {after}]",
            root.mtime.secs
        );
        assert!(image.read_dir(&root).unwrap().is_empty(), "{label}");
    }
}

/// A bridge whose UDF side cannot be read (here its logical volume says blocks of 4096 bytes
/// where the anchor is on 2048) is shown through its Joliet tree, with a warning naming the
/// image and the cause, rather than not at all.
#[test]
fn a_bridge_whose_udf_side_is_unreadable_shows_its_joliet_tree_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let iso = tmp.path().join("broken-udf.iso");
    let mut data = fs::read(common::fixtures().join("udf-joliet.iso")).unwrap();
    let lvd = (16..64)
        .map(|s| s * 2048)
        .find(|&at| data[at..at + 2] == 6u16.to_le_bytes())
        .expect("a logical volume descriptor");
    data[lvd + 212..lvd + 216].copy_from_slice(&4096u32.to_le_bytes());
    fs::write(&iso, &data).unwrap();
    let out = isomgr(&["ls", iso.to_str().unwrap(), "/"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(iso.to_str().unwrap())
            && err.contains("logical block size 4096")
            && err.contains("showing the ISO9660 tree instead"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("README.TXT"));
    let image = Image::open(fs::File::open(&iso).unwrap()).unwrap();
    assert_eq!(image.names(), Names::Joliet);
}

/// Discs written incrementally keep a VAT (virtual allocation table) in their last written
/// block; mkudffs makes such images for CD-R, BD-R (UDF 2.50) and on request. As made, the
/// file goes on past the VAT (zeros) and nothing can read it (Linux neither): `ls` and `cat`
/// fail with the image path and the cause. Cut right after the VAT, as a copy of the disc
/// ends, it opens: an empty root, `scan` reports the label and calls it complete (the
/// partition descriptor declares the whole medium).
#[test]
fn a_vat_image_reads_when_it_ends_with_its_vat() {
    if !common::have_tool("mkudffs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let variants: &[(&str, u64, &[&str])] = &[
        ("bdr", 30 << 20, &["--media-type=bdr", "--udfrev=2.50"]),
        ("cdr", 10 << 20, &["--media-type=cdr"]),
        ("hd-vat", 10 << 20, &["--vat"]),
    ];
    for (label, size, opts) in variants {
        let img = tmp.path().join(format!("{label}.img"));
        mkudffs(&img, *size, label, opts, &[]);
        let path = img.to_str().unwrap();
        for args in [vec!["ls", path, "/"], vec!["cat", path, "/x"]] {
            let out = isomgr(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{label}: {args:?}: {err}");
            assert!(
                err.contains(path) && err.contains("no virtual allocation table"),
                "{label}: {args:?}: {err}"
            );
            assert!(out.stdout.is_empty(), "{label}: {args:?} printed nothing");
        }

        // Cut after the last block that holds anything: the VAT's.
        common::udf::cut_after_last_block(&img, 0);
        let out = isomgr(&["ls", "--json", path, "/"]);
        assert!(
            out.status.success(),
            "{label}: ls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert!(rows.is_empty(), "{label}: the root is empty: {rows:?}");
        let row = scan_json(&img);
        assert_eq!(row["label"], *label, "{label}: scan label");
        assert_eq!(row["fs"], "udf", "{label}: scan fs");
        assert_eq!(
            row["complete"], true,
            "{label}: ends with its VAT: complete"
        );
        assert_eq!(
            Image::open(fs::File::open(&img).unwrap()).unwrap().names(),
            Names::Udf
        );

        // A copy that read a few blocks past the last written one (zeros): the VAT is found
        // where Linux looks, up to three blocks before the end; four is too far.
        for pad in [1u64, 3, 4] {
            common::udf::cut_after_last_block(&img, pad);
            let out = isomgr(&["ls", "--json", path, "/"]);
            let err = String::from_utf8_lossy(&out.stderr);
            let row = scan_json(&img);
            if pad <= 3 {
                assert!(
                    out.status.success(),
                    "{label}: {pad} blocks of padding: {err}"
                );
                assert_eq!(row["complete"], true, "{label}: {pad} blocks of padding");
            } else {
                assert_eq!(out.status.code(), Some(1), "{label}: {pad} blocks: {err}");
                assert!(
                    err.contains(path) && err.contains("no virtual allocation table"),
                    "{label}: {pad} blocks: {err}"
                );
                assert_eq!(row["complete"], false, "{label}: {pad} blocks of padding");
            }
        }
    }
}

/// `isomgr watch --driver fuse` serves the pycdlib bridge under its UDF label: every file's
/// bytes through the mount equal the source's, readlink gives each symlink's target, a
/// relative symlink resolves inside the mount, and the empty directory lists empty.
#[test]
fn the_fuse_driver_serves_a_udf_only_bridge() {
    if !watcher::can_run("the_fuse_driver_serves_a_udf_only_bridge") || !have_pycdlib() {
        return;
    }
    let env = Env::new("isomgr-udf-");
    let src = env.scratch.join("src");
    bridge_tree(&src);
    let built = env.scratch.join("bridge.iso");
    pycdlib_bridge(&src, &built, BRIDGE_LABEL);
    let _w = Watcher::start_with(&env, &["--no-drives"]);
    fs::rename(&built, env.drop.join("bridge.iso")).unwrap();
    let status = env.wait_status(&[BRIDGE_NAME]);
    assert_eq!(
        status["media"][0]["label"], BRIDGE_LABEL,
        "served under its UDF label"
    );

    let served = env.root.join(BRIDGE_NAME);
    let got = snapshot(&served);
    let want = bridge_view(&src);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the served paths are the source tree's"
    );
    for (path, w) in &want {
        let g = &got[path];
        assert_eq!(g.kind, w.kind, "{path}: type");
        if w.kind != "dir" {
            assert_eq!(g.size, w.size, "{path}: size");
        }
        assert_eq!(g.sha256, w.sha256, "{path}: content");
        assert_eq!(g.target, w.target, "{path}: readlink");
    }
    assert_eq!(
        fs::read_link(served.join("bootlink")).unwrap(),
        Path::new("a/b")
    );
    assert_eq!(
        fs::read(served.join("bootlink/c/random.bin")).unwrap(),
        fs::read(src.join("a/b/c/random.bin")).unwrap(),
        "a relative symlink resolves inside the mount"
    );
    assert_eq!(
        fs::read(served.join("a/b/c/up")).unwrap(),
        b"spaced out\n",
        "a symlink with .. resolves inside the mount"
    );
    assert_eq!(
        fs::read_dir(served.join("emptydir")).unwrap().count(),
        0,
        "the empty directory lists empty"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `got` (the listing of `iso`) is the UDF tree of `src` (`want`, its snapshot): the same
/// bytes and times, each directory as long as its UDF identifiers (a Joliet or ISO9660
/// directory is whole sectors), and what 7-Zip extracts as UDF. `renamed` pairs a name as
/// shown with its source name.
fn assert_udf_tree_of(
    iso: &Path,
    got: &BTreeMap<String, Value>,
    want: &BTreeMap<String, Node>,
    src: &Path,
    renamed: &[(&str, &str)],
    scratch: &Path,
) {
    assert_same_as_source(iso, got, want, src, renamed);
    let to_shown: Vec<(&str, &str)> = renamed
        .iter()
        .map(|(shown, source)| (*source, *shown))
        .collect();
    for (path, g) in got.iter().filter(|(_, g)| g["type"] == "dir") {
        assert_eq!(
            g["size"].as_u64(),
            Some(udf_dir_size(&src.join(path), &to_shown)),
            "{path}: the size of its UDF identifiers, not whole sectors"
        );
    }
    assert_same_as_7z(iso, got, &scratch.join("7z"));
}

/// What the bridge built from `src` shows: the source tree and README.TXT.
fn bridge_view(src: &Path) -> BTreeMap<String, Node> {
    let mut want = snapshot(src);
    want.insert("README.TXT".into(), file_node(README));
    want
}

/// The genisoimage tests' source tree, every entry with its own time: `long` (100 characters),
/// a name with spaces and mixed case, a Latin-1 name, a name outside Latin-1, directories two
/// deep, an empty file, a file of a few sectors.
fn genisoimage_tree(src: &Path, long: &str) {
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    let files: [(&str, Vec<u8>); 6] = [
        (long, noise(5000, 4)),
        ("Mixed Case Name.txt", b"mixed\n".to_vec()),
        ("Ünïcödé.txt", b"latin-1\n".to_vec()),
        ("dir/日本語.txt", "nihongo\n".as_bytes().to_vec()),
        ("dir/sub/data.bin", noise(123_456, 5)),
        ("dir/zero", Vec::new()),
    ];
    let mut t = 1_500_000_000;
    for (name, data) in &files {
        let p = src.join(name);
        fs::write(&p, data).unwrap();
        set_mtime(&p, t);
        t += 86_400 + 3_661;
    }
    for dir in ["dir/sub", "dir"] {
        set_mtime(&src.join(dir), t);
        t += 1_000_003;
    }
}

/// genisoimage with `args`, run in a time zone 5:30 east of UTC (so a reader that ignores the
/// recorded offset is off by 19800 seconds).
fn genisoimage(args: &[&str], src: &Path, out: &Path) {
    output_ok(
        Command::new("genisoimage")
            .args(["-quiet", "-input-charset", "utf-8"])
            .args(args)
            .arg("-o")
            .arg(out)
            .arg(src)
            .env("TZ", "Asia/Kolkata")
            .env("LC_ALL", "C.UTF-8"),
    );
}

/// A file of 10 MiB or `size` bytes made into a UDF volume by mkudffs (2048-byte blocks) with
/// `label`, `opts` and `more`, run in a time zone 5:30 east of UTC.
fn mkudffs(img: &Path, size: u64, label: &str, opts: &[&str], more: &[&str]) {
    fs::File::create(img).unwrap().set_len(size).unwrap();
    output_ok(
        Command::new("mkudffs")
            .args(["-b", "2048", &format!("--label={label}")])
            .args(opts)
            .args(more)
            .arg(img)
            .env("TZ", "Asia/Kolkata")
            .stdout(Stdio::null()),
    );
}

/// Every file's and directory's bytes and times as isomgr shows them (`got`, from `ls --json`)
/// equal the source's (`want`, keyed as shown); `renamed` maps shown paths to source paths.
fn assert_same_as_source(
    iso: &Path,
    got: &BTreeMap<String, Value>,
    want: &BTreeMap<String, Node>,
    src: &Path,
    renamed: &[(&str, &str)],
) {
    for (path, w) in want {
        let g = &got[path];
        assert_eq!(g["type"], w.kind, "{path}: type");
        let source = renamed
            .iter()
            .find(|(shown, _)| shown == path)
            .map_or(path.as_str(), |(_, s)| s);
        let mtime = fs::symlink_metadata(src.join(source))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(g["mtime"].as_u64(), Some(mtime), "{path}: mtime");
        if w.kind == "file" {
            assert_eq!(g["size"].as_u64(), w.size, "{path}: size");
            let bytes = cat(iso, path);
            assert_eq!(Some(sha256_hex(&bytes)), w.sha256, "{path}: content");
        }
    }
}

/// What 7-Zip extracts from `iso` as UDF is what isomgr shows (`got`): the same paths and
/// types, each file byte for byte, each entry's mtime.
fn assert_same_as_7z(iso: &Path, got: &BTreeMap<String, Value>, dir: &Path) {
    output_ok(
        Command::new("7z")
            .args(["x", "-tudf", "-y"])
            .arg(format!("-o{}", dir.display()))
            .arg(iso)
            .stdout(Stdio::null()),
    );
    let extracted = snapshot(dir);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        extracted.keys().collect::<Vec<_>>(),
        "isomgr lists what 7z extracts"
    );
    for (path, e) in &extracted {
        let g = &got[path];
        assert_eq!(g["type"], e.kind, "{path}: type as 7z has it");
        assert_eq!(g["mtime"].as_i64(), e.mtime, "{path}: mtime as 7z has it");
        if e.kind == "file" {
            assert!(
                cat(iso, path) == fs::read(dir.join(path)).unwrap(),
                "{path}: isomgr's bytes are 7z's"
            );
        }
    }
}

/// The byte length of the UDF directory genisoimage makes for source directory `dir`: the
/// parent's identifier descriptor (40 bytes) and one per entry, 38 bytes plus the name (a
/// compression byte, then 8-bit characters if all fit in Latin-1, else 16-bit ones), each
/// padded to 4 bytes. `renamed` maps source names to the names the image holds.
fn udf_dir_size(dir: &Path, renamed: &[(&str, &str)]) -> u64 {
    let mut size = 40;
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let name = renamed
            .iter()
            .find(|(from, _)| *from == name)
            .map_or(name.as_str(), |(_, to)| to);
        let chars = name.chars().count() as u64;
        let bytes = if name.chars().all(|c| u32::from(c) < 256) {
            1 + chars
        } else {
            1 + 2 * name.encode_utf16().count() as u64
        };
        size += (38 + bytes).next_multiple_of(4);
    }
    size
}

/// `isomgr ls -R --json IMAGE /`, keyed by path without the leading `/`.
fn ls_json(iso: &Path) -> BTreeMap<String, Value> {
    let out = isomgr(&["ls", "-R", "--json", iso.to_str().unwrap(), "/"]);
    assert!(
        out.status.success(),
        "ls -R {}: {}",
        iso.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("ls --json is JSON");
    let mut map = BTreeMap::new();
    for row in rows {
        let path = row["path"]
            .as_str()
            .unwrap()
            .trim_start_matches('/')
            .to_owned();
        assert!(
            map.insert(path.clone(), row).is_none(),
            "{path} listed twice"
        );
    }
    map
}

/// `isomgr ls --json IMAGE PATH` (one directory, not recursive).
fn ls_json_at(iso: &Path, path: &str) -> Vec<Value> {
    let out = isomgr(&["ls", "--json", iso.to_str().unwrap(), path]);
    assert!(
        out.status.success(),
        "ls {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `isomgr cat IMAGE /PATH`; fails the test if it fails.
fn cat(iso: &Path, path: &str) -> Vec<u8> {
    let out = isomgr(&["cat", iso.to_str().unwrap(), &format!("/{path}")]);
    assert!(
        out.status.success(),
        "cat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The one row of `isomgr scan --json IMAGE`.
fn scan_json(img: &Path) -> Value {
    let out = isomgr(&["scan", "--json", img.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "scan {}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "scan of one image");
    rows.remove(0)
}

/// The value blkid reports for `tag`, probing the file itself (`-p`, no cache).
fn blkid(img: &Path, tag: &str) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", tag])
        .arg(img)
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let s = s.trim_end_matches('\n');
    (!s.is_empty()).then(|| s.to_owned())
}

/// What [`snapshot`] says of a file holding `data` (only kind, size and hash are compared).
fn file_node(data: &[u8]) -> Node {
    Node {
        kind: "file",
        size: Some(data.len() as u64),
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: None,
        sha256: Some(sha256_hex(data)),
        target: None,
    }
}

fn set_mtime(path: &Path, secs: i64) {
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    fs::File::open(path).unwrap().set_modified(t).unwrap();
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
