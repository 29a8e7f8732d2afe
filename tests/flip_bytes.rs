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

/// The UDF fixtures' descriptor blocks (2048-byte blocks that start with a descriptor tag
/// whose checksum holds): the anchor, the volume descriptor sequences, the file set, file
/// entries and directories. Changes aimed there reach the UDF reader rather than being
/// rejected before it (the whole-image cases above rarely land in them). The bridge's tree
/// is shown through Rock Ridge, so there only identification reads the UDF side.
fn udf_descriptors() -> Vec<(Vec<u8>, Vec<usize>)> {
    ["udf-joliet.iso", "udf-bridge.iso"]
        .iter()
        .map(|name| {
            let data = std::fs::read(common::fixtures().join(name)).unwrap();
            let blocks = data
                .chunks_exact(2048)
                .enumerate()
                .filter(|(_, b)| {
                    let id = u16::from_le_bytes([b[0], b[1]]);
                    let sum = b[..16]
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != 4)
                        .fold(0u8, |s, (_, &v)| s.wrapping_add(v));
                    (1..=266).contains(&id) && b[4] == sum && b[..16].iter().any(|&v| v != 0)
                })
                .map(|(i, _)| i * 2048)
                .collect::<Vec<_>>();
            assert!(
                blocks.len() >= 10,
                "{name}: {} descriptor blocks",
                blocks.len()
            );
            (data, blocks)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]
    #[test]
    fn changes_to_udf_descriptors_never_panic(
        which in any::<bool>(),
        block in any::<u16>(),
        changes in proptest::collection::vec((16usize..2048, any::<u8>()), 1..4),
    ) {
        let all = udf_descriptors();
        let (data, blocks) = &all[usize::from(which)];
        let at = blocks[usize::from(block) % blocks.len()];
        let mut data = data.clone();
        for (i, value) in changes {
            data[at + i] = value;
        }
        read_everything(data);
    }
}
