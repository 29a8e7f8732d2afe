//! Mount helper for benchmarks and manual checks: serves images through the FUSE driver until
//! SIGTERM or SIGINT, then unmounts.
//!
//! `fuse_serve ROOT NAME=IMAGE...` prints `ready` on stdout once every medium is in the root.
//! Images may be files or block devices. `ISOMGR_LOG=debug` shows the driver's logs.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use isomgr::fuse::reopen::FdPool;
use isomgr::fuse::FuseDriver;
use isomgr::iso9660::Image;

fn main() {
    if let Err(e) = run() {
        eprintln!("fuse_serve: {e:#}");
        std::process::exit(1);
    }
}

/// Blocks SIGTERM and SIGINT in this thread (and so in every thread spawned after) and returns
/// the set, to be waited on with sigwait.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ISOMGR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args_os().skip(1);
    let Some(root) = args.next().map(PathBuf::from) else {
        bail!("usage: fuse_serve ROOT NAME=IMAGE...");
    };
    let mut media = Vec::new();
    // Every image stays open (a budget as large as the list).
    let pool = FdPool::new(usize::MAX);
    for arg in args {
        let arg = arg.to_string_lossy().into_owned();
        let Some((name, path)) = arg.split_once('=') else {
            bail!("{arg:?} is not NAME=IMAGE");
        };
        let file = File::open(path).with_context(|| format!("opening {path}"))?;
        let file = pool
            .adopt(file, path.as_ref())
            .with_context(|| format!("inspecting {path}"))?;
        let image = Image::open(file).with_context(|| format!("reading {path}"))?;
        media.push((name.to_owned(), Arc::new(image)));
    }
    let set = block_stop_signals();
    let driver = FuseDriver::mount(&root).with_context(|| format!("serving {}", root.display()))?;
    for (name, image) in media {
        driver
            .add(&name, image)
            .with_context(|| format!("adding {name}"))?;
    }
    println!("ready");
    std::io::stdout().flush().context("writing to stdout")?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set and `sig` a valid out-pointer.
    unsafe { libc::sigwait(&set, &mut sig) };
    driver
        .unmount()
        .with_context(|| format!("unmounting {}", root.display()))?;
    Ok(())
}
