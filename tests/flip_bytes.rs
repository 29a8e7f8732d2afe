//! Property: any single-byte change to a real image gives `Ok` or `Err` from every reader
//! entry point, never a panic.

mod common;

use isomgr::iso9660::{probe, Entry, Image, Kind};
use proptest::prelude::*;

fn images() -> Vec<Vec<u8>> {
    common::manifests()
        .into_iter()
        .map(|(p, _)| std::fs::read(p).unwrap())
        .collect()
}

fn read_everything(data: Vec<u8>) {
    let _ = probe(&data);
    let Ok(img) = Image::open(data) else { return };
    let mut entries: Vec<Entry> = Vec::new();
    let _ = img.walk(&img.root(), "/", |_, e| {
        entries.push(e.clone());
        Ok(())
    });
    let mut buf = vec![0u8; 8192];
    for e in &entries {
        if e.kind == Kind::File {
            let _ = img.read_at(e, 0, &mut buf);
            let _ = img.read_at(e, e.size.saturating_sub(1), &mut buf);
        }
        let _ = img.lookup("/a/b/c");
        let _ = img.lookup_follow("/link");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]
    #[test]
    fn single_byte_changes_never_panic(which in 0usize..64, meta in any::<bool>(), pos in any::<u32>(), value in any::<u8>()) {
        let all = images();
        let mut data = all[which % all.len()].clone();
        // Half the cases aim at the metadata area (descriptors, path tables, directories).
        let i = if meta {
            32 * 1024 + (pos as usize % (64 * 1024))
        } else {
            pos as usize
        } % data.len();
        data[i] = value;
        read_everything(data);
    }
}
