//! Live capture on Linux: AF_PACKET sockets with a TPACKET_V3 ring, joined
//! to a PACKET_FANOUT group; and a plain AF_PACKET sender for the replayer.
//!
//! The ring is a run of blocks mapped into this process. The kernel fills a
//! block with packets (each behind a `tpacket3_hdr`), marks it
//! `TP_STATUS_USER` when it is full or its retire timeout passes, and moves
//! on to the next one; the reader walks the packets of a user block in place
//! (no copy) and hands the block back by storing `TP_STATUS_KERNEL`. When
//! every block is held by user space, the kernel drops packets and counts
//! them (`PACKET_STATISTICS`).
//!
//! With fanout in hash mode the kernel sends every packet of a flow to the
//! same socket (the hash is symmetric, so both directions meet), and the
//! defrag flag reassembles IPv4 fragments before hashing: one socket per
//! worker, no dispatch thread, nothing shared.
//!
//! This is the one module of the sensor with `unsafe` code: system calls,
//! and reads of the ring the kernel shares with us. Each block says why it
//! is sound.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use super::{FanoutMode, RingConfig};
use super::{KernelStats, LinkType, LiveError, RawPacket};

// Kernel ABI (linux/if_packet.h), stable since TPACKET_V3 arrived in 3.2.
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_MR_PROMISC: u16 = 1;
const TPACKET_V3: libc::c_int = 2;
const PACKET_FANOUT_DATA: libc::c_int = 22;
const PACKET_FANOUT_HASH: u32 = 0;
const PACKET_FANOUT_CBPF: u32 = 6;
const PACKET_FANOUT_FLAG_DEFRAG: u32 = 0x8000;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const ETH_P_ALL: u16 = 0x0003;
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_NONE: u16 = 0xfffe;
const ARPHRD_TUNNEL: u16 = 768;
const ARPHRD_TUNNEL6: u16 = 769;
const ARPHRD_IPGRE: u16 = 778;
const ARPHRD_RAWIP: u16 = 519;

#[repr(C)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
}

#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    tp_packets: u32,
    tp_drops: u32,
    tp_freeze_q_cnt: u32,
}

#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: u16,
    mr_alen: u16,
    mr_address: [u8; 8],
}

// Offsets in `struct tpacket_block_desc` (version, offset_to_priv, then
// `tpacket_hdr_v1`: block_status, num_pkts, offset_to_first_pkt, ...).
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST_PKT: usize = 16;
// Offsets in `struct tpacket3_hdr`.
const PKT_NEXT: usize = 0;
const PKT_SEC: usize = 4;
const PKT_NSEC: usize = 8;
const PKT_SNAPLEN: usize = 12;
const PKT_LEN: usize = 16;
const PKT_STATUS: usize = 20;
const PKT_MAC: usize = 24;
const PKT_VLAN_TCI: usize = 32;
const PKT_VLAN_TPID: usize = 36;
const PKT_HDR_LEN: usize = 48;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

// Classic BPF opcodes.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_LD_H_ABS: u16 = 0x28;
const BPF_JEQ_K: u16 = 0x15;
const BPF_XOR_X: u16 = 0xac;
const BPF_MUL_K: u16 = 0x24;
const BPF_RSH_K: u16 = 0x74;
const BPF_TAX: u16 = 0x07;
const BPF_RET_A: u16 = 0x16;
const BPF_RET_K: u16 = 0x06;
/// Ancillary load of `skb->protocol` (SKF_AD_OFF + SKF_AD_PROTOCOL).
const SKF_AD_PROTOCOL: u32 = 0xffff_f000;
/// Loads relative to the network header (SKF_NET_OFF).
const SKF_NET_OFF: u32 = 0xfff0_0000;

/// The fanout program of [`FanoutMode::AddressPair`]: returns a mix of the
/// XOR of the outermost source and destination addresses (IPv4 or IPv6,
/// after at most one VLAN tag left in the frame), so both directions pick
/// the same socket; other frames go to socket 0. The kernel takes the
/// result modulo the number of sockets.
pub fn address_pair_program() -> Vec<BpfInsn> {
    fn ins(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
        BpfInsn { code, jt, jf, k }
    }
    // Words to XOR: IPv4 src, dst at 12, 16; IPv6 src, dst at 8..40.
    fn mix(base: u32, words: &[u32]) -> Vec<BpfInsn> {
        let mut v = vec![
            ins(BPF_LD_W_ABS, 0, 0, SKF_NET_OFF + base + words[0]),
            ins(BPF_TAX, 0, 0, 0),
        ];
        for (i, w) in words[1..].iter().enumerate() {
            v.push(ins(BPF_LD_W_ABS, 0, 0, SKF_NET_OFF + base + w));
            v.push(ins(BPF_XOR_X, 0, 0, 0));
            if i + 2 < words.len() {
                v.push(ins(BPF_TAX, 0, 0, 0));
            }
        }
        v.push(ins(BPF_MUL_K, 0, 0, 0x9e37_79b1));
        v.push(ins(BPF_RSH_K, 0, 0, 16));
        v.push(ins(BPF_RET_A, 0, 0, 0));
        v
    }
    let v4 = [12, 16];
    let v6 = [8, 12, 16, 20, 24, 28, 32, 36];
    let (v4_0, v6_0, v4_4, v6_4) = (mix(0, &v4), mix(0, &v6), mix(4, &v4), mix(4, &v6));
    // Header: dispatch on the protocol, then on an inner tag's ethertype.
    //  0 ld proto
    //  1 jeq 0x0800 -> V4_0
    //  2 jeq 0x86dd -> V6_0
    //  3 jeq 0x8100 -> 6
    //  4 jeq 0x88a8 -> 6
    //  5 ret 0
    //  6 ldh [net + 2]
    //  7 jeq 0x0800 -> V4_4
    //  8 jeq 0x86dd -> V6_4
    //  9 ret 0
    // 10 V4_0, V6_0, V4_4, V6_4
    let at_v4_0 = 10usize;
    let at_v6_0 = at_v4_0 + v4_0.len();
    let at_v4_4 = at_v6_0 + v6_0.len();
    let at_v6_4 = at_v4_4 + v4_4.len();
    let rel = |from: usize, to: usize| (to - from - 1) as u8;
    let mut p = vec![
        ins(BPF_LD_W_ABS, 0, 0, SKF_AD_PROTOCOL),
        ins(BPF_JEQ_K, rel(1, at_v4_0), 0, 0x0800),
        ins(BPF_JEQ_K, rel(2, at_v6_0), 0, 0x86dd),
        ins(BPF_JEQ_K, rel(3, 6), 0, 0x8100),
        ins(BPF_JEQ_K, rel(4, 6), 0, 0x88a8),
        ins(BPF_RET_K, 0, 0, 0),
        ins(BPF_LD_H_ABS, 0, 0, SKF_NET_OFF + 2),
        ins(BPF_JEQ_K, rel(7, at_v4_4), 0, 0x0800),
        ins(BPF_JEQ_K, rel(8, at_v6_4), 0, 0x86dd),
        ins(BPF_RET_K, 0, 0, 0),
    ];
    p.extend(v4_0);
    p.extend(v6_0);
    p.extend(v4_4);
    p.extend(v6_4);
    p
}

/// Attaches a socket filter; `expr` names a user's filter in errors.
fn attach(fd: RawFd, prog: &[BpfInsn], interface: &str, expr: &str) -> Result<(), LiveError> {
    let mut insns = to_sock_filter(prog);
    let fprog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_mut_ptr(),
    };
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &fprog,
        interface,
        "SO_ATTACH_FILTER",
    )
    .map_err(|e| match e {
        LiveError::Os { source, .. } if !expr.is_empty() => LiveError::Filter {
            expr: expr.to_string(),
            message: format!("the kernel refused the compiled filter: {source}"),
        },
        e => e,
    })
}

fn to_sock_filter(p: &[BpfInsn]) -> Vec<libc::sock_filter> {
    p.iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

/// A compiled capture filter and the expression it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfFilter {
    /// The expression, for messages.
    pub expr: String,
    /// The program.
    pub insns: Vec<BpfInsn>,
}

/// What to open.
#[derive(Clone, Debug)]
pub struct SocketOptions<'a> {
    /// Interface name.
    pub interface: &'a str,
    /// Ring geometry.
    pub ring: RingConfig,
    /// Put the interface into promiscuous mode while the socket is open.
    pub promisc: bool,
    /// Fanout group to join (with IPv4 defragmentation).
    pub fanout_group: Option<u16>,
    /// How the group spreads packets.
    pub fanout_mode: FanoutMode,
    /// A compiled filter attached before any packet arrives.
    pub filter: Option<&'a BpfFilter>,
}

fn last_os_error(interface: &str, what: &'static str) -> LiveError {
    let source = io::Error::last_os_error();
    match source.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => LiveError::Permission {
            interface: interface.to_string(),
        },
        Some(libc::ENODEV | libc::ENXIO) => LiveError::UnknownInterface {
            interface: interface.to_string(),
        },
        _ => LiveError::Os {
            interface: interface.to_string(),
            what,
            source,
        },
    }
}

fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    interface: &str,
    what: &'static str,
) -> Result<(), LiveError> {
    // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes, which
    // is what each option used here reads; the kernel copies it and keeps
    // no pointer.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_os_error(interface, what))
    }
}

/// Opens a raw AF_PACKET socket that receives nothing until bound.
fn packet_socket(interface: &str) -> Result<OwnedFd, LiveError> {
    // SAFETY: plain system call; the descriptor it returns is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_os_error(interface, "socket(AF_PACKET)"));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The interface's index and link type.
fn interface_info(fd: RawFd, interface: &str) -> Result<(libc::c_int, u16), LiveError> {
    let unknown = || LiveError::UnknownInterface {
        interface: interface.to_string(),
    };
    if interface.is_empty() || interface.len() >= libc::IFNAMSIZ {
        return Err(unknown());
    }
    let name = CString::new(interface).map_err(|_| unknown())?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(unknown());
    }
    // SAFETY: an all-zero `ifreq` is a valid value (plain integers and arrays).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name from and writes the hardware
    // address into `req`, which is a properly sized `ifreq`.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    if rc != 0 {
        return Err(last_os_error(interface, "SIOCGIFHWADDR"));
    }
    // SAFETY: the ioctl above filled the `ifru_hwaddr` member of the union.
    let family = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    Ok((index as libc::c_int, family))
}

fn link_of(hw: u16, interface: &str) -> Result<LinkType, LiveError> {
    match hw {
        // Loopback frames carry an Ethernet header with zero addresses.
        ARPHRD_ETHER | ARPHRD_LOOPBACK => Ok(LinkType::Ethernet),
        ARPHRD_NONE | ARPHRD_RAWIP | ARPHRD_TUNNEL | ARPHRD_TUNNEL6 | ARPHRD_IPGRE => {
            Ok(LinkType::Raw)
        }
        other => Err(LiveError::UnsupportedLink {
            interface: interface.to_string(),
            hw_type: other,
        }),
    }
}

fn bind(fd: RawFd, index: libc::c_int, protocol: u16, interface: &str) -> Result<(), LiveError> {
    // SAFETY: an all-zero `sockaddr_ll` is valid; the fields are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = index;
    // SAFETY: `sll` is a valid `sockaddr_ll` and the length says so.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_os_error(interface, "bind"))
    }
}

/// Waits until `fd` is readable or `timeout` passes; `Ok(false)` on timeout
/// or interruption. (For libpcap's descriptor, whose own read timeout does
/// not fire on a link with no traffic at all under TPACKET_V3.)
pub fn wait_readable(fd: &impl AsRawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid `pollfd`, count 1; the descriptor's owner is
    // borrowed for the call, so it stays open.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(rc > 0)
}

/// The link type of an interface's frames, as a capture socket would see them.
pub fn interface_link(interface: &str) -> Result<LinkType, LiveError> {
    let fd = packet_socket(interface)?;
    let (_, hw) = interface_info(fd.as_raw_fd(), interface)?;
    link_of(hw, interface)
}

/// A capturing socket and its ring.
#[derive(Debug)]
pub struct AfPacket {
    fd: OwnedFd,
    ring: NonNull<u8>,
    ring_len: usize,
    block_size: usize,
    block_count: usize,
    current: usize,
    link: LinkType,
    interface: String,
    /// A frame with its VLAN tag put back (the kernel strips the outer tag
    /// into the packet header).
    scratch: Vec<u8>,
    totals: KernelStats,
    filter: Option<BpfFilter>,
}

// SAFETY: the mapping is owned by this value alone (no other handle to it
// exists in the process), so moving it to another thread is sound.
unsafe impl Send for AfPacket {}

impl AfPacket {
    /// Opens a socket on an interface: ring, filter, bind, promiscuous
    /// membership and fanout, in the order that lets no unfiltered packet in.
    pub fn open(o: &SocketOptions<'_>) -> Result<AfPacket, LiveError> {
        let iface = o.interface;
        o.ring.validate().map_err(|reason| LiveError::Ring {
            interface: iface.to_string(),
            reason,
        })?;
        let fd = packet_socket(iface)?;
        let raw = fd.as_raw_fd();
        let (index, hw) = interface_info(raw, iface)?;
        let link = link_of(hw, iface)?;
        setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_VERSION,
            &TPACKET_V3,
            iface,
            "PACKET_VERSION",
        )?;
        // Nothing is captured until `start`: a socket that joined its group
        // early would otherwise take every packet until the others join,
        // splitting flows that begin in that window.
        attach(
            raw,
            &[BpfInsn {
                code: BPF_RET_K,
                jt: 0,
                jf: 0,
                k: 0,
            }],
            iface,
            "",
        )?;
        let block_size = o.ring.block_size as usize;
        let block_count = o.ring.block_count as usize;
        let frame_size = 2048u32;
        let req = TpacketReq3 {
            tp_block_size: o.ring.block_size,
            tp_block_nr: o.ring.block_count,
            tp_frame_size: frame_size,
            tp_frame_nr: o.ring.block_size / frame_size * o.ring.block_count,
            tp_retire_blk_tov: o.ring.block_timeout.as_millis() as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_RX_RING,
            &req,
            iface,
            "PACKET_RX_RING",
        )?;
        let ring_len = block_size * block_count;
        // SAFETY: maps the ring the kernel just allocated for this socket;
        // the result is checked before use and unmapped in `drop`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                raw,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_os_error(iface, "mmap of the ring"));
        }
        let ring = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| LiveError::Os {
            interface: iface.to_string(),
            what: "mmap of the ring",
            source: io::Error::other("null mapping"),
        })?;
        let mut sock = AfPacket {
            fd,
            ring,
            ring_len,
            block_size,
            block_count,
            current: 0,
            link,
            interface: iface.to_string(),
            scratch: Vec::with_capacity(block_size.min(1 << 16) + 4),
            totals: KernelStats::default(),
            filter: None,
        };
        bind(raw, index, ETH_P_ALL, iface)?;
        if o.promisc {
            let mreq = PacketMreq {
                mr_ifindex: index,
                mr_type: PACKET_MR_PROMISC,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(
                raw,
                libc::SOL_PACKET,
                PACKET_ADD_MEMBERSHIP,
                &mreq,
                iface,
                "PACKET_ADD_MEMBERSHIP",
            )?;
        }
        if let Some(group) = o.fanout_group {
            let mode = match o.fanout_mode {
                FanoutMode::AddressPair => PACKET_FANOUT_CBPF,
                FanoutMode::FlowHash => PACKET_FANOUT_HASH,
            };
            let arg: u32 = u32::from(group) | ((mode | PACKET_FANOUT_FLAG_DEFRAG) << 16);
            setsockopt(
                raw,
                libc::SOL_PACKET,
                PACKET_FANOUT,
                &arg,
                iface,
                "PACKET_FANOUT",
            )?;
            if o.fanout_mode == FanoutMode::AddressPair {
                let mut insns = to_sock_filter(&address_pair_program());
                let fprog = libc::sock_fprog {
                    len: insns.len() as u16,
                    filter: insns.as_mut_ptr(),
                };
                setsockopt(
                    raw,
                    libc::SOL_PACKET,
                    PACKET_FANOUT_DATA,
                    &fprog,
                    iface,
                    "PACKET_FANOUT_DATA",
                )?;
            }
        }
        sock.filter = o.filter.cloned();
        Ok(sock)
    }

    /// Starts capturing: replaces the drop-all filter set at open by the
    /// capture filter, or by none. Call once every socket of the group is
    /// open, so that flows are split among all of them from the first packet.
    pub fn start(&mut self) -> Result<(), LiveError> {
        let fd = self.fd.as_raw_fd();
        match &self.filter {
            Some(f) => attach(fd, &f.insns, &self.interface, &f.expr),
            None => {
                let zero: libc::c_int = 0;
                setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_DETACH_FILTER,
                    &zero,
                    &self.interface,
                    "SO_DETACH_FILTER",
                )
            }
        }
    }

    /// The link type of the interface's frames.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    fn block_ptr(&self, i: usize) -> *mut u8 {
        // SAFETY: `i < block_count`, so the offset stays inside the mapping.
        unsafe { self.ring.as_ptr().add(i * self.block_size) }
    }

    fn block_status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: the status word is a 4-byte aligned u32 inside the mapping
        // (blocks start on page boundaries), shared with the kernel, which
        // accesses it atomically; it lives as long as `self`.
        unsafe { AtomicU32::from_ptr(self.block_ptr(i).add(BLOCK_STATUS).cast::<u32>()) }
    }

    /// The next block of packets, waiting up to `timeout` for one. `None`
    /// when none came (the caller then moves its clock by wall time).
    pub fn next_block(&mut self, timeout: Duration) -> Result<Option<Block<'_>>, LiveError> {
        if self.block_status(self.current).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid `pollfd`, count 1.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(LiveError::Os {
                        interface: self.interface.clone(),
                        what: "poll",
                        source: e,
                    });
                }
            }
            if self.block_status(self.current).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                return Ok(None);
            }
        }
        let i = self.current;
        self.current = (self.current + 1) % self.block_count;
        let base = self.block_ptr(i);
        // SAFETY: the block is ours (TP_STATUS_USER, loaded with Acquire, so
        // the kernel's writes to it are visible); these header words lie in
        // its first 20 bytes.
        let (num, first) = unsafe {
            (
                base.add(BLOCK_NUM_PKTS).cast::<u32>().read(),
                base.add(BLOCK_FIRST_PKT).cast::<u32>().read(),
            )
        };
        // SAFETY: as in `block_status`; the reference lives as long as the
        // `&mut self` borrow that the block holds.
        let status = unsafe { AtomicU32::from_ptr(base.add(BLOCK_STATUS).cast::<u32>()) };
        Ok(Some(Block {
            base,
            size: self.block_size,
            remaining: num,
            next: first as usize,
            status,
            link: self.link,
            scratch: &mut self.scratch,
        }))
    }

    fn read_stats(&mut self) -> Result<KernelStats, LiveError> {
        let mut st = TpacketStatsV3::default();
        let mut len = size_of::<TpacketStatsV3>() as libc::socklen_t;
        // SAFETY: `st` is a writable `tpacket_stats_v3` and `len` its size;
        // the kernel writes at most `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut TpacketStatsV3).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(last_os_error(&self.interface, "PACKET_STATISTICS"));
        }
        // Reading resets the kernel's counters: add them up here.
        self.totals.packets += u64::from(st.tp_packets);
        self.totals.drops += u64::from(st.tp_drops);
        self.totals.freezes += u64::from(st.tp_freeze_q_cnt);
        Ok(self.totals)
    }

    /// The kernel's counters for this socket since it was opened.
    pub fn kernel_stats(&mut self) -> Result<KernelStats, LiveError> {
        self.read_stats()
    }
}

impl Drop for AfPacket {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no `Block`
        // borrowing it can outlive `self`.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_len);
        }
    }
}

/// A block of packets held by the reader; handed back to the kernel when dropped.
#[derive(Debug)]
pub struct Block<'a> {
    base: *mut u8,
    size: usize,
    remaining: u32,
    next: usize,
    status: &'a AtomicU32,
    link: LinkType,
    scratch: &'a mut Vec<u8>,
}

impl Block<'_> {
    /// Packets left in the block.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    fn u32_at(&self, off: usize) -> u32 {
        // SAFETY: callers check `off + 4 <= size`; the block is ours.
        unsafe { self.base.add(off).cast::<u32>().read_unaligned() }
    }

    fn u16_at(&self, off: usize) -> u16 {
        // SAFETY: callers check `off + 2 <= size`; the block is ours.
        unsafe { self.base.add(off).cast::<u16>().read_unaligned() }
    }

    /// The next packet. It borrows the block (or the scratch buffer when its
    /// VLAN tag had to be put back), so the previous one must be done with.
    pub fn next_packet(&mut self) -> Option<RawPacket<'_>> {
        if self.remaining == 0 {
            return None;
        }
        let h = self.next;
        if h.checked_add(PKT_HDR_LEN).is_none_or(|end| end > self.size) {
            // The kernel never writes such a block; stop rather than read past it.
            self.remaining = 0;
            return None;
        }
        self.remaining -= 1;
        let next = self.u32_at(h + PKT_NEXT) as usize;
        let sec = u64::from(self.u32_at(h + PKT_SEC));
        let nsec = u64::from(self.u32_at(h + PKT_NSEC));
        let snap = self.u32_at(h + PKT_SNAPLEN) as usize;
        let len = self.u32_at(h + PKT_LEN);
        let status = self.u32_at(h + PKT_STATUS);
        let mac = usize::from(self.u16_at(h + PKT_MAC));
        let tci = self.u32_at(h + PKT_VLAN_TCI);
        let tpid = self.u16_at(h + PKT_VLAN_TPID);
        if next == 0 {
            self.remaining = 0;
        } else {
            self.next = h + next;
        }
        let start = h + mac;
        if start.checked_add(snap).is_none_or(|end| end > self.size) {
            self.remaining = 0;
            return None;
        }
        // SAFETY: `start..start + snap` lies inside the block (checked
        // above), which the kernel does not touch until it is handed back,
        // and the slice's lifetime is tied to `&mut self`.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(start), snap) };
        let ts_ns = sec * 1_000_000_000 + nsec;
        let vlan = status & TP_STATUS_VLAN_VALID != 0;
        if vlan && self.link == LinkType::Ethernet && data.len() >= 12 {
            // Put the outer tag back where it was on the wire, as libpcap does.
            let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 {
                tpid
            } else {
                0x8100
            };
            self.scratch.clear();
            self.scratch.extend_from_slice(&data[..12]);
            self.scratch.extend_from_slice(&tpid.to_be_bytes());
            self.scratch.extend_from_slice(&(tci as u16).to_be_bytes());
            self.scratch.extend_from_slice(&data[12..]);
            return Some(RawPacket {
                ts_ns,
                link: self.link,
                orig_len: len + 4,
                data: self.scratch,
            });
        }
        Some(RawPacket {
            ts_ns,
            link: self.link,
            orig_len: len,
            data,
        })
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        // Release: our reads of the block happen before the kernel refills it.
        self.status.store(TP_STATUS_KERNEL, Ordering::Release);
    }
}

/// Sends whole frames out of an interface (the replayer's side).
#[derive(Debug)]
pub struct AfPacketSender {
    fd: OwnedFd,
    interface: String,
}

impl AfPacketSender {
    /// Opens a sending socket on an interface; it receives nothing.
    pub fn open(interface: &str) -> Result<AfPacketSender, LiveError> {
        let fd = packet_socket(interface)?;
        let raw = fd.as_raw_fd();
        let (index, hw) = interface_info(raw, interface)?;
        if hw != ARPHRD_ETHER && hw != ARPHRD_LOOPBACK {
            return Err(LiveError::UnsupportedLink {
                interface: interface.to_string(),
                hw_type: hw,
            });
        }
        // Protocol 0: bound for sending only.
        bind(raw, index, 0, interface)?;
        // Straight to the driver: the replayer paces itself. Older kernels
        // lack the option; sending works without it.
        let _ = setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_QDISC_BYPASS,
            &1i32,
            interface,
            "PACKET_QDISC_BYPASS",
        );
        Ok(AfPacketSender {
            fd,
            interface: interface.to_string(),
        })
    }

    /// Sends one frame, waiting while the device queue is full.
    pub fn send(&self, frame: &[u8]) -> Result<(), LiveError> {
        loop {
            // SAFETY: `frame` is a valid buffer of `frame.len()` bytes.
            let rc =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => std::thread::yield_now(),
                _ => {
                    return Err(LiveError::Os {
                        interface: self.interface.clone(),
                        what: "send",
                        source: e,
                    });
                }
            }
        }
    }
}
