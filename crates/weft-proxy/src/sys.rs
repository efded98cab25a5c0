//! The proxy's only calls into libc (each `unsafe` block is here, with its safety argument):
//! the original destination of a redirected connection, the host's interface addresses, and the
//! clock-tick and page sizes `/proc` figures are counted in, the open-file limit, and the
//! scheduler slice of the proxy's threads.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::net::TcpStream;

/// `SO_ORIGINAL_DST` (netfilter): where the client meant to connect before an iptables REDIRECT.
/// Without a redirect Linux returns the local address or an error; both mean "none".
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    use std::os::fd::AsRawFd;
    const SO_ORIGINAL_DST: libc::c_int = 80;
    const IP6T_SO_ORIGINAL_DST: libc::c_int = 80;
    let fd = stream.as_raw_fd();
    let local = stream.local_addr().ok()?;
    // SAFETY: the buffers are plain C structs of the size passed in `len`; the kernel writes at
    // most `len` bytes and reports the written size back.
    unsafe {
        if local.is_ipv4() {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in).cast(),
                &mut len,
            );
            if rc != 0 || addr.sin_family != libc::AF_INET as libc::sa_family_t {
                return None;
            }
            let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(addr.sin_port))))
        } else {
            let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                IP6T_SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in6).cast(),
                &mut len,
            );
            if rc != 0 || addr.sin6_family != libc::AF_INET6 as libc::sa_family_t {
                return None;
            }
            let ip = std::net::Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(addr.sin6_port))))
        }
    }
}

/// Every address configured on this host's interfaces (empty if they cannot be listed).
pub fn interface_ips() -> Vec<IpAddr> {
    let mut ips = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then free exactly once.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return ips;
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        ips.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        ips.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    ips
}

/// `sysconf(_SC_CLK_TCK)` and `sysconf(_SC_PAGESIZE)`; a value of 0 or less means unknown.
pub fn clock_ticks_and_page_size() -> (i64, i64) {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as i64,
            libc::sysconf(libc::_SC_PAGESIZE) as i64,
        )
    }
}

/// `gethostname(2)`; `None` if it fails or is not UTF-8.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&buf[..len])
        .ok()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (as Go's runtime does) and
/// returns the soft limit in force: `(before, after)`. The soft limit is often 1024 outside
/// Kubernetes, which would hold ~500 proxied connections, far under the connection limits'
/// defaults; the hard limit is what the operator allowed.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we own and pass by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok((before, lim.rlim_cur))
    }
}

/// `struct sched_attr` of `sched_setattr(2)`, up to the utilization clamps (its size
/// `SCHED_ATTR_SIZE_VER1`); libc has no binding for it.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    /// For a SCHED_OTHER or SCHED_BATCH thread, Linux 6.12+ reads this as the thread's EEVDF
    /// slice (clamped to 0.1–100 ms); older kernels ignore it and report 0.
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// The calling thread's `sched_attr`.
fn sched_attr() -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as libc::c_uint;
    // SAFETY: the kernel writes at most `size` bytes into the struct we own (pid 0 = this
    // thread, flags 0).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            size,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// Asks the kernel for a scheduler slice of `slice` for the calling thread, and returns the one
/// in force after (the kernel clamps to 0.1–100 ms). Threads created later inherit it. Keeps
/// the thread's policy, nice value and reset-on-fork flag.
///
/// A shorter slice than the kernel's default (`base_slice_ns`, 0.7–3 ms by CPU count) gives a
/// thread that wakes an earlier EEVDF deadline, so it preempts a task that is mid-slice on its
/// CPU instead of queueing behind it; a proxy runs for microseconds per wake-up and shares its
/// CPU with the app it fronts. Fails with `Unsupported` before Linux 6.12 (no custom slices) and
/// for a real-time policy, and with the syscall's error where it is refused (a seccomp filter).
pub fn set_sched_slice(slice: Duration) -> io::Result<Duration> {
    let mut attr = sched_attr()?;
    if attr.sched_policy != SCHED_OTHER && attr.sched_policy != SCHED_BATCH {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the thread's scheduling policy ({}) has no slice",
                attr.sched_policy
            ),
        ));
    }
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    // Only reset-on-fork is a flag `sched_getattr` reports that `sched_setattr` should get back;
    // the others would ask for changes (utilization clamps, keeping parameters).
    attr.sched_flags &= SCHED_FLAG_RESET_ON_FORK;
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: the kernel reads `attr.size` bytes from the struct we own (pid 0 = this thread).
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    match sched_attr()?.sched_runtime {
        0 => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel has no per-thread slice (Linux 6.12 or later has)",
        )),
        ns => Ok(Duration::from_nanos(ns)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread of its own, so the test runner's threads keep their slice.
    #[test]
    fn a_thread_gets_the_slice_it_asks_for_within_the_kernels_bounds_and_passes_it_on() {
        std::thread::spawn(|| {
            let kernel = match set_sched_slice(Duration::from_micros(300)) {
                Err(e)
                    if e.kind() == io::ErrorKind::Unsupported
                        && std::env::var_os("CI").is_none() =>
                {
                    eprintln!("skipped: {e}");
                    return;
                }
                r => r.expect("Linux 6.12+ sets a per-thread slice"),
            };
            assert_eq!(kernel, Duration::from_micros(300));
            let child = std::thread::spawn(|| sched_attr().expect("sched_getattr").sched_runtime)
                .join()
                .unwrap();
            assert_eq!(child, 300_000, "a thread started after inherits the slice");
            // Below the kernel's floor: clamped to 0.1 ms, not refused.
            assert_eq!(
                set_sched_slice(Duration::from_micros(10)).unwrap(),
                Duration::from_micros(100)
            );
        })
        .join()
        .unwrap();
    }
}
