//! SIGTERM and SIGINT, delivered as ordinary events instead of asynchronous interrupts.
//!
//! The signals are blocked in the main thread before any other thread exists (threads inherit
//! the mask), and one dedicated thread takes them with `sigwait`. Nothing runs in signal
//! context, so nothing here needs to be async-signal-safe.

use std::io;

/// The termination signals, blocked for this thread and every thread it starts afterwards.
pub struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks SIGTERM and SIGINT. Call before starting any thread: a thread started earlier
    /// keeps its own mask and would still be interrupted.
    pub fn block() -> io::Result<TerminationSignals> {
        // SAFETY: sigemptyset/sigaddset only write to the set we own, and pthread_sigmask
        // changes this thread's mask; none of them has other preconditions.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(TerminationSignals { set })
        }
    }

    /// Waits for the next SIGTERM or SIGINT and returns its name.
    pub fn wait(&self) -> io::Result<&'static str> {
        let mut signal: libc::c_int = 0;
        // SAFETY: the set was initialised in `block`; sigwait writes one int.
        let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(if signal == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        })
    }
}
