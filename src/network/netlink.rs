//! A small, synchronous route netlink client: the kernel calls that build wharf's
//! bridge network.
//!
//! Why netlink, and why this shape:
//! - Per-replica set-up must cost a few milliseconds, so no `ip` subprocess on the
//!   hot path: measured on the project machine, about 1.5 ms per container over
//!   netlink against 6.6 ms with one `ip -b` batch.
//! - Synchronous, blocking sockets, as netavark (podman's network stack) does:
//!   wharf has no async runtime, and each call is one request and one answer.
//! - `netlink-packet-route`, `netlink-packet-core` and `netlink-sys` are the
//!   versions libcontainer already compiles, so this adds no new crate. `rtnetlink`
//!   would bring tokio and second copies of netlink-packet-route and nix.
//!
//! A netlink socket belongs to the network namespace of the thread that opened it,
//! and keeps it. For the container's side (lo, eth0, address, default route), open
//! the [`Rtnl`] on a thread that has entered the container's namespace (see
//! `netns`).
//!
//! The calls, in the order a bridge container uses them:
//! - host, once: [`Rtnl::create_bridge`], [`Rtnl::add_address`] (the gateway),
//!   [`Rtnl::set_up`];
//! - host, per container: [`Rtnl::create_veth`] (the peer appears straight in the
//!   container's namespace), [`Rtnl::link_index`] of the host end,
//!   [`Rtnl::set_hairpin`] on it (a container reaching itself through a published
//!   port or service address, with br_netfilter on);
//! - container namespace: [`Rtnl::set_up`] of lo and eth0, [`Rtnl::add_address`],
//!   then [`Rtnl::add_default_route`] (it needs eth0 up and addressed);
//! - removal: none; the pair goes with the container's namespace.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, LinkMessageBuffer,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::libc;
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::TimeVal;

/// Dump datagrams are at most 32 KiB and the single answers used here (one link)
/// far smaller, so every answer fits whole; a larger one is refused, not cut.
const RECEIVE_BUFFER: usize = 64 * 1024;
/// A request gets its answer in a couple of datagrams; this many means something
/// is wrong, and the request fails instead of reading forever.
const MAX_DATAGRAMS: usize = 64;
/// How long one receive waits. The kernel answers in well under a millisecond,
/// unless the rtnl lock is busy (namespace teardown under load).
const RECEIVE_TIMEOUT_SECONDS: libc::time_t = 10;
/// `IFNAMSIZ - 1`: the longest interface name the kernel takes.
const MAX_NAME_LEN: usize = 15;
/// RTM_NEWLINK from uapi/linux/rtnetlink.h: the kernel's answer to RTM_GETLINK
/// (netlink-packet-route keeps its constants private).
const RTM_NEWLINK: u16 = 16;

/// A route netlink socket in the network namespace of the thread that opened it.
pub(super) struct Rtnl {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

/// One answer to a request, other than the final acknowledgement.
struct Reply {
    message_type: u16,
    payload: Vec<u8>,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        // Connected to the kernel (port 0): only its answers reach this socket.
        socket.connect(&SocketAddr::new(0, 0))?;
        // A receive that never returns would hang the whole apply.
        setsockopt(
            &socket,
            ReceiveTimeout,
            &TimeVal::new(RECEIVE_TIMEOUT_SECONDS, 0),
        )?;
        Ok(Rtnl {
            socket,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// The index of link `name`, None when there is none.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        check_name(name)?;
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = match self.request(RouteNetlinkMessage::GetLink(link), 0) {
            Ok(replies) => replies,
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(error) => return Err(error),
        };
        // Only the fixed header is read: an attribute this crate version cannot
        // parse (a newer kernel) must not break a lookup by name.
        let reply = replies
            .iter()
            .find(|reply| reply.message_type == RTM_NEWLINK)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("netlink: no link message in the answer for {name}"),
                )
            })?;
        let link = LinkMessageBuffer::new_checked(&reply.payload[..]).map_err(invalid_data)?;
        Ok(Some(link.link_index()))
    }

    /// Creates bridge `name` (Ok(false) if it already existed, checked by EEXIST),
    /// returns whether created. EEXIST also covers a link of another kind with that
    /// name; the caller decides whether that matters.
    pub fn create_bridge(&mut self, name: &str, mac: [u8; 6]) -> io::Result<bool> {
        check_name(name)?;
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        // A fixed MAC: a bridge otherwise takes its lowest port's, which changes as
        // containers come and go and leaves stale neighbour entries everywhere.
        link.attributes.push(LinkAttribute::Address(mac.to_vec()));
        link.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        match self.request(
            RouteNetlinkMessage::NewLink(link),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(true),
            Err(error) if error.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Deletes link `index` (a veth: its peer goes with it); one that is gone
    /// already is no error.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(link), 0) {
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Sets link up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        // change_mask says which flags to touch: IFF_UP only.
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(link), 0)?;
        Ok(())
    }

    /// Adds IPv4 address/prefix to the link (EEXIST is Ok).
    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let message = address_message(index, address, prefix)?;
        match self.request(message, NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Creates a veth pair: `host_name` on this side, enslaved to `bridge`
    /// (controller index), and its peer named `peer_name` directly inside the
    /// network namespace `netns` (an fd of /proc/<pid>/ns/net).
    ///
    /// The host end is created up (as `ip link add ... up`), which saves a round
    /// trip; the peer stays down until it is configured from inside. An fd rather
    /// than a pid: a pid can be reused, an open namespace cannot change.
    pub fn create_veth(
        &mut self,
        host_name: &str,
        bridge: u32,
        peer_name: &str,
        peer_mac: [u8; 6],
        netns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let message = veth_message(host_name, bridge, peer_name, peer_mac, netns)?;
        self.request(message, NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// Turns hairpin mode on for a bridge port (a container reaching itself through
    /// a published port).
    pub fn set_hairpin(&mut self, index: u32) -> io::Result<()> {
        self.request(hairpin_message(index), 0)?;
        Ok(())
    }

    /// Adds the default route via `gateway`. EEXIST is an error: a new namespace
    /// has no default route, and an existing one may point elsewhere.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.destination_prefix_length = 0;
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.header.protocol = RouteProtocol::Static;
        route.header.scope = RouteScope::Universe;
        route.header.kind = RouteType::Unicast;
        route
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(
            RouteNetlinkMessage::NewRoute(route),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Sends `message` with REQUEST|ACK and `flags`, then reads until the kernel's
    /// acknowledgement (or error, or end of a dump) for this sequence number, and
    /// returns what came before it. Always asking for the ACK is what makes the
    /// end of every answer visible.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<Reply>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let packet = encode(message, NLM_F_ACK | flags, sequence);
        let sent = self.socket.send(&packet, 0)?;
        if sent != packet.len() {
            return Err(io::Error::other(format!(
                "netlink: sent {sent} of {} bytes",
                packet.len()
            )));
        }
        let mut replies = Vec::new();
        for _ in 0..MAX_DATAGRAMS {
            // MSG_TRUNC makes recv return the datagram's real length, so a
            // truncated one is seen and refused instead of misparsed.
            let length = match self.socket.recv(&mut &mut self.buffer[..], libc::MSG_TRUNC) {
                Ok(length) => length,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("netlink: no answer in {RECEIVE_TIMEOUT_SECONDS} s"),
                    ))
                }
                Err(error) => return Err(error),
            };
            let datagram = self.buffer.get(..length).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("netlink: a {length}-byte answer does not fit {RECEIVE_BUFFER} bytes"),
                )
            })?;
            if scan(datagram, sequence, &mut replies)? {
                return Ok(replies);
            }
        }
        Err(io::Error::other(format!(
            "netlink: no acknowledgement after {MAX_DATAGRAMS} datagrams"
        )))
    }
}

/// Reads the messages of one datagram. Those for `sequence` are kept in `replies`;
/// others (a late answer to a request that timed out) are skipped. Returns
/// Ok(true) at the end of the answer: an ACK or NLMSG_DONE; an error message
/// becomes the matching `io::Error`.
fn scan(mut datagram: &[u8], sequence: u32, replies: &mut Vec<Reply>) -> io::Result<bool> {
    while !datagram.is_empty() {
        // new_checked guarantees 16 <= length <= datagram.len(), so the header
        // getters and payload() below cannot panic.
        let message = NetlinkBuffer::new_checked(datagram).map_err(invalid_data)?;
        let length = message.length() as usize;
        if message.sequence_number() == sequence {
            let payload = message.payload();
            match message.message_type() {
                NLMSG_ERROR => {
                    let error = ErrorBuffer::new_checked(payload).map_err(invalid_data)?;
                    return match error.code() {
                        None => Ok(true),
                        // The kernel sends -errno.
                        Some(code) => {
                            Err(io::Error::from_raw_os_error(code.get().saturating_abs()))
                        }
                    };
                }
                NLMSG_DONE => {
                    // A dump can fail part way: NLMSG_DONE then carries -errno.
                    let code = payload
                        .get(..4)
                        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
                        .map_or(0, i32::from_ne_bytes);
                    return if code < 0 {
                        Err(io::Error::from_raw_os_error(code.saturating_abs()))
                    } else {
                        Ok(true)
                    };
                }
                NLMSG_NOOP => {}
                NLMSG_OVERRUN => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink: the kernel reported an overrun",
                    ))
                }
                message_type => replies.push(Reply {
                    message_type,
                    payload: payload.to_vec(),
                }),
            }
        }
        // Messages are 4-byte aligned within a datagram.
        let next = length.saturating_add(3) & !3;
        datagram = datagram.get(next..).unwrap_or(&[]);
    }
    Ok(false)
}

/// The bytes of one request.
fn encode(message: RouteNetlinkMessage, flags: u16, sequence: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    // Fills in the length and message type.
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// One RTM_NEWLINK makes both ends: the peer's attributes ride inside
/// VETH_INFO_PEER, with the namespace fd, so eth0 never exists on the host.
fn veth_message(
    host_name: &str,
    bridge: u32,
    peer_name: &str,
    peer_mac: [u8; 6],
    netns: BorrowedFd<'_>,
) -> io::Result<RouteNetlinkMessage> {
    check_name(host_name)?;
    check_name(peer_name)?;
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(peer_name.to_owned()));
    peer.attributes
        .push(LinkAttribute::Address(peer_mac.to_vec()));
    peer.attributes
        .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
    let mut host = LinkMessage::default();
    host.header.flags = LinkFlags::Up;
    host.header.change_mask = LinkFlags::Up;
    host.attributes
        .push(LinkAttribute::IfName(host_name.to_owned()));
    // IFLA_MASTER: enslaved to the bridge as it is created.
    host.attributes.push(LinkAttribute::Controller(bridge));
    host.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    Ok(RouteNetlinkMessage::NewLink(host))
}

/// Bridge-port options are IFLA_INFO_SLAVE_DATA, which the kernel applies only
/// through RTM_NEWLINK on an existing link (RTM_SETLINK ignores IFLA_LINKINFO):
/// what `ip link set DEV type bridge_slave hairpin on` sends. No CREATE/EXCL, so
/// the existing port is changed.
fn hairpin_message(index: u32) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
            true,
        )])),
    ]));
    RouteNetlinkMessage::NewLink(link)
}

/// RTM_NEWADDR as `ip address add ADDRESS/PREFIX brd + dev INDEX` sends it.
fn address_message(index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<RouteNetlinkMessage> {
    if prefix > 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("netlink: prefix /{prefix} is longer than 32"),
        ));
    }
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = prefix;
    message.header.index = index;
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's, which
    // for a broadcast link is the same.
    message
        .attributes
        .push(AddressAttribute::Local(IpAddr::V4(address)));
    message
        .attributes
        .push(AddressAttribute::Address(IpAddr::V4(address)));
    // /31 and /32 have no broadcast address.
    if prefix < 31 {
        let host_bits = u32::MAX >> prefix;
        let broadcast = Ipv4Addr::from(u32::from(address) | host_bits);
        message
            .attributes
            .push(AddressAttribute::Broadcast(broadcast));
    }
    Ok(RouteNetlinkMessage::NewAddress(message))
}

/// The kernel would refuse these too, with a less helpful errno.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(['\0', '/']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?} (1 to {MAX_NAME_LEN} bytes, no '/')"),
        ));
    }
    Ok(())
}

fn invalid_data(error: netlink_packet_core::DecodeError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("netlink: malformed answer: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::ErrorMessage;
    use std::fs::File;
    use std::num::NonZeroI32;
    use std::os::fd::AsFd;

    /// Parses request bytes back with the crate's own parser.
    fn decode(bytes: &[u8]) -> (NetlinkHeader, RouteNetlinkMessage) {
        let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).expect("parse back");
        match packet.payload {
            NetlinkPayload::InnerMessage(message) => (packet.header, message),
            other => panic!("not a route message: {other:?}"),
        }
    }

    fn link_infos(link: &LinkMessage) -> &[LinkInfo] {
        link.attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::LinkInfo(infos) => Some(infos.as_slice()),
                _ => None,
            })
            .expect("IFLA_LINKINFO")
    }

    #[test]
    fn the_veth_peer_carries_its_name_and_namespace_fd() {
        let netns = File::open("/dev/null").expect("an fd");
        let message = veth_message(
            "wh0123456789ab",
            7,
            "eth0",
            [2, 0x42, 10, 89, 0, 2],
            netns.as_fd(),
        )
        .expect("message");
        let bytes = encode(message, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, 42);
        let (header, message) = decode(&bytes);
        assert_eq!(header.sequence_number, 42);
        assert_eq!(
            header.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(header.message_type, RTM_NEWLINK);
        let RouteNetlinkMessage::NewLink(host) = message else {
            panic!("not RTM_NEWLINK");
        };
        assert!(host
            .attributes
            .contains(&LinkAttribute::IfName("wh0123456789ab".into())));
        assert!(host.attributes.contains(&LinkAttribute::Controller(7)));
        let peer = link_infos(&host)
            .iter()
            .find_map(|info| match info {
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) => Some(peer),
                _ => None,
            })
            .expect("VETH_INFO_PEER");
        assert!(peer
            .attributes
            .contains(&LinkAttribute::IfName("eth0".into())));
        assert!(peer
            .attributes
            .contains(&LinkAttribute::NetNsFd(netns.as_raw_fd())));
    }

    #[test]
    fn hairpin_is_bridge_port_data_on_an_existing_link() {
        let bytes = encode(hairpin_message(9), NLM_F_ACK, 1);
        let (header, message) = decode(&bytes);
        assert_eq!(header.flags & (NLM_F_CREATE | NLM_F_EXCL), 0);
        let RouteNetlinkMessage::NewLink(link) = message else {
            panic!("not RTM_NEWLINK");
        };
        assert_eq!(link.header.index, 9);
        assert!(
            link_infos(&link).contains(&LinkInfo::PortData(InfoPortData::BridgePort(vec![
                InfoBridgePort::HairpinMode(true)
            ])))
        );
    }

    #[test]
    fn addresses_get_the_subnet_broadcast_and_bad_prefixes_are_refused() {
        let message = address_message(3, Ipv4Addr::new(10, 89, 0, 1), 24).expect("message");
        let RouteNetlinkMessage::NewAddress(address) = decode(&encode(message, 0, 1)).1 else {
            panic!("not RTM_NEWADDR");
        };
        assert!(address
            .attributes
            .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 89, 0, 255))));
        assert!(address_message(3, Ipv4Addr::new(10, 89, 0, 1), 33).is_err());
        assert!(check_name("wharf-bridge-0123").is_err());
    }

    /// A kernel answer: an NLMSG_ERROR carrying `code` (0 is an ACK).
    fn answer(sequence: u32, code: i32) -> Vec<u8> {
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(code);
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        let mut packet =
            NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(error));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn answers_end_at_our_ack_and_errors_keep_their_errno() {
        // A stale error for an older request, a link message, then our ACK.
        let mut datagram = answer(4, -libc::EEXIST);
        let mut link = LinkMessage::default();
        link.header.index = 12;
        datagram.extend(encode(RouteNetlinkMessage::NewLink(link), 0, 5));
        datagram.extend(answer(5, 0));
        let mut replies = Vec::new();
        assert!(scan(&datagram, 5, &mut replies).expect("scan"));
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].message_type, RTM_NEWLINK);
        let index = LinkMessageBuffer::new_checked(&replies[0].payload[..])
            .expect("link header")
            .link_index();
        assert_eq!(index, 12);

        let error = scan(&answer(6, -libc::EEXIST), 6, &mut Vec::new()).expect_err("EEXIST");
        assert_eq!(error.raw_os_error(), Some(libc::EEXIST));
        // Not our sequence number: not the end yet.
        assert!(!scan(&answer(6, 0), 7, &mut Vec::new()).expect("scan"));
    }
}
