//! Thread priorities on the validator: the tap path above everything else, background work
//! (verifying and applying a blacklist delta) below it, so that a passenger never waits on
//! the apply, even on a 2-core board where something else wants a core at that moment.
//!
//! - [`set_background_priority`]: `SCHED_IDLE` for the calling thread (it runs only when no
//!   normal thread wants the core, and a waking thread is placed on its core first); always
//!   allowed, since it only lowers a priority.
//! - [`set_uplink_priority`]: nice [`UPLINK_NICE`] for the calling thread (the validator
//!   program's uplink, which installs and swaps in what the depot sends down): a waking tap
//!   or scan thread preempts it at once instead of waiting out its time slice (4 ms at
//!   `HZ=250`), yet it still gets its share of an idle core, and it never starves while it
//!   holds the engine's lock for a swap (which `SCHED_IDLE` could).
//! - [`set_realtime_priority`]: `SCHED_FIFO` for the calling thread; needs `CAP_SYS_NICE` or an
//!   `RLIMIT_RTPRIO` (systemd: `LimitRTPRIO=`). The tap loop blocks on the reader between
//!   taps, so it never holds a core it does not use.
//!
//! - [`CpuSet`]: which cores a thread may run on, so that a helper woken by the tap thread
//!   (the ride-code certificate worker) is placed on another core instead of taking the
//!   tap thread's.
//!
//! Elsewhere than Linux all are no-ops that report so.

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

/// Nice value of the validator program's uplink thread (`-20..=19`, higher is lower priority).
pub const UPLINK_NICE: i32 = 10;

/// Lower the calling thread to nice [`UPLINK_NICE`] (Linux: the nice value is per thread),
/// or leave it where it is when it already runs lower (a validator started under `nice`).
/// Returns whether the system agreed; lowering is always allowed.
pub fn set_uplink_priority() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PRIO_PROCESS with who = 0 is the calling thread on Linux; no pointers. A
        // current value of -1 is a valid nice value as well as the error return; either way
        // the max below never raises the thread.
        let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let nice = UPLINK_NICE.max(current);
        // SAFETY: as above.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "uplink nice refused");
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

/// The kernel's id of the calling thread (for [`CpuSet::apply_to`]).
pub fn thread_id() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no arguments and cannot fail.
        Some(unsafe { libc::gettid() })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The core the calling thread is running on at this moment (it may move right after).
pub fn current_cpu() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sched_getcpu has no arguments; it returns -1 on error.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// A set of cores a thread may run on.
#[derive(Clone, Copy)]
pub struct CpuSet {
    #[cfg(target_os = "linux")]
    set: libc::cpu_set_t,
}

impl std::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(target_os = "linux")]
        {
            let cpus = (0..libc::CPU_SETSIZE as usize)
                // SAFETY: the index is below CPU_SETSIZE.
                .filter(|&c| unsafe { libc::CPU_ISSET(c, &self.set) });
            f.debug_set().entries(cpus).finish()
        }
        #[cfg(not(target_os = "linux"))]
        {
            f.write_str("CpuSet")
        }
    }
}

impl CpuSet {
    /// The cores the calling thread may run on now.
    pub fn of_calling_thread() -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: an all-zero cpu_set_t is a valid empty set; sched_getaffinity writes at
            // most size_of::<cpu_set_t>() bytes into it.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                let rc =
                    libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
                (rc == 0).then_some(CpuSet { set })
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// This set less `cpu`; `None` if nothing is left.
    pub fn without(self, cpu: usize) -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            let mut out = self;
            if cpu < libc::CPU_SETSIZE as usize {
                // SAFETY: the index is below CPU_SETSIZE.
                unsafe { libc::CPU_CLR(cpu, &mut out.set) };
            }
            // SAFETY: CPU_COUNT reads a valid set.
            (unsafe { libc::CPU_COUNT(&out.set) } > 0).then_some(out)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = cpu;
            Some(self)
        }
    }

    /// Restricts thread `tid` to this set. Returns whether the system agreed.
    pub fn apply_to(&self, tid: i32) -> bool {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: `set` is a valid cpu_set_t of the size passed.
            let rc = unsafe {
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &self.set)
            };
            if rc != 0 {
                tracing::debug!(tid, error = %std::io::Error::last_os_error(), "affinity refused");
            }
            rc == 0
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = tid;
            false
        }
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

    #[cfg(target_os = "linux")]
    #[test]
    fn the_uplink_priority_lowers_the_calling_thread_only() {
        // SAFETY: getpriority has no pointers; who = 0 is the calling thread on Linux.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice();
        let (lowered, in_thread) = std::thread::spawn(move || (set_uplink_priority(), nice()))
            .join()
            .unwrap();
        assert!(lowered);
        assert_eq!(in_thread, UPLINK_NICE.max(before));
        assert_eq!(nice(), before, "the calling thread only, not the process");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_helper_kept_off_a_core_runs_elsewhere() {
        let all = CpuSet::of_calling_thread().expect("affinity");
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            tx.send(thread_id().expect("linux")).unwrap();
            go_rx.recv().unwrap();
            (
                CpuSet::of_calling_thread().expect("affinity"),
                current_cpu(),
            )
        });
        let tid = rx.recv().unwrap();
        match all.without(0) {
            Some(rest) => {
                assert!(rest.apply_to(tid));
                go_tx.send(()).unwrap();
                let (now, cpu) = helper.join().unwrap();
                assert_eq!(format!("{now:?}"), format!("{rest:?}"));
                assert_ne!(cpu, Some(0));
            }
            None => {
                // A one-core machine: nothing is left without core 0.
                go_tx.send(()).unwrap();
                helper.join().unwrap();
            }
        }
    }
}
