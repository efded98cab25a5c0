//! Processes seen through `/proc`: their memory and open descriptors, their children (a `weft
//! run`'s proxy), and signals sent by pid — `SIGSTOP` held by a guard that resumes the process.

use crate::Error;

/// What a process holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident set size, KiB (`VmRSS` of `/proc/PID/status`).
    pub rss_kib: u64,
    /// Open file descriptors (entries of `/proc/PID/fd`).
    pub fds: u64,
}

/// `pid`'s resident memory and open descriptors.
pub fn usage(pid: u32) -> Result<Usage, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Error::io(format!("reading /proc/{pid}/status"), e))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| Error::Other(format!("/proc/{pid}/status has no VmRSS (a zombie?)")))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| Error::io(format!("listing /proc/{pid}/fd"), e))?
        .count() as u64;
    Ok(Usage { rss_kib, fds })
}

/// The program name of `pid` (`/proc/PID/comm`, at most 15 bytes).
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// The direct children of `pid` (every process whose parent it is), in pid order.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent(child) == Some(pid))
        .collect();
    out.sort_unstable();
    out
}

/// The parent of `pid`: the 4th field of `/proc/PID/stat`, after the `(comm)` that may hold
/// spaces.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The first child of `pid` running `program` (its `comm`, as the kernel truncates it to 15
/// bytes).
pub fn child_named(pid: u32, program: &str) -> Option<u32> {
    let wanted: String = program.chars().take(15).collect();
    children(pid)
        .into_iter()
        .find(|&c| comm(c).as_deref() == Some(wanted.as_str()))
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) -> Result<(), Error> {
    // SAFETY: kill(2) has no memory preconditions; a wrong pid is an error we report.
    if unsafe { libc::kill(pid as i32, signal) } != 0 {
        return Err(Error::io(
            format!("kill({pid}, {signal})"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A process stopped with `SIGSTOP` (frozen: it keeps its sockets and answers nothing); resumed
/// with `SIGCONT` on [`Frozen::thaw`] or drop.
pub struct Frozen {
    pid: u32,
    thawed: bool,
}

/// Freezes `pid` until the guard is thawed or dropped.
pub fn freeze(pid: u32) -> Result<Frozen, Error> {
    signal(pid, libc::SIGSTOP)?;
    Ok(Frozen { pid, thawed: false })
}

impl Frozen {
    pub fn thaw(mut self) -> Result<(), Error> {
        self.resume()
    }

    fn resume(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.thawed, true) {
            return Ok(());
        }
        signal(self.pid, libc::SIGCONT)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = self.resume() {
            eprintln!("testbed: resuming {}: {e}", self.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_its_own_usage_and_a_child_by_name_and_freezes_it() {
        let me = usage(std::process::id()).expect("own usage");
        assert!(me.rss_kib > 0 && me.fds >= 3, "{me:?}");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        assert_eq!(child_named(std::process::id(), "sleep"), Some(pid));
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
            stat[stat.rfind(')').expect(")") + 2..]
                .chars()
                .next()
                .expect("state")
        };
        let frozen = freeze(pid).expect("freeze");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while state() != 'T' && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(state(), 'T', "SIGSTOP stops the process");
        frozen.thaw().expect("thaw");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while state() == 'T' && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_ne!(state(), 'T', "SIGCONT resumes it");
        let _ = child.kill();
        let _ = child.wait();
        assert!(signal(pid, 0).is_err(), "a reaped pid is gone");
    }
}
