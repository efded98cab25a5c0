//! What `weft` (`weft run`, `weft demo`) and the test bed (`weft-testbed`) both need from the
//! kernel around network namespaces and child processes, written once: a child that enters a
//! namespace, drops to a uid and dies with its parent ([`on_exec`]); a thread that works inside
//! a namespace ([`in_netns`]). Also the one reader of the proxies' Prometheus text
//! ([`prometheus`]), which both use too and which needs nothing but `std`.

pub mod prometheus;

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt as _;

/// What a child does between fork and exec, in this order (see [`on_exec`]).
#[derive(Clone, Copy, Debug)]
pub struct ChildSetup {
    /// Enter this network namespace: an open namespace file (`/run/netns/NAME`) that must stay
    /// open until the spawn returns.
    pub netns: Option<RawFd>,
    /// Run as this uid, with gid = uid and no supplementary groups.
    pub uid: Option<u32>,
    /// Sent to the child when the thread that spawned it dies (`PR_SET_PDEATHSIG`; set after
    /// the uid change, which clears it).
    pub death_signal: i32,
}

/// Registers `setup` as a `pre_exec` hook of `cmd`. The spawn fails with the OS error if a step
/// fails, and if the parent died before the death signal was armed (the child would otherwise
/// outlive it). Hooks run in the order they were registered.
pub fn on_exec(cmd: &mut std::process::Command, setup: ChildSetup) {
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (setns, setgroups, setgid, setuid, prctl, getppid)
    // run between fork and exec; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = setup.netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(uid) = setup.uid {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, setup.death_signal, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
}

/// Runs `f` on a fresh thread that has entered the network namespace open as `netns` (a socket
/// keeps the namespace it was created in, so what `f` makes there works from any thread).
pub fn in_netns<T: Send>(
    netns: RawFd,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns affects this thread only; `netns` is an open namespace file.
                if unsafe { libc::setns(netns, libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd as _;

    /// Entering a real namespace needs root (the root-only test bed and `weft run` tests do
    /// it); here, as any user: a descriptor that is not a namespace is refused, and the error
    /// comes back to the caller instead of a panic.
    #[test]
    fn a_descriptor_that_is_not_a_namespace_is_an_error() {
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        let err = in_netns(file.as_raw_fd(), || Ok(())).expect_err("not a netns");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    }

    /// The hook runs in the child before exec: with only the death signal the child starts;
    /// with a descriptor that is not a namespace the spawn itself fails with setns' error.
    #[test]
    fn the_child_setup_runs_before_exec() {
        let mut cmd = std::process::Command::new("true");
        on_exec(
            &mut cmd,
            ChildSetup {
                netns: None,
                uid: None,
                death_signal: libc::SIGKILL,
            },
        );
        assert!(cmd.status().expect("spawn").success());
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        let mut cmd = std::process::Command::new("true");
        on_exec(
            &mut cmd,
            ChildSetup {
                netns: Some(file.as_raw_fd()),
                uid: None,
                death_signal: libc::SIGKILL,
            },
        );
        let err = cmd.status().expect_err("setns on /dev/null");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    }
}
