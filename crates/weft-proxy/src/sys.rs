//! The proxy's only calls into libc (each `unsafe` block is here, with its safety argument):
//! the original destination of a redirected connection, the host's interface addresses, and the
//! clock-tick and page sizes `/proc` figures are counted in, and the open-file limit.

use std::net::{IpAddr, SocketAddr};

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
