//! libcontainer leaves `lo` down in a new network namespace (runc brings it up) and
//! the container has no CAP_NET_ADMIN to do it itself, so wharf does, between build
//! and start, from a short-lived thread that enters the namespace.

use std::fs::File;
use std::io;

use nix::libc;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use std::os::fd::AsRawFd;

/// Sets IFF_UP on `lo` in the network namespace of process `pid`.
pub fn bring_up_loopback(pid: i32) -> io::Result<()> {
    let namespace = File::open(format!("/proc/{pid}/ns/net"))?;
    // setns changes only the calling thread, which ends right after.
    std::thread::spawn(move || -> io::Result<()> {
        setns(&namespace, CloneFlags::CLONE_NEWNET)?;
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain data; a zeroed one with the name set is a valid argument.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
        unsafe {
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
                return Err(io::Error::last_os_error());
            }
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the loopback thread panicked"))?
}
