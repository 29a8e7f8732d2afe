//! A file over 4 GiB is stored as several extents (ISO level 3); the reader joins them. The
//! image is made at run time by xorriso from a sparse file.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;

use isomgr::iso9660::Image;

#[test]
fn reads_across_the_extents_of_a_file_over_4_gib() {
    if !common::have_tool("xorriso") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("isomgr-multiextent")
        .tempdir_in("/var/tmp")
        .unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let size: u64 = (4 << 30) + 4096 + 123;
    let marks: [(u64, &[u8]); 4] = [
        (0, b"START"),
        ((4 << 30) - 2048 - 3, b"ACROSS-THE-FIRST-EXTENT"),
        ((4 << 30) + 100, b"SECOND"),
        (size - 4, b"END!"),
    ];
    {
        let f = File::create(src.join("huge.bin")).unwrap();
        f.set_len(size).unwrap();
        for (off, bytes) in marks {
            f.write_all_at(bytes, off).unwrap();
        }
    }
    let iso = dir.path().join("big.iso");
    common::output_ok(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-iso-level", "3", "-R", "-o"])
            .arg(&iso)
            .arg(&src),
    );

    let img = Image::open(File::open(&iso).unwrap()).unwrap();
    let e = img.lookup("/huge.bin").unwrap();
    assert_eq!(e.size, size);
    for (off, bytes) in marks {
        let mut buf = vec![0u8; bytes.len()];
        assert_eq!(img.read_at(&e, off, &mut buf).unwrap(), bytes.len());
        assert_eq!(&buf, bytes, "bytes at {off}");
    }
    // Zeros around the boundary, and a short read at the end.
    let mut buf = vec![1u8; 4096];
    let n = img.read_at(&e, (4 << 30) - 8192, &mut buf).unwrap();
    assert_eq!(n, 4096);
    assert!(buf.iter().all(|&b| b == 0));
    let n = img.read_at(&e, size - 2, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"D!");
    assert_eq!(img.read_at(&e, size, &mut buf).unwrap(), 0);

    // The CLI reads the same bytes.
    let out = common::isomgr(&["ls", "--json", iso.to_str().unwrap(), "/huge.bin"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["size"].as_u64(), Some(size));
}
