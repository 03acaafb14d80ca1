//! libpcap through the `pcap` crate (cargo feature `libpcap`).
//!
//! Three uses: live capture on any interface libpcap knows, with a filter
//! ([`PcapLive`]); capture files read by libpcap, a second reader beside the
//! pure-Rust one that must give the same flows ([`PcapFile`]); and filter
//! expressions compiled to classic BPF for AF_PACKET sockets
//! ([`compile_filter`]).

use std::path::{Path, PathBuf};

use pcap::{Active, Capture, Linktype, Offline, Precision};

#[cfg(target_os = "linux")]
use super::af_packet::{BpfFilter, BpfInsn};
use super::{CaptureError, KernelStats, LinkType, LiveError, RawPacket};
use super::{Next, POLL_TIMEOUT, PacketSource};

/// libpcap's DLT_* value for a link type (they differ from the file's
/// LINKTYPE_* only for raw IP).
fn dlt_of(link: LinkType) -> i32 {
    match link {
        LinkType::Raw => 12,
        other => other.to_linktype() as i32,
    }
}

/// Compiles a tcpdump filter expression for frames of `link` into classic
/// BPF, to attach to AF_PACKET sockets.
#[cfg(target_os = "linux")]
pub fn compile_filter(expr: &str, link: LinkType) -> Result<BpfFilter, LiveError> {
    let err = |message: String| LiveError::Filter {
        expr: expr.to_string(),
        message,
    };
    let dead = Capture::dead(Linktype(dlt_of(link))).map_err(|e| err(e.to_string()))?;
    let prog = dead.compile(expr, true).map_err(|e| err(e.to_string()))?;
    // The crate shows instructions as tcpdump -ddd does: "code jt jf k".
    let insns = prog
        .get_instructions()
        .iter()
        .map(|i| {
            let text = i.to_string();
            let f: Vec<u64> = text
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            match f[..] {
                [code, jt, jf, k] => Ok(BpfInsn {
                    code: code as u16,
                    jt: jt as u8,
                    jf: jf as u8,
                    k: k as u32,
                }),
                _ => Err(err(format!("unreadable BPF instruction {text:?}"))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BpfFilter {
        expr: expr.to_string(),
        insns,
    })
}

fn live_error(interface: &str, e: pcap::Error) -> LiveError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("permission") || lower.contains("not permitted") {
        LiveError::Permission {
            interface: interface.to_string(),
        }
    } else if lower.contains("no such device") || lower.contains("doesn't exist") {
        LiveError::UnknownInterface {
            interface: interface.to_string(),
        }
    } else {
        LiveError::Os {
            interface: interface.to_string(),
            what: "libpcap",
            source: std::io::Error::other(text),
        }
    }
}

/// A live libpcap capture.
pub struct PcapLive {
    cap: Capture<Active>,
    link: LinkType,
    name: PathBuf,
    /// The last read found nothing: wait for the descriptor next time.
    idle: bool,
}

impl std::fmt::Debug for PcapLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapLive")
            .field("interface", &self.name)
            .field("link", &self.link)
            .finish()
    }
}

impl PcapLive {
    /// Opens `interface` (nanosecond timestamps, 100 ms read timeout, the
    /// given kernel buffer) and applies the filter.
    pub fn open(
        interface: &str,
        promisc: bool,
        buffer_bytes: u32,
        filter: Option<&str>,
    ) -> Result<PcapLive, LiveError> {
        if !Path::new("/sys/class/net").join(interface).exists()
            && Path::new("/sys/class/net").exists()
        {
            return Err(LiveError::UnknownInterface {
                interface: interface.to_string(),
            });
        }
        let cap = Capture::from_device(interface)
            .map_err(|e| live_error(interface, e))?
            .promisc(promisc)
            .snaplen(262_144)
            .timeout(100)
            .buffer_size(i32::try_from(buffer_bytes).unwrap_or(i32::MAX))
            .precision(Precision::Nano)
            .open()
            .map_err(|e| live_error(interface, e))?;
        // Non-blocking, with our own wait: under TPACKET_V3 libpcap's read
        // timeout only fires once a packet has arrived, so a link with no
        // traffic at all would never let the sensor see its stop flag.
        let mut cap = cap.setnonblock().map_err(|e| live_error(interface, e))?;
        if let Some(expr) = filter {
            cap.filter(expr, true).map_err(|e| LiveError::Filter {
                expr: expr.to_string(),
                message: e.to_string(),
            })?;
        }
        let link = LinkType::from_linktype(cap.get_datalink().0 as u32);
        tracing::info!(interface, ?link, filter, "libpcap capture open");
        Ok(PcapLive {
            cap,
            link,
            name: PathBuf::from(interface),
            idle: false,
        })
    }
}

impl PacketSource for PcapLive {
    fn next(&mut self) -> Result<Next<'_>, CaptureError> {
        if self.idle {
            self.idle = false;
            #[cfg(target_os = "linux")]
            {
                super::af_packet::wait_readable(&self.cap, POLL_TIMEOUT).map_err(|e| {
                    CaptureError::Libpcap {
                        path: self.name.clone(),
                        message: format!("poll: {e}"),
                    }
                })?;
            }
        }
        match self.cap.next_packet() {
            Ok(p) => Ok(Next::Packet(raw_packet(&p, self.link))),
            Err(pcap::Error::TimeoutExpired) => {
                self.idle = true;
                Ok(Next::Idle)
            }
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(e) => Err(CaptureError::Libpcap {
                path: self.name.clone(),
                message: e.to_string(),
            }),
        }
    }

    fn kernel_stats(&mut self) -> Option<KernelStats> {
        let s = self.cap.stats().ok()?;
        // On Linux, libpcap's received count includes the drops, as the
        // kernel's does.
        Some(KernelStats {
            packets: u64::from(s.received),
            drops: u64::from(s.dropped),
            freezes: 0,
        })
    }

    fn is_live(&self) -> bool {
        true
    }
}

fn raw_packet<'a>(p: &pcap::Packet<'a>, link: LinkType) -> RawPacket<'a> {
    // With nanosecond precision requested, tv_usec holds nanoseconds.
    let sec = u64::try_from(p.header.ts.tv_sec).unwrap_or(0);
    let frac = u64::try_from(p.header.ts.tv_usec).unwrap_or(0);
    let ts_ns = sec.wrapping_mul(1_000_000_000).wrapping_add(frac);
    RawPacket {
        ts_ns,
        link,
        orig_len: p.header.len,
        data: p.data,
    }
}

/// A capture file read through libpcap.
pub struct PcapFile {
    cap: Capture<Offline>,
    link: LinkType,
    path: PathBuf,
}

impl std::fmt::Debug for PcapFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapFile")
            .field("path", &self.path)
            .field("link", &self.link)
            .finish()
    }
}

impl PcapFile {
    /// Opens a pcap or pcapng file with nanosecond timestamps.
    pub fn open(path: &Path) -> Result<PcapFile, CaptureError> {
        let cap = Capture::from_file_with_precision(path, Precision::Nano).map_err(|e| {
            CaptureError::Libpcap {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        let link = LinkType::from_linktype(cap.get_datalink().0 as u32);
        Ok(PcapFile {
            cap,
            link,
            path: path.to_path_buf(),
        })
    }
}

impl PacketSource for PcapFile {
    fn next(&mut self) -> Result<Next<'_>, CaptureError> {
        match self.cap.next_packet() {
            Ok(p) => Ok(Next::Packet(raw_packet(&p, self.link))),
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(pcap::Error::TimeoutExpired) => Ok(Next::Idle),
            Err(e) => Err(CaptureError::Libpcap {
                path: self.path.clone(),
                message: e.to_string(),
            }),
        }
    }
}
