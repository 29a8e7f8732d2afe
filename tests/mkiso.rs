//! `isomgr mkiso` end to end: images checked with isomgr's own reader and with tools no one
//! here wrote (isoinfo, isovfy, xorriso, bsdtar, blkid).

mod common;
#[path = "mkiso_support/mod.rs"]
mod support;

use common::have_tool;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use support::*;

fn tools(list: &[&str]) -> bool {
    list.iter().all(|t| have_tool(t))
}

#[test]
fn image_reads_back_identically_with_our_reader_and_bsdtar() {
    if !tools(&["bsdtar"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let iso = tmp.path().join("out.iso");
    mkiso_ok(&src, &iso, &[], None);
    let want = describe_fs(&src);
    assert!(want.contains_key("/deep/level0/level1/level2/level3/level4/level5/level6/level7/level8/level9/level10/bottom.txt"));

    let got = describe_image(&iso);
    assert_eq!(got, want, "isomgr's reader disagrees with the source tree");

    let got = extracted_by_bsdtar(&iso, &tmp.path().join("x"));
    assert_eq!(
        got, want,
        "bsdtar's extraction differs from the source tree"
    );
}

#[test]
fn isoinfo_isovfy_and_xorriso_accept_the_image() {
    if !tools(&["isoinfo", "isovfy", "xorriso"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let iso = tmp.path().join("out.iso");
    mkiso_ok(&src, &iso, &["-V", "Test Volume"], None);
    let i = iso.to_str().unwrap();

    let d = run("isoinfo", &["-d", "-i", i]);
    assert!(d.contains("Volume id: Test Volume"), "{d}");
    assert!(d.contains("Joliet with UCS level 3 found"), "{d}");
    assert!(d.contains("Rock Ridge signatures version 1 found"), "{d}");

    let r = run("isoinfo", &["-R", "-l", "-i", i]);
    assert!(
        r.contains(&"n".repeat(255)),
        "255-byte Rock Ridge name missing:\n{r}"
    );
    assert!(r.contains("link-abs -> /etc/hostname"), "{r}");
    assert!(r.contains("héllo wörld ✓.txt"), "{r}");
    let j = run("isoinfo", &["-J", "-l", "-i", i]);
    assert!(j.contains("readme.md"), "{j}");
    assert!(j.contains("chapter 1.txt"), "{j}");
    let plain = run("isoinfo", &["-l", "-i", i]);
    assert!(plain.contains("HELLO.TXT;1"), "{plain}");
    assert!(plain.contains("RR_MOVED"), "{plain}");

    let v = run("isovfy", &[i]);
    assert!(v.contains("No errors found"), "isovfy:\n{v}");

    let out = run("xorriso", &["-indev", i, "-find", "/"]);
    let listed: BTreeSet<String> = out
        .lines()
        .filter(|l| l.starts_with('\''))
        .map(|l| l.trim_matches('\'').to_string())
        .filter(|p| p != "/")
        .collect();
    let want: BTreeSet<String> = describe_fs(&src).into_keys().collect();
    assert_eq!(listed, want, "xorriso -find lists other paths");
}

#[test]
fn symlink_targets_xorriso_would_refuse_are_kept_with_a_warning() {
    if !tools(&["xorriso"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // 1023 and 1024 bytes, in 200-byte components, and one 4000-byte component
    let path_of = |n: usize| vec!["c".repeat(200); 6].join("/")[..n].to_string();
    for (name, target, warned) in [
        ("short", path_of(1023), false),
        ("long", path_of(1024), true),
        ("one-component", "x".repeat(4000), true),
    ] {
        let src = tmp.path().join(name);
        fs::create_dir(&src).unwrap();
        std::os::unix::fs::symlink(&target, src.join("link")).unwrap();
        let iso = tmp.path().join(format!("{name}.iso"));
        let o = mkiso(&src, &iso, &[], None);
        assert!(o.status.success(), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        let warning = format!("has a target of {} bytes", target.len());
        assert_eq!(err.contains(&warning), warned, "{name}: {err}");
        // stored as it is
        let img = isomgr::iso9660::Image::open(fs::File::open(&iso).unwrap()).unwrap();
        let link = img.lookup("/link").unwrap();
        assert_eq!(link.target.as_deref(), Some(target.as_ref()), "{name}");
        if !warned {
            // what was not warned about, xorriso reads
            let out = run("xorriso", &["-indev", iso.to_str().unwrap(), "-find", "/"]);
            assert!(out.contains("'/link'"), "{name}: {out}");
        }
    }
}

#[test]
fn blkid_reports_the_label_given() {
    if !tools(&["blkid"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("My Source");
    make_tree(&src);
    // Joliet holds 16 characters; blkid takes the rest from the primary descriptor, where
    // only ASCII can be written.
    let accented = "Donn\u{e9}es d'\u{e9}t\u{e9} 2024 \u{2014} archive";
    for (label, args) in [
        ("Data 2024 (v1)", vec!["-V", "Data 2024 (v1)"]),
        ("My Source", vec![]),
        ("Rocky-9.2-x86_64-dvd", vec!["-V", "Rocky-9.2-x86_64-dvd"]),
        (
            "Ubuntu 24.04.1 LTS amd64",
            vec!["-V", "Ubuntu 24.04.1 LTS amd64"],
        ),
        (
            "Ubuntu 24.04.1 LTS amd64",
            vec!["-V", "Ubuntu 24.04.1 LTS amd64", "--no-joliet"],
        ),
        (
            "Donn\u{e9}es d'\u{e9}t\u{e9} 2024 _ archive",
            vec!["-V", accented],
        ),
    ] {
        let iso = tmp.path().join("l.iso");
        let o = mkiso(&src, &iso, &args, None);
        assert!(o.status.success(), "{args:?}");
        // warned exactly when blkid reads something else than was asked for
        let given = args.get(1).copied().unwrap_or("My Source");
        let warning = format!("warning: label {given:?} reads back as {label:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.contains(&warning), given != label, "{args:?}: {err}");
        let label_warnings = err.lines().filter(|l| l.contains("warning: label")).count();
        assert_eq!(label_warnings == 0, given == label, "{args:?}: {err}");
        let out = run(
            "blkid",
            &["-o", "value", "-s", "LABEL", iso.to_str().unwrap()],
        );
        assert_eq!(out.trim(), label, "{args:?}");
        let img = isomgr::iso9660::Image::open(fs::File::open(&iso).unwrap()).unwrap();
        assert_eq!(img.info().label.as_deref(), Some(label));
    }
}

/// Linux's isofs shows a Rock Ridge name of 254 bytes or more cut to its first NM entry:
/// mkiso stores it whole, ends that entry between characters, and says so per name.
#[test]
fn names_linux_would_cut_are_kept_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let names = [
        ("a".repeat(253), None),
        ("b".repeat(254), Some(250)),
        ("c".repeat(255), Some(250)),
        (format!("xx{}", "\u{8a9e}".repeat(84)), Some(248)),
    ];
    let files: Vec<(&str, &[u8])> = names.iter().map(|(n, _)| (n.as_str(), &b"x"[..])).collect();
    let src = dir_with(&tmp.path().join("src"), &files);
    let iso = tmp.path().join("n.iso");
    let o = mkiso(&src, &iso, &[], None);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for (name, shown) in &names {
        let line = err.lines().find(|l| l.contains(name.as_str()));
        match shown {
            None => assert!(line.is_none(), "{err}"),
            Some(n) => {
                let line = line.unwrap_or_else(|| panic!("no warning for {name}: {err}"));
                assert!(
                    line.contains(&format!("name of {} bytes", name.len()))
                        && line.contains(&format!("cut to their first {n} bytes")),
                    "{line}"
                );
            }
        }
    }
    assert_eq!(err.lines().count(), 3, "{err}");
    // Whole for the reader, and with --no-rock-ridge there is nothing to cut.
    let got = describe_image(&iso);
    for (name, _) in &names {
        assert!(got.contains_key(&format!("/{name}")), "{name}: {got:?}");
    }
    let o = mkiso(&src, &iso, &["--no-rock-ridge"], None);
    assert!(o.status.success() && o.stderr.is_empty(), "{o:?}");
}

#[test]
fn labels_longer_than_the_primary_descriptor_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = dir_with(&tmp.path().join("src"), &[("a", b"a")]);
    let iso = tmp.path().join("l.iso");
    let o = mkiso(&src, &iso, &["-V", &"x".repeat(33)], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("33 characters; an ISO 9660 volume label holds at most 32"),
        "{err}"
    );
    assert!(!iso.exists());
    mkiso_ok(&src, &iso, &["-V", &"\u{e9}".repeat(32)], None);
}

#[test]
fn same_tree_gives_same_bytes_with_source_date_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    make_tree(&src);
    let a = tmp.path().join("a.iso");
    let b = tmp.path().join("b.iso");
    mkiso_ok(&src, &a, &[], Some("1700000000"));
    // reading the tree again (atime) and a copy elsewhere (new inodes, ctimes) change nothing
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let copy = tmp.path().join("copy").join("tree");
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let cp = std::process::Command::new("cp")
        .args(["-a", src.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    mkiso_ok(&copy, &b, &[], Some("1700000000"));
    let (x, y) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert!(x == y, "two builds of the same tree differ");
    // descriptor times are SOURCE_DATE_EPOCH: 2023-11-14 22:13:20 UTC
    assert_eq!(&x[16 * 2048 + 813..16 * 2048 + 827], b"20231114221320");
}

/// Like genisoimage and xorriso, an image ends with 150 zero sectors (300 KiB) the volume
/// counts: GRUB booted from a CD reads a file in the last 16 sectors from 8 sectors before it
/// without them (tests/mkiso_boot.rs boots one). `--no-pad` leaves them out; isoinfo agrees
/// on the volume size either way.
#[test]
fn images_end_with_300_kib_of_zeros_unless_told_not_to() {
    if !tools(&["isoinfo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("last.cfg"), b"the last file\n").unwrap();
    let sizes = |args: &[&str], name: &str| {
        let out = tmp.path().join(name);
        mkiso_ok(&src, &out, args, Some("0"));
        let data = fs::read(&out).unwrap();
        let info = run("isoinfo", &["-d", "-i", out.to_str().unwrap()]);
        let sectors: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("Volume size is: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            sectors * 2048,
            data.len() as u64,
            "{name}: the volume is the file"
        );
        let last = data
            .chunks(2048)
            .rposition(|s| s.iter().any(|&b| b != 0))
            .unwrap();
        (data.len() / 2048, data.len() / 2048 - last - 1)
    };
    let (padded, zeros) = sizes(&[], "padded.iso");
    assert_eq!(zeros, 150, "150 zero sectors end the image");
    let (bare, zeros) = sizes(&["--no-pad"], "bare.iso");
    assert_eq!(zeros, 0, "--no-pad: the last sector holds data");
    assert_eq!(padded, bare + 150);
}

#[test]
fn options_drop_joliet_or_rock_ridge_and_rationalise_attributes() {
    if !tools(&["isoinfo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);

    let nj = tmp.path().join("nj.iso");
    mkiso_ok(&src, &nj, &["--no-joliet"], None);
    let d = run("isoinfo", &["-d", "-i", nj.to_str().unwrap()]);
    assert!(d.contains("NO Joliet present"), "{d}");
    assert_eq!(describe_image(&nj), describe_fs(&src));

    let nr = tmp.path().join("nr.iso");
    let o = mkiso(&src, &nr, &["--no-rock-ridge"], None);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("skipped symlink") && err.contains("link-abs"),
        "{err}"
    );
    let d = run("isoinfo", &["-d", "-i", nr.to_str().unwrap()]);
    assert!(d.contains("NO Rock Ridge present"), "{d}");
    // the reader falls back to Joliet names: real names, no symlinks
    let got = describe_image(&nr);
    assert!(got.contains_key("/docs/readme.md"));
    assert!(got.contains_key("/deep/level0/level1/level2/level3/level4/level5/level6/level7/level8/level9/level10/bottom.txt"));
    assert!(!got.values().any(|d| d.kind == "symlink"));

    let ra = tmp.path().join("ra.iso");
    mkiso_ok(&src, &ra, &["--rational"], None);
    let got = describe_image(&ra);
    let want = describe_fs(&src);
    for (p, g) in &got {
        let w = &want[p];
        assert_eq!((g.uid, g.gid), (0, 0), "{p}");
        if g.kind == "symlink" {
            continue;
        }
        assert_eq!(g.perm & 0o7222, 0, "{p}: write or special bits left");
        assert_eq!(g.perm & 0o444, 0o444, "{p}: not readable by all");
        let x = g.kind == "dir" || w.perm & 0o111 != 0;
        assert_eq!(g.perm & 0o111, if x { 0o111 } else { 0 }, "{p}");
        assert_eq!((g.sha.as_ref(), g.mtime), (w.sha.as_ref(), w.mtime), "{p}");
    }
}

#[test]
fn two_thousand_small_files() {
    if !tools(&["bsdtar", "isovfy"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("many");
    for d in 0..20 {
        let dir = src.join(format!("dir{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(
                dir.join(format!("file-{f:03}.txt")),
                format!("{d}/{f}\n").repeat(f + 1),
            )
            .unwrap();
        }
    }
    let iso = tmp.path().join("many.iso");
    mkiso_ok(&src, &iso, &[], None);
    let want = describe_fs(&src);
    assert_eq!(want.len(), 2020);
    assert_eq!(describe_image(&iso), want);
    assert_eq!(extracted_by_bsdtar(&iso, &tmp.path().join("x")), want);
    assert!(run("isovfy", &[iso.to_str().unwrap()]).contains("No errors found"));
}

/// The tree bsdtar extracts from `iso` into the new directory `x`.
fn extracted_by_bsdtar(iso: &Path, x: &Path) -> std::collections::BTreeMap<String, Desc> {
    fs::create_dir(x).unwrap();
    run(
        "bsdtar",
        &["-xpf", iso.to_str().unwrap(), "-C", x.to_str().unwrap()],
    );
    describe_fs(x)
}

fn no_leftovers(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".iso"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn output_inside_the_source_tree_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let o = mkiso(&src, &src.join("docs/out.iso"), &[], None);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("inside the source tree"), "{err}");
    no_leftovers(&src.join("docs"));
}

/// `mkiso SRC -o - > SRC/out.iso`: the shell made the file, mkiso would read it while writing
/// it. Refused before anything is written, naming the file; the file stays (mkiso did not make
/// it), empty.
#[test]
fn standard_output_redirected_into_the_source_tree_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    // `mkiso SRC -o - > out`
    let to_stdout_as = |out: &Path| {
        std::process::Command::new(common::bin())
            .arg("mkiso")
            .arg(&src)
            .args(["-o", "-"])
            .stdout(fs::File::create(out).unwrap())
            .output()
            .unwrap()
    };
    let out = src.join("docs/out.iso");
    let o = to_stdout_as(&out);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "output standard output ({}) is inside the source tree",
            out.canonicalize().unwrap().display()
        )),
        "{err}"
    );
    assert_eq!(fs::metadata(&out).unwrap().len(), 0, "nothing written");

    // Outside the tree, the same redirection gets the image.
    let outside = tmp.path().join("out.iso");
    let o = to_stdout_as(&outside);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(fs::metadata(&outside).unwrap().len() > 0);
}

#[test]
fn fifos_and_sockets_are_skipped_with_a_warning_or_refused_when_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let src = dir_with(&tmp.path().join("src"), &[("keep.txt", b"kept")]);
    mkfifo(&src.join("a-fifo"));
    let _sock = std::os::unix::net::UnixListener::bind(src.join("a-socket")).unwrap();
    // Device nodes need root (CAP_MKNOD): /dev/null's numbers, and a block device's.
    let devices = is_root();
    if devices {
        for (name, kind, dev) in [
            ("a-chardev", libc::S_IFCHR, libc::makedev(1, 3)),
            ("a-blockdev", libc::S_IFBLK, libc::makedev(7, 200)),
        ] {
            let p = std::ffi::CString::new(src.join(name).to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            let rc = unsafe { libc::mknod(p.as_ptr(), kind | 0o600, dev) };
            assert_eq!(rc, 0, "mknod {name}: {}", std::io::Error::last_os_error());
        }
    } else {
        assert!(!common::in_ci(), "device nodes need root under CI");
        eprintln!("SKIP (part): device nodes need root");
    }
    let iso = tmp.path().join("out.iso");
    let o = mkiso(&src, &iso, &[], None);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("a-fifo") && err.contains("FIFO"), "{err}");
    assert!(err.contains("a-socket") && err.contains("socket"), "{err}");
    if devices {
        assert!(err.contains("a-chardev: a character device"), "{err}");
        assert!(err.contains("a-blockdev: a block device"), "{err}");
    }
    let got = describe_image(&iso);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["/keep.txt"]);

    fs::remove_file(&iso).unwrap();
    let o = mkiso(&src, &iso, &["--strict"], None);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        ["a-fifo", "a-socket", "a-chardev", "a-blockdev"]
            .iter()
            .any(|n| err.contains(n)),
        "{err}"
    );
    no_leftovers(tmp.path());
}

/// `--exclude`: a pattern without `/` leaves out every entry of that name at any depth (a
/// directory with all under it), one with `/` the paths it matches from the source root; what
/// is left out is never looked at (a FIFO left out is no error under --strict). The image holds
/// the source tree less what was left out, as isomgr's reader and bsdtar read it, and the same
/// entries as genisoimage's with -m for the names and -x for the paths.
#[test]
fn exclude_leaves_out_names_and_paths_as_genisoimage_does() {
    if !tools(&["bsdtar", "genisoimage"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree_with(
        &src,
        &[
            ("keep.txt", &b"kept"[..]),
            (".git/config", b"[core]"),
            (".git/objects/ab/cdef", b"object"),
            ("notes.orig", b"old"),
            ("sub/deep/file.orig", b"old"),
            ("sub/deep/file.txt", b"new"),
            ("sub/x.bak", b"kept: the path pattern is for isolinux/ only"),
            ("isolinux/isolinux.cfg", b"default linux"),
            ("isolinux/old.bak", b"left out"),
            ("isolinux/sub/deeper.bak", b"kept: * stays within one name"),
            ("other/.git", b"a file named .git goes too"),
        ],
    );
    mkfifo(&src.join("sub/pipe"));
    let patterns = [".git", "*.orig", "/isolinux/*.bak", "pipe"];
    let mut args = vec!["--strict"];
    for p in &patterns {
        args.extend(["--exclude", p]);
    }
    let iso = tmp.path().join("out.iso");
    let o = mkiso(&src, &iso, &args, Some("0"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("pipe"), "{err}");

    let left_out = |path: &str| {
        path.starts_with("/.git")
            || path.ends_with(".orig")
            || path == "/isolinux/old.bak"
            || path == "/other/.git"
            || path == "/sub/pipe"
    };
    let fifo_gone = {
        let dir = tmp.path().join("no-fifo");
        run("cp", &["-a", src.to_str().unwrap(), dir.to_str().unwrap()]);
        fs::remove_file(dir.join("sub/pipe")).unwrap();
        // the removal dated the copy's sub/ anew (a flake when the second turned over)
        let sub_mtime = fs::metadata(src.join("sub")).unwrap().modified().unwrap();
        let secs = sub_mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        set_mtime(&dir.join("sub"), secs as i64);
        dir
    };
    let want: std::collections::BTreeMap<_, _> = describe_fs(&fifo_gone)
        .into_iter()
        .filter(|(p, _)| !left_out(p))
        .collect();
    assert!(want.contains_key("/isolinux/sub/deeper.bak") && want.contains_key("/sub/x.bak"));
    let got = describe_image(&iso);
    assert_eq!(got, want, "isomgr's reader");
    let got = extracted_by_bsdtar(&iso, &tmp.path().join("x"));
    assert_eq!(got, want, "bsdtar's extraction");

    let theirs = tmp.path().join("genisoimage.iso");
    let old_bak = src.join("isolinux/old.bak");
    run(
        "genisoimage",
        &[
            "-quiet",
            "-J",
            "-r",
            "-m",
            ".git",
            "-m",
            "*.orig",
            "-m",
            "pipe",
            "-x",
            old_bak.to_str().unwrap(),
            "-o",
            theirs.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    assert_eq!(
        describe_image(&theirs).keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "genisoimage -m/-x leaves out other entries"
    );

    // Patterns that match nothing are usage errors; a boot image left out is named as such.
    for bad in ["", "/", "./"] {
        let o = mkiso(&src, &tmp.path().join("bad.iso"), &["--exclude", bad], None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {err}");
        assert!(
            err.contains("--exclude") && err.contains("matches nothing"),
            "{err}"
        );
    }
    let o = mkiso(
        &src,
        &tmp.path().join("bad.iso"),
        &["--boot", "isolinux/old.bak", "--exclude", "*.bak"],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("isolinux/old.bak") && err.contains("left out of the image"),
        "{err}"
    );
    assert!(!tmp.path().join("bad.iso").exists());
}

/// `--graft PATH_IN_IMAGE=SOURCE`: files and directories from outside SRC go into the image,
/// replacing a file and a whole directory of SRC, into new directories (made 0755, owned by
/// root, dated SOURCE_DATE_EPOCH), in order (a later graft goes into an earlier one). The image
/// is the tree so assembled by hand, as isomgr's reader, bsdtar and xorriso read it; nothing
/// is written to SRC or the sources. Errors name the graft and the cause.
#[test]
fn grafts_put_files_and_directories_from_elsewhere_into_the_image() {
    if !tools(&["bsdtar", "xorriso"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    tree_with(
        &src,
        &[
            ("keep.txt", &b"kept"[..]),
            ("isolinux/isolinux.cfg", b"default old"),
            ("isolinux/isolinux.bin", b"loader"),
            ("docs/old/a.txt", b"old docs"),
            ("docs/b.txt", b"old docs"),
        ],
    );
    let extra = t.join("extra");
    tree_with(
        &extra,
        &[
            ("isolinux.cfg", &b"default new"[..]),
            ("docs/new.txt", b"new docs"),
            ("ks/ks.cfg", b"install"),
            ("ks/post/script.sh", b"#!/bin/sh\n"),
        ],
    );
    std::os::unix::fs::symlink("ks.cfg", extra.join("ks/link.cfg")).unwrap();
    let x = |p: &str| extra.join(p).to_str().unwrap().to_string();
    let grafts = [
        format!("isolinux/isolinux.cfg={}", x("isolinux.cfg")),
        format!("/docs={}", x("docs")),
        format!("kickstart={}", x("ks")),
        format!("kickstart/extra/late.cfg={}", x("isolinux.cfg")),
        format!("new/deep/dir/ks.cfg={}", x("ks/ks.cfg")),
    ];
    let mut args = vec![];
    for g in &grafts {
        args.extend(["--graft", g.as_str()]);
    }
    let before = (describe_fs(&src), describe_fs(&extra));
    let iso = t.join("out.iso");
    mkiso_ok(&src, &iso, &args, Some("1700000000"));
    assert_eq!(
        (describe_fs(&src), describe_fs(&extra)),
        before,
        "sources unchanged"
    );

    // The same tree assembled by hand.
    let want_dir = t.join("want");
    let cp = |from: &Path, to: &Path| {
        run("cp", &["-a", from.to_str().unwrap(), to.to_str().unwrap()]);
    };
    cp(&src, &want_dir);
    let w = |p: &str| want_dir.join(p);
    cp(&extra.join("isolinux.cfg"), &w("isolinux/isolinux.cfg"));
    fs::remove_dir_all(w("docs")).unwrap();
    cp(&extra.join("docs"), &w("docs"));
    cp(&extra.join("ks"), &w("kickstart"));
    fs::create_dir(w("kickstart/extra")).unwrap();
    cp(&extra.join("isolinux.cfg"), &w("kickstart/extra/late.cfg"));
    fs::create_dir_all(w("new/deep/dir")).unwrap();
    cp(&extra.join("ks/ks.cfg"), &w("new/deep/dir/ks.cfg"));
    let mut want = describe_fs(&want_dir);
    for made in ["/kickstart/extra", "/new", "/new/deep", "/new/deep/dir"] {
        let d = want.get_mut(made).unwrap();
        (d.perm, d.uid, d.gid, d.mtime) = (0o755, 0, 0, Some(1_700_000_000));
    }
    // making kickstart/extra above dated the copy's kickstart/ anew; the image keeps ks/'s time
    want.get_mut("/kickstart").unwrap().mtime = describe_fs(&extra)["/ks"].mtime;
    assert_eq!(describe_image(&iso), want, "isomgr's reader");
    let out = t.join("bsdtar");
    fs::create_dir(&out).unwrap();
    run(
        "bsdtar",
        &["-xpf", iso.to_str().unwrap(), "-C", out.to_str().unwrap()],
    );
    let mut got = describe_fs(&out);
    for made in ["/kickstart/extra", "/new", "/new/deep", "/new/deep/dir"] {
        let d = got.get_mut(made).unwrap();
        (d.uid, d.gid) = (0, 0);
    }
    assert_eq!(got, want, "bsdtar's extraction");
    let listed: BTreeSet<String> = run("xorriso", &["-indev", iso.to_str().unwrap(), "-find", "/"])
        .lines()
        .filter(|l| l.starts_with('\''))
        .map(|l| l.trim_matches('\'').to_string())
        .filter(|p| p != "/")
        .collect();
    assert_eq!(
        listed,
        want.keys().cloned().collect::<BTreeSet<_>>(),
        "xorriso -find"
    );
    let again = t.join("again.iso");
    mkiso_ok(&src, &again, &args, Some("1700000000"));
    assert!(
        fs::read(&iso).unwrap() == fs::read(&again).unwrap(),
        "deterministic"
    );

    // Warnings about what was grafted in name where it is.
    let o = mkiso(
        &src,
        &t.join("no-rr.iso"),
        &[&args[..], &["--no-rock-ridge"]].concat(),
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("skipped symlink {}", x("ks/link.cfg"))),
        "{err}"
    );

    // A boot image grafted in over SRC's (a stand-in of 6 bytes here) is the one booted,
    // its hybrid signature checked and its place written into the isohybrid MBR.
    let (isolinux, isohdpfx) = (
        "/usr/lib/ISOLINUX/isolinux.bin",
        "/usr/lib/ISOLINUX/isohdpfx.bin",
    );
    if Path::new(isolinux).is_file() && Path::new(isohdpfx).is_file() {
        let hybrid = t.join("hybrid.iso");
        mkiso_ok(
            &src,
            &hybrid,
            &[
                "--graft",
                &format!("isolinux/isolinux.bin={isolinux}"),
                "--boot",
                "isolinux/isolinux.bin",
                "--boot-info-table",
                "--isohybrid-mbr",
                isohdpfx,
            ],
            None,
        );
        let report = run(
            "xorriso",
            &[
                "-indev",
                hybrid.to_str().unwrap(),
                "-find",
                "/isolinux/isolinux.bin",
                "-exec",
                "report_lba",
            ],
        );
        // File data lba: XT , LBA , BLOCKS , SIZE , 'PATH'
        let fields: Vec<&str> = report
            .lines()
            .find_map(|l| l.strip_prefix("File data lba:"))
            .unwrap_or_else(|| panic!("{report}"))
            .split(',')
            .map(str::trim)
            .collect();
        let size = fs::metadata(isolinux).unwrap().len();
        assert_eq!(fields[3].parse::<u64>().unwrap(), size, "{report}");
        let data = fs::read(&hybrid).unwrap();
        let mbr_lba = u32::from_le_bytes(data[432..436].try_into().unwrap());
        assert_eq!(mbr_lba, fields[1].parse::<u32>().unwrap() * 4, "{report}");
    } else {
        assert!(
            !common::in_ci(),
            "isolinux (package isolinux) is required under CI=true"
        );
        eprintln!("SKIP (part): {isolinux} or {isohdpfx} missing");
    }

    // Refusals: usage errors (exit 2), then errors naming the graft (exit 1); nothing left.
    for bad in ["=x", "/=x", "a=", "../a=x", "no-equals-sign"] {
        let o = mkiso(&src, &t.join("bad.iso"), &["--graft", bad], None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--graft"), "{bad}: {err}");
    }
    mkfifo(&t.join("fifo"));
    let fifo = format!("f={}", t.join("fifo").display());
    let missing = format!("m={}", t.join("missing").display());
    let under_a_file = format!("keep.txt/x={}", x("isolinux.cfg"));
    for (g, cause) in [
        (fifo.as_str(), "not a file or directory"),
        (missing.as_str(), "reading its metadata: No such file"),
        (
            under_a_file.as_str(),
            "keep.txt is not a directory in the image",
        ),
    ] {
        let o = mkiso(&src, &t.join("bad.iso"), &["--graft", g], None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{g}: {err}");
        assert!(err.contains(cause), "{g}: {err}");
        assert!(!t.join("bad.iso").exists());
    }
    let o = mkiso(
        &src,
        &extra.join("ks/out.iso"),
        &["--graft", &format!("k={}", x("ks"))],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("inside the source tree") && err.contains(&x("ks")),
        "{err}"
    );
    no_leftovers(&extra.join("ks"));
}

/// One source file put into the image under several names (a hard link inside SRC, one into a
/// grafted directory, the file grafted by itself) is stored once, as genisoimage stores hard
/// links: every name's data starts at the same block (xorriso's report), the image grows by
/// the names only, and every name reads back the file's bytes (isomgr's reader, bsdtar).
#[test]
fn a_file_grafted_again_or_hard_linked_is_stored_once() {
    if !tools(&["bsdtar", "xorriso"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, extra) = (t.join("src"), t.join("extra"));
    fs::create_dir_all(src.join("images")).unwrap();
    fs::create_dir_all(&extra).unwrap();
    let kernel = patterned((3 << 20) + 5, 9);
    fs::write(src.join("images/vmlinuz"), &kernel).unwrap();
    fs::hard_link(src.join("images/vmlinuz"), src.join("vmlinuz")).unwrap();
    fs::hard_link(src.join("images/vmlinuz"), extra.join("linux")).unwrap();
    fs::write(extra.join("same-bytes-other-file"), &kernel).unwrap();
    let plain = t.join("plain.iso");
    mkiso_ok(&src, &plain, &[], Some("1700000000"));
    let grafts = [
        format!("boot={}", extra.display()),
        format!("pxe/linux={}", src.join("vmlinuz").display()),
    ];
    let iso = t.join("out.iso");
    mkiso_ok(
        &src,
        &iso,
        &["--graft", &grafts[0], "--graft", &grafts[1]],
        Some("1700000000"),
    );

    let lba = xorriso_lbas(&iso);
    let names = ["/images/vmlinuz", "/vmlinuz", "/boot/linux", "/pxe/linux"];
    for n in names {
        assert_eq!(lba.get(n), lba.get("/vmlinuz"), "{n}: {lba:?}");
    }
    assert_ne!(
        lba.get("/boot/same-bytes-other-file"),
        lba.get("/vmlinuz"),
        "another file with the same bytes is a file of its own: {lba:?}"
    );
    let grown = fs::metadata(&iso).unwrap().len() - fs::metadata(&plain).unwrap().len();
    assert!(
        grown < 2 * kernel.len() as u64 - (1 << 20),
        "the image grew by {grown} bytes: the file stored more than once besides its copy"
    );

    let sha = Some(sha256_hex(&kernel));
    let in_image = describe_image(&iso);
    let extracted = extracted_by_bsdtar(&iso, &t.join("x"));
    for n in names.iter().chain(&["/boot/same-bytes-other-file"]) {
        assert_eq!(in_image[*n].sha, sha, "{n}: isomgr's reader");
        assert_eq!(extracted[*n].sha, sha, "{n}: bsdtar");
    }
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = dir_with(
        &tmp.path().join("src"),
        &[("ok.txt", b"ok"), ("locked.txt", b"no")],
    );
    fs::set_permissions(src.join("locked.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let iso = out_dir.join("out.iso");
    let o = if is_root() {
        // root reads anything: run as nobody, who can read the rest and write the output dir
        if !have_tool("setpriv") {
            return;
        }
        for p in [tmp.path(), &src, &out_dir] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
        }
        let exe = bin();
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .arg("mkiso")
            .arg(&src)
            .arg("-o")
            .arg(&iso)
            .output()
            .unwrap()
    } else {
        mkiso(&src, &iso, &[], None)
    };
    let err = String::from_utf8_lossy(&o.stderr);
    if is_root()
        && err.contains("Permission denied")
        && err.contains("isomgr")
        && !err.contains("locked.txt")
    {
        // nobody cannot reach the binary under this target dir: say so rather than pass
        assert!(!common::in_ci(), "cannot run the binary as nobody: {err}");
        eprintln!("SKIP: binary not executable as nobody: {err}");
        return;
    }
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("locked.txt") && err.contains("Permission denied"),
        "{err}"
    );
    no_leftovers(&out_dir);
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn full_disk_is_an_error_and_leaves_nothing() {
    if !common::root_for("the ENOSPC test (a small tmpfs)") {
        return;
    }
    // 1 MiB is written from the batch buffer; 4 MiB is found before it is copied (its blocks
    // are allocated first).
    for mib in [1, 4] {
        let tmp = tempfile::tempdir().unwrap();
        let src = dir_with(
            &tmp.path().join("src"),
            &[("big.bin", &vec![0x5a; mib << 20])],
        );
        let small = tmp.path().join("small");
        let _small = Tmpfs::mount(&small, "size=1m");
        let o = mkiso(&src, &small.join("out.iso"), &[], None);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("No space left on device") && err.contains("out.iso"),
            "{mib} MiB: {err}"
        );
        no_leftovers(&small);
    }
}

/// Bytes that differ at every offset (and between files), so a chunk copied to the wrong
/// place or twice shows.
fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed) ^ (k >> 13) as u8)
        .collect()
}

/// Files over 1 MiB are copied by two threads, chunk by chunk (on a file system that shares
/// no blocks): every byte lands where it belongs, holes stay holes, and other tools read the
/// same files back.
#[test]
fn large_files_copied_by_threads_read_back_exactly() {
    if !tools(&["bsdtar"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a-odd.bin"), patterned((40 << 20) + 4097, 1)).unwrap();
    fs::write(src.join("b-exact.bin"), patterned(32 << 20, 2)).unwrap();
    // One piece per thread, of 128 KiB buffers and less.
    fs::write(src.join("b-medium.bin"), patterned((3 << 19) + 4097, 4)).unwrap();
    fs::write(src.join("b-just-over.bin"), patterned((1 << 20) + 1, 5)).unwrap();
    // A hole of 50 MiB, 36 MiB of data, a hole to 100 MiB.
    let sparse = fs::File::create(src.join("c-sparse.bin")).unwrap();
    sparse.set_len(100 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &patterned(36 << 20, 3), 50 << 20).unwrap();
    drop(sparse);
    let iso = tmp.path().join("out.iso");
    mkiso_ok(&src, &iso, &[], None);
    let want = describe_fs(&src);
    assert_eq!(describe_image(&iso), want, "isomgr's reader");
    let got = extracted_by_bsdtar(&iso, &tmp.path().join("x"));
    assert_eq!(got, want, "bsdtar's extraction");
    // 72.5 MiB of data plus 36 of the sparse file's; its 64 MiB of holes take no space.
    use std::os::unix::fs::MetadataExt;
    let used = fs::metadata(&iso).unwrap().blocks() * 512;
    assert!(used < 115 << 20, "the image takes {used} bytes");
}

#[test]
fn cli_parses_the_documented_flags() {
    use clap::CommandFactory;
    isomgr::cli::Cli::command().debug_assert();
    let o = std::process::Command::new(bin())
        .args(["mkiso", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "-o",
        "-V",
        "--no-joliet",
        "--no-rock-ridge",
        "--rational",
        "--strict",
        "--exclude",
    ] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
    }
}

/// Starts `isomgr mkiso SRC -o OUT` with stderr on a new pseudo-terminal; returns the child
/// and the terminal's other end, from which what it shows is read.
fn mkiso_on_a_terminal(
    src: &Path,
    out: &Path,
    env: &[(&str, &str)],
    ignore_sigint: bool,
) -> (std::process::Child, fs::File) {
    use std::os::unix::process::CommandExt;
    let (master, slave) = openpty();
    let mut cmd = std::process::Command::new(bin());
    if ignore_sigint {
        // SAFETY: only signal(2), async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    let child = cmd
        .arg("mkiso")
        .arg(src)
        .arg("-o")
        .arg(out)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(slave))
        .spawn()
        .unwrap();
    // The parent's copy of the slave went with the Command: reads end (EIO) once the child
    // has closed its own.
    (child, fs::File::from(master))
}

/// Reads what the terminal shows until `stop` holds for it, or until it closes.
fn read_terminal(master: &mut fs::File, shown: &mut Vec<u8>, stop: impl Fn(&str) -> bool) {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    while !stop(&String::from_utf8_lossy(shown)) {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => shown.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
}

#[test]
fn progress_shows_on_a_terminal_and_nowhere_else() {
    let tmp = tempfile::tempdir().unwrap();
    let src = dir_with(&tmp.path().join("src"), &[("small.txt", b"small")]);
    fs::write(src.join("big.bin"), vec![0x5a; 24 << 20]).unwrap();
    let iso = tmp.path().join("out.iso");

    let (mut child, mut master) =
        mkiso_on_a_terminal(&src, &iso, &[("ISOMGR_PROGRESS_DELAY", "0")], false);
    let mut shown = Vec::new();
    read_terminal(&mut master, &mut shown, |_| false);
    let shown = String::from_utf8_lossy(&shown).into_owned();
    assert!(child.wait().unwrap().success(), "{shown}");
    // The total is known before the first byte is copied; the line is rewritten in place and
    // ends at 100% with a newline.
    assert!(shown.starts_with("\rmkiso: 0 / 24 MiB (0%)"), "{shown:?}");
    assert!(
        shown
            .trim_end_matches(['\r', '\n'])
            .ends_with("24 / 24 MiB (100%)   "),
        "{shown:?}"
    );
    assert!(shown.ends_with('\n'), "{shown:?}");
    assert!(!shown.contains("warning"), "{shown:?}");
    fs::remove_file(&iso).unwrap();

    // Not a terminal: nothing at all, whatever the delay.
    let mut c = std::process::Command::new(bin());
    c.arg("mkiso").arg(&src).arg("-o").arg(&iso);
    let o = c.env("ISOMGR_PROGRESS_DELAY", "0").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn an_interrupted_or_killed_build_leaves_nothing_behind() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = dir_with(&tmp.path().join("src"), &[("small.txt", b"small")]);
    // long enough to stop the build in the middle
    write_data(&src.join("data.bin"), 384);
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let iso = out_dir.join("out.iso");
    let listing = || -> Vec<String> {
        fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    // With O_TMPFILE the image has no name until it is complete; without (as on NFS, forced
    // here by a testing aid) it is OUT.tmp-PID, removed on the signals a handler can catch.
    let unnamed = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGKILL];
    let named = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    let cases = unnamed
        .iter()
        .map(|&s| (s, false))
        .chain(named.iter().map(|&s| (s, true)));
    for (sig, force_named) in cases {
        let mut env = vec![("ISOMGR_PROGRESS_DELAY", "0")];
        if force_named {
            env.push(("ISOMGR_NO_TMPFILE", "1"));
        }
        let mut stopped = false;
        for _attempt in 0..5 {
            let (mut child, mut master) = mkiso_on_a_terminal(&src, &iso, &env, false);
            // The first progress line comes once the image file is open and its metadata
            // written, before the first byte of file data.
            let mut shown = Vec::new();
            read_terminal(&mut master, &mut shown, |s| s.contains("(0%)"));
            let during = listing();
            // SAFETY: signals our own child, which has not been waited for.
            assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
            read_terminal(&mut master, &mut shown, |_| false);
            let status = child.wait().unwrap();
            let shown = String::from_utf8_lossy(&shown);
            if status.success() {
                // finished before the signal came: try again
                assert!(shown.contains("(100%)"), "{shown:?}");
                fs::remove_file(&iso).unwrap();
                continue;
            }
            let tmp_name = format!("out.iso.tmp-{}", child.id());
            if force_named {
                assert_eq!(during, [tmp_name], "signal {sig}");
            } else {
                assert!(during.is_empty(), "signal {sig}: {during:?} while building");
            }
            assert_eq!(status.signal(), Some(sig), "{status:?} {shown:?}");
            let left = listing();
            assert!(
                left.is_empty(),
                "signal {sig} (named: {force_named}) left {left:?}"
            );
            stopped = true;
            break;
        }
        assert!(
            stopped,
            "five builds all finished before signal {sig} reached them"
        );
    }

    // Started with SIGINT ignored (nohup, `&` in a script), it stays ignored.
    let (mut child, mut master) =
        mkiso_on_a_terminal(&src, &iso, &[("ISOMGR_PROGRESS_DELAY", "0")], true);
    let mut shown = Vec::new();
    read_terminal(&mut master, &mut shown, |s| s.contains("(0%)"));
    // SAFETY: signals our own child, which has not been waited for.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    read_terminal(&mut master, &mut shown, |_| false);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{status:?} {:?}",
        String::from_utf8_lossy(&shown)
    );
    assert_eq!(listing(), ["out.iso"]);
}
