//! Thread priorities on the validator: the tap path above everything else, background work
//! (verifying and applying a blacklist delta) below it, so that a passenger never waits on
//! the apply, even on a 2-core board where something else wants a core at that moment.
//!
//! - [`set_background_priority`]: `SCHED_IDLE` for the calling thread (it runs only when no
//!   normal thread wants the core, and a waking thread is placed on its core first); always
//!   allowed, since it only lowers a priority.
//! - [`set_realtime_priority`]: `SCHED_FIFO` for the calling thread; needs `CAP_SYS_NICE` or an
//!   `RLIMIT_RTPRIO` (systemd: `LimitRTPRIO=`). The tap loop blocks on the reader between
//!   taps, so it never holds a core it does not use.
//!
//! Elsewhere than Linux both are no-ops that report so.

/// The `SCHED_FIFO` priority the tap thread asks for: above the kernel's default of 0 for
/// normal threads, below the interrupt threads (50) that deliver the reader's bytes.
pub const TAP_REALTIME_PRIORITY: i32 = 10;

/// Lower the calling thread to background priority. Returns whether the system agreed.
pub fn set_background_priority() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_IDLE,
        // whose only allowed priority is 0.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "SCHED_IDLE refused");
        }
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Raise the calling thread to `SCHED_FIFO` at `priority` (1..=99).
pub fn set_realtime_priority(priority: i32) -> std::io::Result<()> {
    if !(1..=99).contains(&priority) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "SCHED_FIFO priority must be 1..=99",
        ));
    }
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "real-time priority is set on Linux only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_always_lower_itself_and_an_out_of_range_priority_is_refused() {
        let lowered = std::thread::spawn(set_background_priority).join().unwrap();
        assert_eq!(lowered, cfg!(target_os = "linux"));
        assert!(set_realtime_priority(0).is_err());
        assert!(set_realtime_priority(100).is_err());
    }
}
