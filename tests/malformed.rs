//! Malformed images: each corruption gives a clean error that says where, never a panic, a
//! hang or an allocation that follows a length read from the image.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use isomgr::iso9660::{Entry, Error, Image, Kind};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(common::fixtures().join(name)).expect("fixture image")
}

/// Opens, walks the whole tree and reads every file; the first error, if any. Runs on a
/// thread with a deadline so a hang fails the test instead of stalling it.
fn exercise(image: Vec<u8>) -> Result<usize, Error> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| {
            let img = Image::open(image)?;
            let mut files = 0usize;
            let mut entries: Vec<Entry> = Vec::new();
            img.walk(&img.root(), "/", |_, e| {
                entries.push(e.clone());
                Ok(())
            })?;
            let mut buf = vec![0u8; 64 * 1024];
            for e in entries.iter().filter(|e| e.kind == Kind::File) {
                let mut off = 0;
                loop {
                    let n = img.read_at(e, off, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    off += n as u64;
                }
                files += 1;
            }
            Ok(files)
        })();
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the reader finished within 20 s (no hang)")
}

fn put_both32(img: &mut [u8], at: u64, v: u32) {
    let at = at as usize;
    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    img[at + 4..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn record_of(img: &[u8], path: &str) -> Entry {
    Image::open(img.to_vec()).unwrap().lookup(path).unwrap()
}

#[test]
fn good_fixture_reads_clean() {
    assert!(exercise(fixture("deep.iso")).unwrap() > 10);
}

#[test]
fn truncated_images_give_errors_not_panics() {
    let full = fixture("rr-joliet.iso");
    for cut in [
        0,
        1,
        2047,
        32 * 1024,
        34 * 1024,
        40 * 1024,
        full.len() / 2,
        full.len() - 1,
    ] {
        let r = exercise(full[..cut].to_vec());
        if cut < full.len() / 2 {
            assert!(r.is_err(), "cut at {cut} should fail");
        }
        if let Err(e) = r {
            let msg = e.to_string();
            assert!(!msg.is_empty());
        }
    }
    // Short of the first descriptor: says so.
    let e = exercise(full[..20_000].to_vec()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn directory_that_contains_its_own_parent_is_a_loop_error() {
    let mut img = fixture("deep.iso");
    let root = Image::open(img.clone()).unwrap().root();
    let root_sector = root.dir_sector().unwrap() as u32;
    // Point /a/b at the root directory's extent: /a/b now contains /a's parent.
    let b = record_of(&img, "/a/b");
    put_both32(&mut img, b.id + 2, root_sector);
    let e = exercise(img).unwrap_err();
    assert!(matches!(e, Error::Loop { .. }), "{e}");
    assert!(e.to_string().contains("directory loop"), "{e}");
}

#[test]
fn continuation_area_pointing_to_itself_is_an_error() {
    let mut img = fixture("long-names.iso");
    let opened = Image::open(img.clone()).unwrap();
    let mut with_ce = None;
    opened
        .walk(&opened.root(), "/", |_, e| {
            let at = e.id as usize;
            let len = img[at] as usize;
            if let Some(pos) = img[at..at + len].windows(2).position(|w| w == b"CE") {
                with_ce.get_or_insert((at, pos));
            }
            Ok(())
        })
        .unwrap();
    let (rec, pos) = with_ce.expect("long-names.iso has a record with a CE entry");
    // Point the CE at the record's own system use area, which holds the same CE.
    let sector = (rec / 2048) as u32;
    let offset = (rec % 2048 + pos) as u32;
    put_both32(&mut img, (rec + pos + 4) as u64, sector);
    put_both32(&mut img, (rec + pos + 12) as u64, offset);
    put_both32(&mut img, (rec + pos + 20) as u64, 28);
    let e = exercise(img).unwrap_err();
    assert!(e.to_string().contains("continuation area"), "{e}");
}

#[test]
fn extent_past_the_end_fails_on_read_with_the_place() {
    let mut img = fixture("rr-joliet.iso");
    let f = record_of(&img, "/future.txt");
    put_both32(&mut img, f.id + 2, 0x7FFF_FFFF);
    let e = exercise(img).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
}

#[test]
fn lengths_of_0xffffffff_are_refused_without_allocating() {
    // A directory claiming 4 GiB: refused by the directory size cap.
    let mut img = fixture("deep.iso");
    let a = record_of(&img, "/a");
    put_both32(&mut img, a.id + 10, 0xFFFF_FFFF);
    let e = exercise(img).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e}");

    // A file claiming 4 GiB: listed, but reading past the image end is an error.
    let mut img = fixture("rr-joliet.iso");
    let f = record_of(&img, "/future.txt");
    put_both32(&mut img, f.id + 10, 0xFFFF_FFFF);
    let e = exercise(img).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
}

#[test]
fn record_length_below_minimum_names_sector_and_offset() {
    let mut img = fixture("deep.iso");
    let a = record_of(&img, "/a");
    img[a.id as usize] = 3;
    let e = exercise(img).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("directory record at sector") && msg.contains("length 3 is below 34"),
        "{msg}"
    );
}

#[test]
fn bit_flipped_directory_records_never_panic() {
    let base = fixture("xorriso-deep.iso");
    let root = Image::open(base.clone()).unwrap().root();
    let start = root.dir_sector().unwrap() as usize * 2048;
    for i in 0..2048usize {
        let mut img = base.clone();
        img[start + i] ^= 1 << (i % 8);
        let _ = exercise(img);
    }
}
