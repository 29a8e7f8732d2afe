//! `isomgr cat IMAGE PATH`: one file of an image to standard output, streamed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::iso9660::Kind;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image file or block device.
    pub image: PathBuf,
    /// Absolute path of the file inside the image (symlinks inside the image are followed).
    pub path: String,
}

/// Bytes copied per read.
const CHUNK: usize = 1 << 20;

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let image = super::open_image(&args.image)?;
    let ctx = || format!("{}: {}", args.image.display(), args.path);
    let entry = image
        .lookup_follow(&args.path)
        .with_context(|| args.image.display().to_string())?;
    if entry.kind == Kind::Dir {
        anyhow::bail!("{}: is a directory", ctx());
    }
    let mut buf = vec![0u8; CHUNK.min(entry.size.max(1) as usize)];
    let mut offset = 0u64;
    while offset < entry.size {
        let n = image.read_at(&entry, offset, &mut buf).with_context(ctx)?;
        if n == 0 {
            break;
        }
        out.write_all(buf.get(..n).unwrap_or_default())
            .context("writing to standard output")?;
        offset += n as u64;
    }
    out.flush().context("writing to standard output")?;
    Ok(())
}
