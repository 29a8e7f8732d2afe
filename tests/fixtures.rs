//! The reader against images made by genisoimage and xorriso: every name, type, mode, time,
//! size, symlink target and content hash must match the tree each image was made from, and
//! every label must match what blkid reports.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use serde_json::Value;

fn ls_json(image: &str) -> BTreeMap<String, Value> {
    let out = isomgr(&["ls", "-R", "--json", image, "/"]);
    assert!(
        out.status.success(),
        "ls {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("ls --json is JSON");
    rows.into_iter()
        .map(|r| (r["path"].as_str().expect("path").to_owned(), r))
        .collect()
}

#[test]
fn ls_and_cat_match_every_fixture_tree() {
    for (image, manifest) in manifests() {
        let img = image.to_str().unwrap();
        let got = ls_json(img);
        let want: BTreeMap<String, &Value> = manifest["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["path"].as_str().unwrap().to_owned(), e))
            .collect();
        let got_paths: Vec<&String> = got.keys().collect();
        let want_paths: Vec<&String> = want.keys().collect();
        assert_eq!(got_paths, want_paths, "{img}: the listed paths differ");
        for (path, w) in &want {
            let g = &got[path];
            assert_eq!(g["type"], w["type"], "{img}:{path} type");
            for key in ["mode", "mtime", "target"] {
                if !w[key].is_null() {
                    assert_eq!(g[key], w[key], "{img}:{path} {key}");
                }
            }
            if w["type"] == "file" {
                assert_eq!(g["size"], w["size"], "{img}:{path} size");
                let out = isomgr(&["cat", img, path]);
                assert!(out.status.success(), "cat {img} {path}");
                if let Some(sum) = w["sha256"].as_str() {
                    assert_eq!(sha256_hex(&out.stdout), sum, "{img}:{path} content");
                }
            }
        }
    }
}

#[test]
fn scan_reports_what_blkid_reports() {
    if !have_tool("blkid") {
        return;
    }
    for (image, manifest) in manifests() {
        let img = image.to_str().unwrap();
        let out = isomgr(&["scan", "--json", img]);
        assert!(out.status.success(), "scan {img}");
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let row = &rows[0];
        let blkid = |tag: &str| {
            let o = Command::new("blkid")
                .args(["-p", "-o", "value", "-s", tag, img])
                .output()
                .unwrap();
            let s = String::from_utf8(o.stdout)
                .unwrap()
                .trim_end_matches('\n')
                .to_owned();
            (!s.is_empty()).then_some(s)
        };
        assert_eq!(
            row["label"].as_str().map(str::to_owned),
            blkid("LABEL"),
            "{img}: label"
        );
        assert_eq!(
            row["fs"].as_str().map(str::to_owned),
            blkid("TYPE"),
            "{img}: fs"
        );
        assert_eq!(row["bootable"], manifest["bootable"], "{img}: bootable");
        let mut ext: Vec<&str> = row["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut want: Vec<&str> = manifest["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        ext.sort();
        want.sort();
        assert_eq!(ext, want, "{img}: extensions");
        assert_eq!(row["complete"], true, "{img}: complete");
        assert_eq!(
            row["size"].as_u64(),
            Some(std::fs::metadata(&image).unwrap().len())
        );
    }
}

#[test]
fn scan_of_a_directory_names_every_image_once_and_skips_the_rest() {
    let dir = fixtures();
    let out = isomgr(&["scan", "--json", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), manifests().len());
    let mut names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "names are unique");
    for name in names {
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b)));
    }
    for key in [
        "path",
        "label",
        "name",
        "size",
        "volume_size",
        "fs",
        "extensions",
        "bootable",
        "complete",
    ] {
        assert!(rows[0].get(key).is_some(), "scan --json has {key}");
    }
}

#[test]
fn long_listing_shows_modes_owners_and_link_targets() {
    let img = fixtures().join("symlinks-modes.iso");
    let out = isomgr(&["ls", "-l", img.to_str().unwrap(), "/"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("-rws")),
        "setuid shown as s:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with('l') && l.contains(" -> ")),
        "{text}"
    );
    assert!(text.contains(" 1234 "), "uid 1234 shown:\n{text}");
}

#[test]
fn errors_name_the_image_and_the_cause_with_exit_1() {
    let img = fixtures().join("rr-joliet.iso");
    let img = img.to_str().unwrap();
    let out = isomgr(&["cat", img, "/no/such/file"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(img) && err.contains("/no") && err.contains("no such file"),
        "{err}"
    );

    let out = isomgr(&["cat", img, "/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));

    let out = isomgr(&["ls", "/nonexistent.iso"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent.iso") && err.contains("No such file"),
        "{err}"
    );

    let not_image = fixtures().join("make-fixtures.sh");
    let out = isomgr(&["scan", not_image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an ISO9660 or UDF image"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(isomgr(&["ls"]).status.code(), Some(2));
    assert_eq!(isomgr(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(isomgr(&["scan"]).status.code(), Some(2));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    if !have_tool("genisoimage") {
        return;
    }
    // Output well past the pipe buffer, so isomgr really writes into a closed pipe.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big.bin"), vec![7u8; 8 << 20]).unwrap();
    let img = dir.path().join("big.iso");
    let ok = Command::new("genisoimage")
        .args(["-quiet", "-R", "-o"])
        .arg(&img)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "\"{}\" cat {} /big.bin | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}",
                bin().display(),
                img.display()
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cat_follows_symlinks_inside_the_image_only() {
    let img = fixtures().join("symlinks-modes.iso");
    let img = img.to_str().unwrap();
    // An absolute link to /etc/hostname resolves inside the image, where it does not exist.
    let listing = ls_json(img);
    let abs = listing
        .values()
        .find(|r| r["target"].as_str().is_some_and(|t| t.starts_with("/etc")))
        .expect("fixture has an absolute symlink");
    let out = isomgr(&["cat", img, abs["path"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}

/// Many directories, so that every scanning thread takes some (workers open each directory
/// again in a descriptor table of their own): every image is reported once, with its path,
/// and equal labels get `-2`, `-3`... in walk order.
#[test]
fn scan_of_many_directories_reports_every_image_once() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fixtures().join("plain.iso");
    let (dirs, per_dir) = (30, 100);
    for d in 0..dirs {
        let dir = tmp.path().join(format!("d{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..per_dir {
            std::fs::hard_link(&image, dir.join(format!("i{f:03}.iso"))).unwrap();
        }
    }
    let out = isomgr(&["scan", "--json", tmp.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), dirs * per_dir);
    for (k, row) in rows.iter().enumerate() {
        let (d, f) = (k / per_dir, k % per_dir);
        let want = tmp.path().join(format!("d{d:02}/i{f:03}.iso"));
        assert_eq!(row["path"].as_str(), want.to_str(), "row {k}");
        assert_eq!(row["label"], "ISOMGR_PLAIN", "row {k}");
        let name = if k == 0 {
            "ISOMGR_PLAIN".to_owned()
        } else {
            format!("ISOMGR_PLAIN-{}", k + 1)
        };
        assert_eq!(row["name"].as_str(), Some(name.as_str()), "row {k}");
    }
}

/// A tree with far more directories than the process may hold descriptors: the walk closes
/// each directory once it has read it, and the threads that probe hold one each, so every
/// image is still reported (this failed with "Too many open files" when the results kept
/// every directory open to the end).
#[test]
fn scan_of_more_directories_than_descriptors_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fixtures().join("plain.iso");
    let dirs = 300;
    for d in 0..dirs {
        let dir = tmp.path().join(format!("d{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::hard_link(&image, dir.join("a.iso")).unwrap();
    }
    let out = output_ok(
        Command::new("bash")
            .args(["-c", r#"ulimit -n 32 && exec "$0" "$@""#])
            .arg(bin())
            .args(["scan", "--json"])
            .arg(tmp.path()),
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), dirs);
    for (d, row) in rows.iter().enumerate() {
        let want = tmp.path().join(format!("d{d:03}/a.iso"));
        assert_eq!(row["path"].as_str(), want.to_str(), "row {d}");
    }
}

/// Files and directories named on the command line come out in the order given, however the
/// files are batched for the workers (more than one batch here), with a directory's images in
/// its place; a named file that is not an image is an error that names it, and the others are
/// still reported.
#[test]
fn scan_reports_named_files_and_directories_in_argument_order() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fixtures().join("plain.iso");
    let mut args: Vec<String> = vec!["scan".into(), "--json".into()];
    let mut want = Vec::new();
    for k in 0..70 {
        let p = tmp.path().join(format!("f{k:02}.iso"));
        std::fs::hard_link(&image, &p).unwrap();
        args.push(p.to_str().unwrap().into());
        want.push(p);
    }
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    for k in 0..3 {
        std::fs::hard_link(&image, dir.join(format!("i{k}.iso"))).unwrap();
        want.push(dir.join(format!("i{k}.iso")));
    }
    args.push(dir.to_str().unwrap().into());
    let not_image = fixtures().join("make-fixtures.sh");
    args.push(not_image.to_str().unwrap().into());
    let last = tmp.path().join("z.iso");
    std::fs::hard_link(&image, &last).unwrap();
    args.push(last.to_str().unwrap().into());
    want.push(last);

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = isomgr(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(not_image.to_str().unwrap()) && err.contains("not an ISO9660 or UDF image"),
        "{err}"
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), want.len());
    for (k, (row, path)) in rows.iter().zip(&want).enumerate() {
        assert_eq!(row["path"].as_str(), path.to_str(), "row {k}");
        let name = match k {
            0 => "ISOMGR_PLAIN".to_owned(),
            _ => format!("ISOMGR_PLAIN-{}", k + 1),
        };
        assert_eq!(row["name"].as_str(), Some(name.as_str()), "row {k}");
    }
}
