//! The only `unsafe` in this crate: the ioctls that attach a TUN
//! interface and set it up (Linux). Each call passes a zeroed, correctly
//! sized `ifreq` that lives across the call, and checks the result; no
//! pointer outlives its call. Everything else (the raw GRE socket, reading
//! and writing packets) goes through safe `socket2` and `std::fs::File`.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    // SAFETY: ifreq is plain old data (a name array and a union of
    // integers and sockaddrs); all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn check(rc: libc::c_int, what: &str, name: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what} {name}: {e}")));
    }
    Ok(())
}

/// Opens `/dev/net/tun` and attaches it to the TUN interface `name`
/// (created if missing; an existing persistent TUN of that name is
/// reused), without packet information headers: each read or write is
/// one IP packet. The interface lives as long as the file (unless it was
/// made persistent beforehand).
pub fn open_tun(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req`
    // is, for the duration of the call; the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    check(
        rc,
        "cannot attach TUN (is it another kind of interface?)",
        name,
    )?;
    Ok(file)
}

fn control_socket() -> io::Result<OwnedFd> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    Ok(s.into())
}

/// Sets the interface up (IFF_UP).
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write one `ifreq`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    check(rc, "cannot read the flags of", name)?;
    // SAFETY: the kernel just wrote the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) };
    check(rc, "cannot set up", name)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes; the kernel reads
    // the family first and then the address as a sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Gives the interface `ip`/32 (replacing its primary address). nftables'
/// `redirect` sends a packet to the primary address of the interface it
/// arrived on and drops it when there is none.
pub fn set_address(name: &str, ip: Ipv4Addr) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(ip);
    // SAFETY: SIOCSIFADDR reads one `ifreq`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &mut req) };
    check(rc, "cannot set the address of", name)?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::BROADCAST);
    // SAFETY: SIOCSIFNETMASK reads one `ifreq`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK, &mut req) };
    check(rc, "cannot set the netmask of", name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn interface_names_are_checked() {
        assert!(super::ifreq("wccp0").is_ok());
        assert!(super::ifreq("").is_err());
        assert!(super::ifreq("a-name-that-is-too-long").is_err());
        assert!(super::ifreq("a\0b").is_err());
    }
}
