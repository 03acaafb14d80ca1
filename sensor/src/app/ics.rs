//! Industrial control protocols: every PDU's function counted, and each
//! function sorted into reads, writes, control (operate, program
//! download, start, stop, restart), diagnostics and discovery, so that
//! detection can tell a PLC being read from one being written or stopped.
//! Codes are those Wireshark shows (`modbus.func_code`, `dnp3.al.func`,
//! `s7comm.param.func`, `iec60870_asdu.typeid`, `cip.service`,
//! `bacapp.confirmed_service`, BACnet unconfirmed services as 256 + code,
//! OPC UA request type ids).

use vigil_proto::app::{AppProto, Ics};

use super::AppError;

/// Most distinct function codes (and causes) kept per record.
const MAX_CODES: usize = 32;
/// Most unit ids kept.
const MAX_UNITS: usize = 16;
/// Most PDUs read from one payload.
const MAX_PDUS: usize = 64;

const MODBUS_PORT: u16 = 502;
const IEC104_PORT: u16 = 2404;
const ENIP_PORT: u16 = 44818;
const BACNET_PORT: u16 = 47808;
const OPCUA_PORT: u16 = 4840;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let x = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

/// The ICS protocol a TCP payload starts a PDU of.
/// The ICS protocol a TCP payload starts a PDU of, and the bytes its
/// last PDU goes on past it.
pub(super) fn detect_tcp(p: &[u8], port: &impl Fn(u16) -> bool) -> Option<(AppProto, u32)> {
    let a = if modbus_frames(p, port(MODBUS_PORT)) {
        AppProto::Modbus
    } else if dnp3_start(p) {
        AppProto::Dnp3
    } else if let Some(a) = s7_start(p) {
        a
    } else if iec104_frames(p, port(IEC104_PORT)) {
        AppProto::Iec104
    } else if enip_start(p, port(ENIP_PORT)) {
        AppProto::Enip
    } else if opcua_start(p) {
        AppProto::OpcUa
    } else {
        return None;
    };
    Some((a, tcp_more(a, p)))
}

/// The bytes the last PDU of `proto` in `p` (a run of them) goes on past
/// it: Wireshark reassembles such PDUs, and so does the flow's state.
pub(super) fn tcp_more(proto: AppProto, p: &[u8]) -> u32 {
    let mut at = 0;
    for _ in 0..MAX_PDUS {
        if at >= p.len() {
            break;
        }
        let f = &p[at..];
        let len = match proto {
            AppProto::Modbus => be16(f, 4).map(|l| 6 + usize::from(l)),
            AppProto::Dnp3 => f.get(2).map(|&l| dnp3_frame_len(l)),
            AppProto::S7comm | AppProto::S7commPlus => be16(f, 2).map(usize::from),
            AppProto::Iec104 => match f.iter().position(|&b| b == 0x68) {
                Some(0) => f.get(1).map(|&l| 2 + usize::from(l)),
                Some(i) => Some(i),
                None => return 0,
            },
            AppProto::Enip => le16(f, 2).map(|l| 24 + usize::from(l)),
            AppProto::OpcUa => le32(f, 4).map(|l| l as usize),
            _ => return 0,
        };
        match len {
            // A length not yet whole: at least one more byte.
            None => return 1,
            Some(0) => return 0,
            Some(n) => at += n,
        }
    }
    (at.saturating_sub(p.len())).min(u32::MAX as usize) as u32
}

/// The ICS protocol a UDP payload is a PDU of.
pub(super) fn detect_udp(p: &[u8], port: &impl Fn(u16) -> bool) -> Option<AppProto> {
    if bacnet_start(p) {
        return Some(AppProto::Bacnet);
    }
    if dnp3_start(p) {
        return Some(AppProto::Dnp3);
    }
    if enip_start(p, port(ENIP_PORT)) {
        return Some(AppProto::Enip);
    }
    if port(BACNET_PORT) && p.first() == Some(&0x81) {
        return Some(AppProto::Bacnet);
    }
    None
}

/// Counts of one record, added to.
struct Tally<'a>(&'a mut Ics);

impl Tally<'_> {
    fn function(&mut self, code: u16) {
        bump(&mut self.0.functions, code);
    }

    fn cause(&mut self, code: u16) {
        bump(&mut self.0.causes, code);
    }

    fn unit(&mut self, u: u16) {
        let units = &mut self.0.units;
        if !units.contains(&u) && units.len() < MAX_UNITS {
            units.push(u);
            units.sort_unstable();
        }
    }
}

fn bump(v: &mut Vec<(u16, u64)>, code: u16) {
    match v.binary_search_by_key(&code, |e| e.0) {
        Ok(i) => v[i].1 += 1,
        Err(i) if v.len() < MAX_CODES => v.insert(i, (code, 1)),
        Err(_) => {}
    }
}

/// Parses the PDUs of one payload of `proto` (from direction `dir`,
/// between `ports` source and destination) into `ics`.
pub(super) fn parse(
    proto: AppProto,
    p: &[u8],
    dir: usize,
    ports: (u16, u16),
    ics: &mut Ics,
) -> Result<(), AppError> {
    // Requests go to the protocol's port; where neither side has it, the
    // originator asks.
    let to_server = |server: u16| {
        if ports.1 == server {
            true
        } else if ports.0 == server {
            false
        } else {
            dir == 0
        }
    };
    let mut t = Tally(ics);
    match proto {
        AppProto::Modbus => modbus(p, to_server(MODBUS_PORT), &mut t),
        AppProto::Dnp3 => dnp3(p, &mut t),
        AppProto::S7comm | AppProto::S7commPlus => s7(p, &mut t),
        AppProto::Iec104 => iec104(p, &mut t),
        AppProto::Enip => enip(p, &mut t),
        AppProto::Bacnet => bacnet(p, &mut t),
        AppProto::OpcUa => opcua(p, to_server(OPCUA_PORT), &mut t),
        _ => Ok(()),
    }
}

// ---- Modbus/TCP ----

/// Whether `p` is a run of whole MBAP frames (or, on port 502, starts
/// with one).
fn modbus_frames(p: &[u8], on_port: bool) -> bool {
    let mut at = 0;
    let mut n = 0;
    while at < p.len() && n < MAX_PDUS {
        let (Some(0), Some(len)) = (be16(p, at + 2), be16(p, at + 4)) else {
            return false;
        };
        let func = p.get(at + 7).copied().unwrap_or(0);
        if !(2..=254).contains(&len) || func & 0x7f == 0 {
            return false;
        }
        at += 6 + usize::from(len);
        n += 1;
        if on_port {
            return true;
        }
    }
    at == p.len() && n > 0
}

fn modbus(p: &[u8], request: bool, t: &mut Tally<'_>) -> Result<(), AppError> {
    let mut at = 0;
    for _ in 0..MAX_PDUS {
        if at >= p.len() {
            return Ok(());
        }
        let len = usize::from(be16(p, at + 4).ok_or(AppError::Ics)?);
        if be16(p, at + 2) != Some(0) || len < 2 {
            return Err(AppError::Ics);
        }
        let unit = p.get(at + 6).copied().ok_or(AppError::Ics)?;
        let func = p.get(at + 7).copied().ok_or(AppError::Ics)?;
        if request {
            t.function(u16::from(func));
            t.unit(u16::from(unit));
            match func {
                1..=4 | 20 | 24 => t.0.reads += 1,
                5 | 6 | 15 | 16 | 21..=23 => t.0.writes += 1,
                7 | 8 | 11 | 12 | 17 => t.0.diagnostics += 1,
                // Read Device Identification.
                43 => t.0.discovery += 1,
                _ => {}
            }
        } else {
            // Responses echo their request's code (an exception sets the
            // top bit); counted as codes seen, not as operations.
            t.function(u16::from(func & 0x7f));
            if func & 0x80 != 0 {
                t.0.exceptions += 1;
            }
        }
        at += 6 + len;
    }
    Ok(())
}

// ---- DNP3 ----

fn dnp3_start(p: &[u8]) -> bool {
    p.len() >= 10 && p[0] == 0x05 && p[1] == 0x64 && p[2] >= 5
}

/// Bytes a DNP3 link frame of length field `len` takes: its 10-byte
/// header, then user data in 16-byte blocks, each with a CRC.
fn dnp3_frame_len(len: u8) -> usize {
    let data = usize::from(len).saturating_sub(5);
    10 + data + data.div_ceil(16) * 2
}

fn dnp3(p: &[u8], t: &mut Tally<'_>) -> Result<(), AppError> {
    let mut at = 0;
    for _ in 0..MAX_PDUS {
        let Some(f) = p.get(at..) else { return Ok(()) };
        if f.is_empty() {
            return Ok(());
        }
        if !dnp3_start(f) {
            return Err(AppError::Ics);
        }
        let ctrl = f[3];
        let dst = le16(f, 4).unwrap_or(0);
        // The first block: transport header, application control, function.
        if f[2] >= 8 && ctrl & 0x40 != 0 {
            let transport = f.get(10).copied().unwrap_or(0);
            if transport & 0x40 != 0
                && let Some(&func) = f.get(12)
            {
                t.function(u16::from(func));
                if ctrl & 0x80 != 0 {
                    t.unit(dst);
                }
                match func {
                    1 => t.0.reads += 1,
                    2 => t.0.writes += 1,
                    3..=6 | 13 | 14 | 16..=18 | 25..=27 => t.0.control += 1,
                    23 | 24 => t.0.diagnostics += 1,
                    // Internal indications: a request the outstation
                    // could not do (function unknown, object unknown,
                    // parameter error) counts as an exception.
                    129 | 130 if f.get(14).is_some_and(|&iin2| iin2 & 0x07 != 0) => {
                        t.0.exceptions += 1;
                    }
                    _ => {}
                }
            }
        }
        at += dnp3_frame_len(f[2]);
    }
    Ok(())
}

// ---- S7comm and S7comm-plus (ISO-on-TCP) ----

/// Where the payload after TPKT and a COTP data header starts.
fn cotp_data(p: &[u8]) -> Option<usize> {
    if p.len() < 8 || p[0] != 3 || p[1] != 0 || be16(p, 2)? < 7 {
        return None;
    }
    let li = usize::from(p[4]);
    (p[5] == 0xf0 && li >= 2).then_some(5 + li)
}

fn s7_start(p: &[u8]) -> Option<AppProto> {
    let at = cotp_data(p)?;
    match p.get(at)? {
        0x32 => Some(AppProto::S7comm),
        0x72 => Some(AppProto::S7commPlus),
        _ => None,
    }
}

fn s7(p: &[u8], t: &mut Tally<'_>) -> Result<(), AppError> {
    let mut at = 0;
    for _ in 0..MAX_PDUS {
        let Some(f) = p.get(at..).filter(|f| !f.is_empty()) else {
            return Ok(());
        };
        let tpkt = usize::from(be16(f, 2).ok_or(AppError::Ics)?);
        let Some(d) = cotp_data(f) else {
            // Connection set-up (COTP CR/CC) and other TPDUs carry no S7 PDU.
            if f.first() == Some(&3) && tpkt >= 7 {
                at += tpkt;
                continue;
            }
            return Err(AppError::Ics);
        };
        let s = f.get(d..tpkt.min(f.len())).unwrap_or_default();
        match s.first() {
            Some(0x32) => s7comm(s, t)?,
            Some(0x72) => s7plus(s, t)?,
            _ => {}
        }
        if tpkt < 7 {
            return Err(AppError::Ics);
        }
        at += tpkt;
    }
    Ok(())
}

fn s7comm(s: &[u8], t: &mut Tally<'_>) -> Result<(), AppError> {
    let rosctr = *s.get(1).ok_or(AppError::Ics)?;
    let header = match rosctr {
        2 | 3 => 12,
        _ => 10,
    };
    if rosctr == 3 && s.get(10..12).is_some_and(|e| e != [0, 0]) {
        t.0.exceptions += 1;
    }
    match rosctr {
        1 => {
            let func = *s.get(header).ok_or(AppError::Ics)?;
            t.function(u16::from(func));
            match func {
                0x04 | 0x1d..=0x1f => t.0.reads += 1,
                0x05 => t.0.writes += 1,
                0x1a..=0x1c | 0x28 | 0x29 => t.0.control += 1,
                _ => {}
            }
        }
        // User data: CPU functions (SZL reads, clocks, block lists).
        7 => t.0.diagnostics += 1,
        _ => {}
    }
    Ok(())
}

fn s7plus(s: &[u8], t: &mut Tally<'_>) -> Result<(), AppError> {
    let version = *s.get(1).ok_or(AppError::Ics)?;
    // Version 3 puts an integrity part (a length, then a digest) first.
    let mut at = 4;
    if version == 3 {
        let dl = usize::from(*s.get(at).ok_or(AppError::Ics)?);
        at += 1 + dl;
    }
    let opcode = *s.get(at).ok_or(AppError::Ics)?;
    if opcode != 0x31 {
        return Ok(());
    }
    let func = be16(s, at + 3).ok_or(AppError::Ics)?;
    t.function(func);
    match func {
        0x04fc | 0x054c | 0x0524 | 0x04bb => t.0.reads += 1,
        0x04f2 | 0x0542 => t.0.writes += 1,
        0x056b | 0x04d4 => t.0.control += 1,
        _ => {}
    }
    Ok(())
}

// ---- IEC 60870-5-104 ----

fn iec104_frames(p: &[u8], on_port: bool) -> bool {
    if on_port && p.first() != Some(&0x68) {
        // Bytes before a start octet: read from it, as Wireshark resyncs.
        return p.iter().take(32).any(|&b| b == 0x68);
    }
    let mut at = 0;
    let mut n = 0;
    while at < p.len() && n < MAX_PDUS {
        if p[at] != 0x68 || p.get(at + 1).is_none_or(|&l| l < 4) {
            return false;
        }
        at += 2 + usize::from(p[at + 1]);
        n += 1;
        if on_port {
            return true;
        }
    }
    at == p.len() && n > 0
}

fn iec104(p: &[u8], t: &mut Tally<'_>) -> Result<(), AppError> {
    let mut at = 0;
    for _ in 0..MAX_PDUS {
        let Some(f) = p.get(at..).filter(|f| !f.is_empty()) else {
            return Ok(());
        };
        if f[0] != 0x68 {
            // Garbage before a start octet: counted, skipped to it.
            t.0.malformed += 1;
            match f.iter().position(|&b| b == 0x68) {
                Some(i) => {
                    at += i;
                    continue;
                }
                None => return Ok(()),
            }
        }
        if f.len() < 6 || f[1] < 4 {
            return Err(AppError::Ics);
        }
        let len = usize::from(f[1]);
        // An I-format APDU carries an ASDU: its type, then (in a whole
        // one) its cause of transmission.
        if f[2] & 1 == 0 && len >= 5 {
            let typeid = *f.get(6).ok_or(AppError::Ics)?;
            t.function(u16::from(typeid));
            let cot = if len >= 7 { f.get(8).copied() } else { None };
            if let Some(cot) = cot {
                t.cause(u16::from(cot & 0x3f));
                if cot & 0x40 != 0 {
                    t.0.exceptions += 1;
                }
                // Commands in the control direction: activation (6) or
                // deactivation (8); their confirmations are not counted again.
                if matches!(cot & 0x3f, 6 | 8) {
                    match typeid {
                        45..=47 | 58..=60 | 105 => t.0.control += 1,
                        48..=51 | 61..=64 | 103 | 110..=113 => t.0.writes += 1,
                        100..=102 => t.0.reads += 1,
                        104 | 107 => t.0.diagnostics += 1,
                        _ => {}
                    }
                }
            }
        }
        at += 2 + len;
    }
    Ok(())
}

// ---- EtherNet/IP and CIP ----

const ENIP_COMMANDS: [u16; 10] = [
    0x0001, 0x0004, 0x0063, 0x0064, 0x0065, 0x0066, 0x006f, 0x0070, 0x0072, 0x0073,
];

fn enip_start(p: &[u8], on_port: bool) -> bool {
    let (Some(cmd), Some(len)) = (le16(p, 0), le16(p, 2)) else {
        return false;
    };
    p.len() >= 24
        && ENIP_COMMANDS.contains(&cmd)
        && (24 + usize::from(len) == p.len() || (on_port && 24 + usize::from(len) <= p.len()))
}

fn enip(p: &[u8], t: &mut Tally<'_>) -> Result<(), AppError> {
    let mut at = 0;
    for _ in 0..MAX_PDUS {
        let Some(f) = p.get(at..).filter(|f| !f.is_empty()) else {
            return Ok(());
        };
        let cmd = le16(f, 0).ok_or(AppError::Ics)?;
        let len = usize::from(le16(f, 2).ok_or(AppError::Ics)?);
        if f.len() < 24 || !ENIP_COMMANDS.contains(&cmd) {
            return Err(AppError::Ics);
        }
        t.cause(cmd);
        let status = le32(f, 8).unwrap_or(0);
        if status != 0 {
            t.0.exceptions += 1;
        }
        match cmd {
            0x0004 | 0x0063 | 0x0064 => t.0.discovery += 1,
            0x006f | 0x0070 => {
                let body = f.get(24..24 + len).unwrap_or(&f[24..]);
                cpf(body, t)?;
            }
            _ => {}
        }
        at += 24 + len;
    }
    Ok(())
}

/// The common packet format of SendRRData and SendUnitData: the CIP
/// message in its data item.
fn cpf(b: &[u8], t: &mut Tally<'_>) -> Result<(), AppError> {
    // Interface handle (4), timeout (2), item count (2).
    let items = le16(b, 6).ok_or(AppError::Ics)?;
    let mut at = 8;
    for _ in 0..items.min(8) {
        let ty = le16(b, at).ok_or(AppError::Ics)?;
        let len = usize::from(le16(b, at + 2).ok_or(AppError::Ics)?);
        let d = b.get(at + 4..at + 4 + len).ok_or(AppError::Ics)?;
        match ty {
            0x00b2 => cip(d, t, 0),
            // Connected data: a sequence count first.
            0x00b1 if d.len() > 2 => cip(&d[2..], t, 0),
            _ => {}
        }
        at += 4 + len;
    }
    Ok(())
}

fn cip(m: &[u8], t: &mut Tally<'_>, depth: u8) {
    let Some(&service) = m.first() else { return };
    t.function(u16::from(service));
    if service & 0x80 != 0 {
        // A reply (its request's code with the top bit): its general status.
        if m.get(2).is_some_and(|&s| s != 0) {
            t.0.exceptions += 1;
        }
        if service == 0x8a && depth == 0 {
            // Multiple Service Packet reply: after the status, its replies.
            let base = 4 + 2 * usize::from(m.get(3).copied().unwrap_or(0));
            let n = usize::from(le16(m, base).unwrap_or(0)).min(16);
            for i in 0..n {
                if let Some(off) = le16(m, base + 2 + 2 * i)
                    && let Some(inner) = m.get(base + usize::from(off)..)
                {
                    cip(inner, t, depth + 1);
                }
            }
        }
        return;
    }
    match service {
        0x01 | 0x03 | 0x0e | 0x4c => t.0.reads += 1,
        0x02 | 0x04 | 0x10 | 0x4d | 0x53 => t.0.writes += 1,
        0x05..=0x07 => t.0.control += 1,
        0x52 if depth == 0 => {
            // Unconnected Send to the Connection Manager: the embedded
            // request follows its path, priority, timeout and size.
            let words = usize::from(m.get(1).copied().unwrap_or(0));
            let at = 2 + words * 2 + 2;
            if let Some(size) = le16(m, at)
                && let Some(inner) = m.get(at + 2..at + 2 + usize::from(size))
            {
                cip(inner, t, depth + 1);
            }
        }
        0x0a if depth == 0 => {
            // Multiple Service Packet: a count, offsets, the requests.
            let words = usize::from(m.get(1).copied().unwrap_or(0));
            let base = 2 + words * 2;
            let n = usize::from(le16(m, base).unwrap_or(0)).min(16);
            for i in 0..n {
                if let Some(off) = le16(m, base + 2 + 2 * i)
                    && let Some(inner) = m.get(base + usize::from(off)..)
                {
                    cip(inner, t, depth + 1);
                }
            }
        }
        _ => {}
    }
}

// ---- BACnet/IP ----

fn bacnet_start(p: &[u8]) -> bool {
    p.len() >= 6 && p[0] == 0x81 && p[1] <= 0x0c && be16(p, 2) == Some(p.len() as u16)
}

fn bacnet(p: &[u8], t: &mut Tally<'_>) -> Result<(), AppError> {
    if p.len() < 4 || p[0] != 0x81 {
        return Err(AppError::Ics);
    }
    let mut at = match p[1] {
        0x04 => 10, // Forwarded-NPDU: the original source's address first.
        0x09..=0x0b => 4,
        // BVLC control functions (registration, tables) carry no NPDU.
        _ => return Ok(()),
    };
    if p.get(at) != Some(&0x01) {
        return Err(AppError::Ics);
    }
    let control = *p.get(at + 1).ok_or(AppError::Ics)?;
    at += 2;
    if control & 0x20 != 0 {
        let dlen = usize::from(*p.get(at + 2).ok_or(AppError::Ics)?);
        at += 3 + dlen;
    }
    if control & 0x08 != 0 {
        let slen = usize::from(*p.get(at + 2).ok_or(AppError::Ics)?);
        at += 3 + slen;
    }
    if control & 0x20 != 0 {
        at += 1; // hop count
    }
    if control & 0x80 != 0 {
        // A network layer message: who-is-router and the like.
        t.0.discovery += 1;
        return Ok(());
    }
    let apdu = p.get(at..).ok_or(AppError::Ics)?;
    let head = *apdu.first().ok_or(AppError::Ics)?;
    match head >> 4 {
        0 => {
            let seg = head & 0x08 != 0;
            let service = *apdu.get(if seg { 5 } else { 3 }).ok_or(AppError::Ics)?;
            t.function(u16::from(service));
            match service {
                6 | 12 | 14 | 26 => t.0.reads += 1,
                7..=11 | 15 | 16 => t.0.writes += 1,
                17 | 20 => t.0.control += 1,
                _ => {}
            }
        }
        1 => {
            let service = *apdu.get(1).ok_or(AppError::Ics)?;
            t.function(0x100 | u16::from(service));
            match service {
                0 | 1 | 7 | 8 => t.0.discovery += 1,
                6 | 9 => t.0.writes += 1,
                _ => {}
            }
        }
        // Simple and complex acknowledgements, errors: their service
        // choice is the request's (a reflector's replies name it).
        2 | 5 => {
            t.function(u16::from(*apdu.get(2).ok_or(AppError::Ics)?));
            if head >> 4 == 5 {
                t.0.exceptions += 1;
            }
        }
        3 => {
            let seg = head & 0x08 != 0;
            let service = *apdu.get(if seg { 4 } else { 2 }).ok_or(AppError::Ics)?;
            t.function(u16::from(service));
        }
        6 | 7 => t.0.exceptions += 1,
        4 => {}
        _ => return Err(AppError::Ics),
    }
    Ok(())
}

// ---- OPC UA binary ----

const OPCUA_TYPES: [&[u8; 3]; 7] = [b"HEL", b"ACK", b"OPN", b"MSG", b"CLO", b"ERR", b"RHE"];

fn opcua_start(p: &[u8]) -> bool {
    p.len() >= 8
        && OPCUA_TYPES.iter().any(|t| p[..3] == t[..])
        && matches!(p[3], b'F' | b'C' | b'A')
        && le32(p, 4).is_some_and(|n| (8..=1 << 24).contains(&n))
}

fn opcua(p: &[u8], request: bool, t: &mut Tally<'_>) -> Result<(), AppError> {
    let mut at = 0;
    for _ in 0..MAX_PDUS {
        let Some(f) = p.get(at..).filter(|f| f.len() >= 8) else {
            return Ok(());
        };
        if !opcua_start(f) {
            return Err(AppError::Ics);
        }
        let size = le32(f, 4).unwrap_or(0) as usize;
        match &f[..3] {
            b"OPN" if request => t.function(446),
            b"CLO" if request => t.function(452),
            b"ERR" => t.0.exceptions += 1,
            b"MSG" if request && f[3] != b'A' => {
                // Secure channel, token, sequence number, request id; then
                // the request's type id (a numeric NodeId).
                let n = f.get(24..).unwrap_or_default();
                let id = match n.first() {
                    Some(0x00) => n.get(1).map(|&i| u32::from(i)),
                    Some(0x01) => le16(n, 2).map(u32::from),
                    Some(0x02) => le32(n, 3),
                    _ => None,
                };
                if let Some(id) = id.and_then(|i| u16::try_from(i).ok()) {
                    t.function(id);
                    match id {
                        631 => t.0.reads += 1,
                        673 => t.0.writes += 1,
                        712 => t.0.control += 1,
                        422 | 428 | 527 => t.0.discovery += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        at += size.max(8);
    }
    Ok(())
}
