//! Fuzz target: any bytes, as an image, through every reader entry point and what `ls --boot`
//! reads. Must never panic, hang or allocate without bound. Seed the corpus with
//! fixtures/*.iso.
#![no_main]

use isomgr::iso9660::{probe, Entry, Image, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    let _ = probe(&data);
    let Ok(img) = Image::open(data) else { return };
    let mut entries: Vec<Entry> = Vec::new();
    let mut links: Vec<String> = Vec::new();
    let _ = img.walk(&img.root(), "/", |p, e| {
        if entries.len() < 10_000 {
            entries.push(e.clone());
        }
        if e.kind == Kind::Symlink && links.len() < 8 {
            links.push(p.to_owned());
        }
        Ok(())
    });
    for p in &links {
        let _ = img.lookup_follow(p);
    }
    let mut buf = vec![0u8; 4096];
    for e in &entries {
        if e.kind == Kind::File {
            let _ = img.read_at(e, 0, &mut buf);
            let _ = img.read_at(e, e.size.saturating_sub(1), &mut buf);
        }
    }
    let _ = img.lookup_follow("/a/b/link");
    // what `ls --boot` reads: the catalog, the boot images' copies, the MBR and GPT
    let _ = isomgr::iso9660::eltorito::read(&img, img.info().boot_catalog);
});
