//! Sending many datagrams to many destinations with one `sendmmsg(2)` (Linux).
//!
//! A media worker fans one packet out to every subscriber back to back; a syscall per
//! datagram was most of its CPU. This is the one place with `unsafe`: building the C
//! structures the call reads and making the call. Everything it points to lives on this
//! function's stack or in the caller's slice for the duration of the call. The socket option
//! below is the other Linux-only call on a worker's socket.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Sets the Don't Fragment bit on the IPv4 datagrams a worker sends, without the kernel
/// refusing a datagram over its cached path MTU (`IP_PMTUDISC_PROBE`).
///
/// Without DF the kernel must give every datagram sent from an unconnected socket an IP
/// identification from a shared table of counters (`__ip_select_ident`: a SipHash of the
/// addresses and an atomic add per datagram, 1–2 % of a fanning-out worker's CPU in `perf`);
/// with DF the id is zero. Media datagrams stay near 1,200 bytes (browsers packetize to
/// that, str0m to 1,150), under any real path's MTU, so nothing we send needs fragmenting
/// (a path narrower than that would drop such a datagram instead of splitting it).
pub(crate) fn set_dont_fragment(fd: RawFd) -> io::Result<()> {
    let value: libc::c_int = libc::IP_PMTUDISC_PROBE;
    // SAFETY: the option value is a c_int that lives across the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Most datagrams handed to the kernel in one call (the C arrays are on the stack).
pub(crate) const MAX_BATCH: usize = 64;

/// A socket address in the layout the kernel reads, v4 or v6.
#[repr(C)]
#[derive(Clone, Copy)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

fn raw_addr(addr: &SocketAddr) -> (RawAddr, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => {
            let v4 = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    // Octets are already in network order; keep them as they are in memory.
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            (
                RawAddr { v4 },
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let v6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            (
                RawAddr { v6 },
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// Sends `datagrams` in order on the non-blocking UDP socket `fd`, each to its own address.
/// Returns how many were dropped: a datagram the kernel refuses (full socket buffer,
/// unreachable address) is dropped alone, as a failed `sendto` would be, and the rest still go.
pub(crate) fn send_all(fd: RawFd, datagrams: &[(Vec<u8>, SocketAddr)]) -> u64 {
    let mut dropped = 0;
    let mut next = 0;
    while next < datagrams.len() {
        let end = datagrams.len().min(next + MAX_BATCH);
        match send_batch(fd, &datagrams[next..end]) {
            // The kernel sends a prefix; the rest is retried (the error, if any, for the
            // first unsent one shows up on that call).
            Ok(sent) if sent > 0 => next += sent,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The first datagram of the batch failed (EAGAIN, or an error of its own): drop
            // it, UDP is lossy, and carry on with the next.
            Ok(_) | Err(_) => {
                dropped += 1;
                next += 1;
            }
        }
    }
    dropped
}

/// One `sendmmsg` of at most [`MAX_BATCH`] datagrams: how many the kernel took.
fn send_batch(fd: RawFd, datagrams: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    debug_assert!(datagrams.len() <= MAX_BATCH);
    let count = datagrams.len().min(MAX_BATCH);
    // SAFETY: these are plain C structs (integers and null pointers) for which all-zero bytes
    // is a valid value; every field the kernel reads is filled in below.
    let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut iovecs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut addrs: [RawAddr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut lens: [libc::socklen_t; MAX_BATCH] = [0; MAX_BATCH];
    for (i, (data, to)) in datagrams.iter().take(count).enumerate() {
        let (addr, len) = raw_addr(to);
        addrs[i] = addr;
        lens[i] = len;
        iovecs[i] = libc::iovec {
            // The kernel only reads through this pointer (`sendmmsg` takes a const message).
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
    }
    // Pointers into `addrs` and `iovecs` are taken only once both are filled, so no later
    // write to those arrays can invalidate them.
    let addrs_ptr = addrs.as_mut_ptr();
    let iovecs_ptr = iovecs.as_mut_ptr();
    for (i, header) in headers.iter_mut().take(count).enumerate() {
        let header = &mut header.msg_hdr;
        // `i < count <= MAX_BATCH`: inside both arrays.
        header.msg_name = addrs_ptr.wrapping_add(i).cast();
        header.msg_namelen = lens[i];
        header.msg_iov = iovecs_ptr.wrapping_add(i);
        header.msg_iovlen = 1;
    }
    // SAFETY: `headers[..count]` point into `addrs`, `iovecs` and the callers' buffers, all of
    // which outlive the call; `count` ≤ the array length. The kernel writes only `msg_len`.
    let sent = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), count as libc::c_uint, 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn sends_every_datagram_in_order_to_its_destination() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // More than one batch, alternating destinations.
        let datagrams: Vec<(Vec<u8>, SocketAddr)> = (0..150u8)
            .map(|i| (vec![i; 100], if i % 2 == 0 { a_addr } else { b_addr }))
            .collect();
        assert_eq!(send_all(sender.as_raw_fd(), &datagrams), 0);
        let mut buf = [0u8; 200];
        for i in 0..150u8 {
            let socket = if i % 2 == 0 { &a } else { &b };
            let (len, from) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(from, sender.local_addr().unwrap());
            assert_eq!(&buf[..len], &[i; 100][..]);
        }
    }

    #[test]
    fn a_refused_datagram_is_dropped_alone() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a_addr = a.local_addr().unwrap();
        // An IPv6 destination on an IPv4 socket fails in the middle of the batch.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let datagrams = vec![(vec![1], a_addr), (vec![2], v6), (vec![3], a_addr)];
        assert_eq!(send_all(sender.as_raw_fd(), &datagrams), 1);
        let mut buf = [0u8; 8];
        assert_eq!(a.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 1);
        assert_eq!(a.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 3);
    }
}
