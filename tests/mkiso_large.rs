//! A sparse file over 4 GiB becomes a multi-extent file; the image stays sparse and the build
//! never reads the holes.

mod common;
#[path = "mkiso_support/mod.rs"]
mod support;

use common::have_tool;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::{Command, Stdio};
use support::*;

const SIZE: u64 = (4 << 30) + 5000;
/// (offset, bytes): the start, across the 4 GiB boundary and the 4 GiB extent limit, the end.
fn marks() -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, b"START-OF-FILE".to_vec()),
        (0xFFFF_F800 - 7, b"across-the-extent-limit".to_vec()),
        ((4 << 30) - 6, b"across-4GiB".to_vec()),
        (SIZE - 9, b"END-BYTES".to_vec()),
    ]
}

#[test]
fn sparse_file_over_4_gib_is_multi_extent_and_reads_back() {
    if !["isoinfo", "xorriso", "bsdtar"]
        .iter()
        .all(|t| have_tool(t))
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("small.txt"), b"small").unwrap();
    let big = src.join("big.img");
    let f = fs::File::create(&big).unwrap();
    f.set_len(SIZE).unwrap();
    for (off, bytes) in marks() {
        f.write_all_at(&bytes, off).unwrap();
    }
    drop(f);
    let iso = tmp.path().join("big.iso");
    let started = std::time::Instant::now();
    mkiso_ok(&src, &iso, &[], None);
    let took = started.elapsed();
    let md = fs::metadata(&iso).unwrap();
    assert!(md.len() > SIZE);
    assert!(
        md.blocks() * 512 < 64 << 20,
        "image is not sparse: {} bytes allocated",
        md.blocks() * 512
    );
    assert!(took.as_secs() < 20, "build read the holes? took {took:?}");

    // isomgr's reader
    let img = isomgr::iso9660::Image::open(fs::File::open(&iso).unwrap()).unwrap();
    let e = img.lookup("/big.img").unwrap();
    assert_eq!(e.size, SIZE);
    for (off, bytes) in marks() {
        let mut buf = vec![0u8; bytes.len() + 2];
        let want_len = (SIZE - off).min(buf.len() as u64) as usize;
        let mut got = 0;
        while got < want_len {
            got += img
                .read_at(&e, off + got as u64, &mut buf[got..want_len])
                .unwrap();
        }
        assert_eq!(&buf[..bytes.len()], &bytes[..], "reader at {off}");
    }

    // isoinfo: two records for the file, the first 0xFFFFF800 bytes long
    let l = run("isoinfo", &["-l", "-i", iso.to_str().unwrap()]);
    let recs: Vec<&str> = l.lines().filter(|x| x.contains("BIG.IMG;1")).collect();
    assert_eq!(recs.len(), 2, "{l}");
    assert!(recs[0].contains("4294965248"), "{l}");
    assert!(recs[1].contains(&(SIZE - 4294965248).to_string()), "{l}");

    // xorriso sees one file of the full size
    let x = run(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-find",
            "/big.img",
            "-exec",
            "lsdl",
        ],
    );
    assert!(x.contains(&SIZE.to_string()), "{x}");

    // bsdtar streams the whole file: size and the marked bytes
    let mut child = Command::new("bsdtar")
        .args(["-xOf", iso.to_str().unwrap(), "big.img"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let mut marks_seen = vec![Vec::new(); marks().len()];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (k, (off, bytes)) in marks().iter().enumerate() {
            let end = off + bytes.len() as u64;
            let (a, b) = ((*off).max(pos), end.min(pos + n as u64));
            if a < b {
                marks_seen[k].extend_from_slice(&buf[(a - pos) as usize..(b - pos) as usize]);
            }
        }
        pos += n as u64;
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(pos, SIZE, "bsdtar extracted a different size");
    for (k, (_, bytes)) in marks().iter().enumerate() {
        assert_eq!(&marks_seen[k], bytes, "bsdtar mark {k}");
    }
}
