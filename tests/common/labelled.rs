//! Many small ISO images that differ only in their volume label, cheaply: one made by
//! genisoimage, the others copies with the label patched in place (the primary volume
//! descriptor's volume identifier, bytes 40..72, and the same field of every Joliet
//! supplementary descriptor in UCS-2 big-endian), as benches/watch_images.py does.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

const SECTOR: usize = 2048;
/// The one file in every image, and its content.
pub const HELLO: &str = "hello.txt";
pub const HELLO_TEXT: &str = "hello from a labelled image\n";

/// A base image and the offsets of its label fields (true: UCS-2).
pub struct Labelled {
    base: Vec<u8>,
    fields: Vec<(usize, bool)>,
}

impl Labelled {
    /// Runs genisoimage once, in `scratch`.
    pub fn new(scratch: &Path) -> Labelled {
        let src = scratch.join("labelled-src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join(HELLO), HELLO_TEXT).expect("write");
        let out = scratch.join("labelled-base.iso");
        let st = Command::new("genisoimage")
            .args(["-quiet", "-no-pad", "-J", "-R", "-V", "BASE", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("running genisoimage");
        assert!(st.success(), "genisoimage");
        let base = std::fs::read(&out).expect("reading the base image");
        let mut fields = Vec::new();
        for sector in 16..80 {
            let d = &base[sector * SECTOR..(sector + 1) * SECTOR];
            assert_eq!(&d[1..6], b"CD001", "volume descriptor at sector {sector}");
            match d[0] {
                255 => break,
                1 => fields.push((sector * SECTOR + 40, false)),
                2 if &d[88..90] == b"%/" => fields.push((sector * SECTOR + 40, true)),
                _ => {}
            }
        }
        Labelled { base, fields }
    }

    /// The image with volume label `label` (at most 16 ASCII characters, for Joliet).
    pub fn image(&self, label: &str) -> Vec<u8> {
        assert!(label.len() <= 16 && label.is_ascii());
        let mut buf = self.base.clone();
        for &(off, ucs2) in &self.fields {
            let raw: Vec<u8> = if ucs2 {
                let mut r: Vec<u8> = label.bytes().flat_map(|b| [0, b]).collect();
                while r.len() < 32 {
                    r.extend([0, b' ']);
                }
                r
            } else {
                let mut r = label.as_bytes().to_vec();
                r.resize(32, b' ');
                r
            };
            buf[off..off + 32].copy_from_slice(&raw);
        }
        buf
    }
}
