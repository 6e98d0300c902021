//! Work inside a container's network namespace, from a short-lived thread that
//! enters it (setns changes only the calling thread). libcontainer leaves `lo` down
//! in a new network namespace (runc brings it up) and the container has no
//! CAP_NET_ADMIN to do it itself, so wharf does, between build and start; health
//! checks of `network: none` containers connect from a socket made in there.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// Runs `work` on a thread that has entered the network namespace of process `pid`.
fn in_network_namespace<T: Send + 'static>(
    pid: i32,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    in_namespace(File::open(format!("/proc/{pid}/ns/net"))?, work)
}

/// Runs `work` on a thread that has entered the network namespace `namespace` (an
/// open /proc/<pid>/ns/net).
pub(super) fn in_namespace<T: Send + 'static>(
    namespace: File,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::spawn(move || -> io::Result<T> {
        setns(&namespace, CloneFlags::CLONE_NEWNET)?;
        work()
    })
    .join()
    .map_err(|_| io::Error::other("the network namespace thread panicked"))?
}

/// Sets IFF_UP on `lo` in the network namespace of process `pid`.
pub fn bring_up_loopback(pid: i32) -> io::Result<()> {
    in_network_namespace(pid, || {
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
}

/// An unconnected, non-blocking IPv4 TCP socket that belongs to the network
/// namespace of process `pid` (a socket keeps the namespace it was made in).
pub fn tcp_socket_in(pid: i32) -> io::Result<OwnedFd> {
    in_network_namespace(pid, || {
        Ok(socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?)
    })
}
