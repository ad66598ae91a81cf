//! `intake-powercut mount`: one filesystem, its power switch on SIGUSR1.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use intake_powercut::Power;

use crate::BoxError;

#[derive(Args)]
pub struct MountArgs {
    /// The directory that holds what is durable.
    #[arg(long)]
    backing: PathBuf,
    /// Where to mount it (an existing empty directory).
    #[arg(long)]
    mountpoint: PathBuf,
    /// Acknowledge every fsync and keep nothing: a disk that lies about
    /// flushing. Only to check that the power-loss test catches a loss.
    #[arg(long)]
    fsync_lies: bool,
}

/// The signals this tool handles, blocked in every thread and taken by
/// `sigwait` on one: no async-signal-safety constraints on the handler.
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

pub fn run(a: MountArgs) -> Result<ExitCode, BoxError> {
    let set = signal_set();
    // Blocked before any thread exists, so every thread inherits the mask.
    // SAFETY: pthread_sigmask reads `set` and changes this thread's mask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(format!("pthread_sigmask: error {rc}").into());
    }
    let power = Power::default();
    let mut session =
        intake_powercut::mount::session(&a.backing, &a.mountpoint, power.clone(), a.fsync_lies)?;
    let mut unmounter = session.unmount_callable();
    let where_ = a.mountpoint.display().to_string();
    std::thread::spawn(move || {
        // Bounded by the process: it ends when the session ends.
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid signal set; `sig` is written on success.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                continue;
            }
            if sig == libc::SIGUSR1 {
                let lost = power.cut();
                eprintln!("intake-powercut: power cut on {where_}: {lost} bytes not fsync'd are lost");
            } else {
                if let Err(e) = unmounter.unmount() {
                    eprintln!("intake-powercut: unmounting {where_}: {e}");
                }
                return;
            }
        }
    });
    println!("mounted {} on {}", a.backing.display(), a.mountpoint.display());
    let _ = std::io::stdout().flush();
    session.run()?;
    Ok(ExitCode::SUCCESS)
}
