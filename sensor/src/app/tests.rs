//! Tests of the application layer: each parser on PDUs built here (with
//! FoxIO's published JA4 and JA4S examples as vectors), reassembly across
//! segments, and hostile input.

use vigil_proto::app::{App, AppProto};

use super::*;

fn be16(v: u16) -> [u8; 2] {
    v.to_be_bytes()
}

fn ext(t: u16, data: &[u8]) -> Vec<u8> {
    let mut e = be16(t).to_vec();
    e.extend_from_slice(&be16(data.len() as u16));
    e.extend_from_slice(data);
    e
}

fn list16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

fn with_len16(b: &[u8]) -> Vec<u8> {
    let mut o = be16(b.len() as u16).to_vec();
    o.extend_from_slice(b);
    o
}

/// A TLS record holding one handshake message.
fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut hs = vec![kind];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(body);
    let mut r = vec![0x16, 3, 1];
    r.extend_from_slice(&be16(hs.len() as u16));
    r.extend_from_slice(&hs);
    r
}

/// The ClientHello of FoxIO's JA4 example (JA4.md), GREASE added in the
/// cipher, extension, version and group lists, which JA4 ignores.
fn foxio_client_hello(sigalgs: bool) -> Vec<u8> {
    let ciphers = [
        0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
        0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
    ];
    let mut exts = Vec::new();
    exts.extend(ext(0x2a2a, &[]));
    for t in [
        0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012,
        0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
    ] {
        let data = match t {
            0x0000 => {
                let name = b"example.org";
                let mut d = with_len16(&{
                    let mut n = vec![0];
                    n.extend_from_slice(&with_len16(name));
                    n
                });
                d.truncate(2 + 3 + name.len());
                d
            }
            0x0010 => with_len16(&[
                2, b'h', b'2', 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1',
            ]),
            0x002b => {
                let mut d = vec![6];
                d.extend(list16(&[0x3a3a, 0x0304, 0x0303]));
                d
            }
            0x000d if sigalgs => with_len16(&list16(&[
                0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
            ])),
            // Present, with no algorithms listed.
            0x000d => with_len16(&[]),
            _ => Vec::new(),
        };
        exts.extend(ext(t, &data));
    }
    let mut b = be16(0x0303).to_vec();
    b.extend_from_slice(&[7; 32]);
    b.push(32);
    b.extend_from_slice(&[9; 32]);
    b.extend_from_slice(&with_len16(&list16(&ciphers)));
    b.extend_from_slice(&[1, 0]);
    b.extend_from_slice(&with_len16(&exts));
    record(1, &b)
}

/// The ServerHello of FoxIO's JA4S example (JA4S.md).
fn foxio_server_hello() -> Vec<u8> {
    let mut exts = Vec::new();
    for t in [0x0005, 0x0017, 0xff01, 0x0000] {
        exts.extend(ext(t, &[]));
    }
    let mut b = be16(0x0303).to_vec();
    b.extend_from_slice(&[7; 32]);
    b.push(0);
    b.extend_from_slice(&be16(0xc030));
    b.push(0);
    b.extend_from_slice(&with_len16(&exts));
    record(2, &b)
}

/// Feeds payloads to one flow's state: `(dir, seq, bytes)`, ports 40000 → 443.
fn flow(proto: u8, sport: u16, dport: u16, packets: &[(usize, u32, &[u8])]) -> (App, AppStats) {
    let mut app = FlowApp::default();
    let mut stats = AppStats::default();
    for &(dir, seq, data) in packets {
        let ports = if dir == 0 {
            (sport, dport)
        } else {
            (dport, sport)
        };
        app.packet(
            &Payload {
                dir,
                proto,
                ports,
                seq,
                data,
            },
            &mut stats,
        );
    }
    let out = app.take_for_record().map(|b| *b).unwrap_or_default();
    (out, stats)
}

#[test]
fn ja4_and_ja4s_are_foxios_published_examples() {
    let (a, stats) = flow(
        6,
        40000,
        443,
        &[
            (0, 1, &foxio_client_hello(true)),
            (1, 1, &foxio_server_hello()),
        ],
    );
    assert_eq!(stats.errors, [0; AppError::ALL.len()]);
    let t = a.tls.unwrap();
    assert_eq!(t.ja4, "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(t.ja4s, "t120400_c030_4e8089b08790");
    assert_eq!(t.sni, "example.org");
    assert_eq!(t.alpn, ["h2", "http/1.1"]);
    assert_eq!(t.version, 0x0303);
    // Without signature algorithms the extension hash is of the list alone
    // (JA4.md: 6d807ffa2a79).
    let (a, _) = flow(6, 40000, 443, &[(0, 1, &foxio_client_hello(false))]);
    assert_eq!(a.tls.unwrap().ja4, "t13d1516h2_8daaf6152771_6d807ffa2a79");
}

#[test]
fn ja4_alpn_characters_follow_the_specification() {
    // JA4.md's examples of non-alphanumeric ALPN values.
    for (v, want) in [
        (&[0xab][..], "ab"),
        (&[0xab, 0xcd], "ad"),
        (&[0x30, 0xab], "3b"),
        (&[0x30, 0x31, 0xab, 0xcd], "3d"),
        (&[0x30, 0xab, 0xcd, 0x31], "01"),
        (b"h", "hh"),
        (b"", "00"),
    ] {
        let j = tls::ja4_of(0x0303, false, &[0x002f], &[0x0010], v, &[]);
        assert_eq!(&j[8..10], want, "{v:?}: {j}");
    }
    assert_eq!(
        tls::ja4_of(0x0303, false, &[], &[], b"", &[]),
        "t12i000000_000000000000_000000000000"
    );
}

#[test]
fn a_client_hello_over_three_segments_is_reassembled_by_sequence() {
    let hello = foxio_client_hello(true);
    let (a, b) = hello.split_at(40);
    let (b, c) = b.split_at(60);
    let s0 = 1000u32;
    let s1 = s0 + a.len() as u32;
    let s2 = s1 + b.len() as u32;
    // The second segment is also sent again (a retransmission).
    let (app, stats) = flow(
        6,
        40000,
        443,
        &[(0, s0, a), (0, s1, b), (0, s1, b), (0, s2, c)],
    );
    assert_eq!(stats.errors, [0; AppError::ALL.len()]);
    assert_eq!(app.tls.unwrap().ja4, "t13d1516h2_8daaf6152771_e5627efa2ab1");
    // A segment lost: what arrived is read, the gap counted.
    let (app, stats) = flow(6, 40000, 443, &[(0, s0, a), (0, s2, c)]);
    assert_eq!(stats.errors[AppError::Gap as usize], 1);
    assert_eq!(app.proto, Some(AppProto::Tls));
}

fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = be16(id).to_vec();
    m.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&be16(qtype));
    m.extend_from_slice(&be16(1));
    m
}

fn dns_response(q: &[u8], rcode: u8) -> Vec<u8> {
    let mut m = q.to_vec();
    m[2] = 0x81;
    m[3] = 0x80 | rcode;
    m[7] = 2;
    // A CNAME to a pointer at the question, then an A record.
    m.extend_from_slice(&[0xc0, 12]);
    m.extend_from_slice(&be16(5));
    m.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
    m.extend_from_slice(&be16(6));
    m.extend_from_slice(&[3, b'c', b'd', b'n', 0xc0, 12]);
    m.extend_from_slice(&[0xc0, 12]);
    m.extend_from_slice(&be16(1));
    m.extend_from_slice(&[0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
    m
}

#[test]
fn dns_query_and_response_over_udp_and_tcp() {
    let q = dns_query(0x1234, "www.Example.org", 28);
    let r = dns_response(&q, 3);
    let (a, stats) = flow(17, 5353, 53, &[(0, 0, &q), (1, 0, &r)]);
    assert_eq!(stats.errors, [0; AppError::ALL.len()]);
    let d = a.dns.unwrap();
    assert_eq!(
        (d.qname.as_str(), d.qtype, d.rcode, d.answer_count),
        ("www.Example.org", 28, Some(3), 2)
    );
    assert_eq!(d.answers, ["cdn.www.Example.org", "192.0.2.7"]);
    // Over TCP, the response's length cut after its first byte.
    let mut tq = with_len16(&q);
    let tr = with_len16(&r);
    let (a, stats) = flow(
        6,
        40000,
        53,
        &[(0, 1, &tq), (1, 1, &tr[..1]), (1, 2, &tr[1..])],
    );
    assert_eq!(stats.errors, [0; AppError::ALL.len()]);
    assert_eq!(a.dns.unwrap().rcode, Some(3));
    // A response to another id is not this exchange's.
    tq = dns_response(&dns_query(9, "other.org", 1), 0);
    let (a, _) = flow(17, 5353, 53, &[(0, 0, &q), (1, 0, &tq)]);
    assert_eq!(a.dns.unwrap().rcode, None);
}

#[test]
fn dns_names_that_loop_or_overrun_are_counted_not_followed() {
    let mut m = dns_query(1, "a.b", 1);
    m[3] = 0x80;
    m[2] = 0x81;
    m[7] = 1;
    // An answer whose name points at itself.
    let at = m.len() as u8;
    m.extend_from_slice(&[0xc0, at]);
    m.extend_from_slice(&be16(5));
    m.extend_from_slice(&[0, 1, 0, 0, 0, 60, 0, 2, 0xc0, at]);
    let (_, stats) = flow(17, 5353, 53, &[(1, 0, &m)]);
    assert_eq!(stats.errors[AppError::Dns as usize], 1);
    let (_, stats) = flow(17, 5353, 53, &[(1, 0, &m[..14])]);
    assert_eq!(stats.errors[AppError::Dns as usize], 1);
}

#[test]
fn dns_is_recognized_off_its_port_and_netbios_is_not_dns() {
    let q = dns_query(7, "printer.local", 1);
    assert_eq!(
        detect(17, 40000, 40001, &q).map(|x| x.0),
        Some(AppProto::Dns)
    );
    assert_eq!(detect(17, 137, 137, &q), None);
    assert_eq!(detect(17, 40000, 40001, &[0x55; 40]), None);
}

#[test]
fn http_request_and_response_even_cut_by_the_snap_length() {
    let req = b"GET /a/b?c=1 HTTP/1.1\r\nUser-Agent: curl/8\r\nhost: example.org\r\n\r\n";
    let resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let (a, _) = flow(6, 40000, 80, &[(0, 1, req), (1, 1, resp)]);
    let h = a.http.unwrap();
    assert_eq!(
        (
            h.method.as_str(),
            h.host.as_str(),
            h.path.as_str(),
            h.status,
            h.user_agent.as_str()
        ),
        ("GET", "example.org", "/a/b?c=1", 404, "curl/8")
    );
    let (a, stats) = flow(6, 40000, 80, &[(0, 1, b"POST /upload HTT")]);
    assert_eq!(stats.errors, [0; AppError::ALL.len()]);
    assert_eq!(a.http.unwrap().method, "POST");
    let (_, stats) = flow(6, 40000, 80, &[(0, 1, b"GET / FTP/1.0\r\n\r\n")]);
    assert_eq!(stats.errors[AppError::Http as usize], 1);
}

fn name_list(s: &str) -> Vec<u8> {
    let mut o = (s.len() as u32).to_be_bytes().to_vec();
    o.extend_from_slice(s.as_bytes());
    o
}

fn kexinit(lists: [&str; 10]) -> Vec<u8> {
    let mut body = vec![20];
    body.extend_from_slice(&[0x11; 16]);
    for l in lists {
        body.extend(name_list(l));
    }
    body.extend_from_slice(&[0, 0, 0, 0, 0]);
    let pad = 4;
    let mut p = ((body.len() + 1 + pad) as u32).to_be_bytes().to_vec();
    p.push(pad as u8);
    p.extend_from_slice(&body);
    p.extend_from_slice(&[0; 4]);
    p
}

#[test]
fn ssh_banners_and_hassh_from_each_sides_lists() {
    use md5::{Digest, Md5};
    let lists = [
        "curve25519-sha256,diffie-hellman-group14-sha256",
        "ssh-ed25519",
        "aes128-ctr,aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "hmac-sha2-256",
        "hmac-sha2-512",
        "none,zlib@openssh.com",
        "none",
        "",
        "",
    ];
    let k = kexinit(lists);
    let mut client = b"SSH-2.0-OpenSSH_9.6\r\n".to_vec();
    client.extend_from_slice(&k);
    let server = b"SSH-2.0-dropbear_2022.83\r\n";
    // The client's banner and KEXINIT in one segment; the server's KEXINIT
    // in a segment of its own, after its banner, in two parts.
    let (k1, k2) = k.split_at(30);
    let at = 1 + server.len() as u32;
    let (a, stats) = flow(
        6,
        40000,
        22,
        &[
            (0, 1, &client),
            (1, 1, server),
            (1, at, k1),
            (1, at + 30, k2),
        ],
    );
    assert_eq!(stats.errors, [0; AppError::ALL.len()]);
    let x = a.ssh.unwrap();
    assert_eq!(x.client, "SSH-2.0-OpenSSH_9.6");
    assert_eq!(x.server, "SSH-2.0-dropbear_2022.83");
    let md5 = |s: String| format!("{:x}", Md5::digest(s.as_bytes()));
    assert_eq!(
        x.hassh,
        md5(format!(
            "{};{};{};{}",
            lists[0], lists[2], lists[4], lists[6]
        ))
    );
    assert_eq!(
        x.hassh_server,
        md5(format!(
            "{};{};{};{}",
            lists[0], lists[3], lists[5], lists[7]
        ))
    );
}

fn ics(
    proto: u8,
    sport: u16,
    dport: u16,
    packets: &[(usize, &[u8])],
) -> (AppProto, vigil_proto::app::Ics) {
    let mut seq = [1u32; 2];
    let p: Vec<(usize, u32, &[u8])> = packets
        .iter()
        .map(|&(d, b)| {
            let s = seq[d];
            seq[d] += b.len() as u32;
            (d, s, b)
        })
        .collect();
    let (a, _) = flow(proto, sport, dport, &p);
    (a.proto.unwrap(), *a.ics.unwrap())
}

#[test]
fn modbus_reads_writes_and_exceptions_are_told_apart() {
    let req = |tid: u8, unit: u8, func: u8| vec![0, tid, 0, 0, 0, 6, unit, func, 0, 1, 0, 2];
    let mut two = req(1, 1, 3);
    two.extend(req(2, 1, 6));
    let (p, i) = ics(
        6,
        40000,
        502,
        &[
            (0, &two),
            (1, &[0, 1, 0, 0, 0, 3, 1, 0x86, 2]),
            (0, &req(3, 7, 8)),
        ],
    );
    assert_eq!(p, AppProto::Modbus);
    assert_eq!(
        (i.reads, i.writes, i.diagnostics, i.exceptions),
        (1, 1, 1, 1)
    );
    assert_eq!(i.units, [1, 7]);
    assert_eq!(i.functions, [(3, 1), (6, 2), (8, 1)]);
    // Off port 502, a run of whole frames is Modbus; bytes that merely
    // start like one are not.
    assert!(detect(6, 40000, 40001, &req(1, 1, 3)).is_some());
    assert!(detect(6, 40000, 40001, &[0, 1, 0, 0, 0, 6, 1, 3, 0]).is_none());
}

#[test]
fn dnp3_iec104_s7_enip_bacnet_and_opcua_functions() {
    // DNP3: a direct operate from the master (DIR and PRM set), then a
    // response whose internal indications say "function unknown".
    let op = [
        0x05, 0x64, 0x08, 0xc4, 0x0a, 0x00, 0x01, 0x00, 0, 0, 0xc0, 0xc1, 0x05, 0, 0,
    ];
    let resp = [
        0x05, 0x64, 0x0a, 0x44, 0x01, 0x00, 0x0a, 0x00, 0, 0, 0xc0, 0xc1, 0x81, 0x00, 0x01, 0, 0,
    ];
    let (p, i) = ics(6, 40000, 20000, &[(0, &op), (1, &resp)]);
    assert_eq!(p, AppProto::Dnp3);
    assert_eq!((i.control, i.exceptions), (1, 1));
    assert_eq!(i.functions, [(5, 1), (129, 1)]);
    assert_eq!(i.units, [10]);

    // IEC 104: garbage, then a single command (C_SC_NA_1, activation);
    // then a U-frame.
    let mut b = vec![7, 7];
    b.extend_from_slice(&[0x68, 0x0e, 0, 0, 0, 0, 45, 1, 6, 0, 1, 0, 1, 0, 0, 1]);
    let (p, i) = ics(6, 40000, 2404, &[(0, &b), (0, &[0x68, 4, 7, 0, 0, 0])]);
    assert_eq!(p, AppProto::Iec104);
    assert_eq!((i.control, i.malformed), (1, 1));
    assert_eq!(i.functions, [(45, 1)]);
    assert_eq!(i.causes, [(6, 1)]);

    // S7comm: a PLC stop job after TPKT and COTP.
    let s7 = [
        3, 0, 0, 0x21, 2, 0xf0, 0x80, 0x32, 1, 0, 0, 0, 1, 0, 0x10, 0, 0, 0x29, 0, 0, 0, 0, 0, 0,
        0, 9, b'P', b'_', b'P', b'R', b'O', b'G', b'R', b'A', b'M',
    ];
    let mut s7 = s7.to_vec();
    s7[3] = s7.len() as u8;
    let (p, i) = ics(6, 40000, 102, &[(0, &s7)]);
    assert_eq!(p, AppProto::S7comm);
    assert_eq!((i.control, i.functions.as_slice()), (1, &[(0x29, 1)][..]));

    // EtherNet/IP: list identity (discovery), then a CIP set attribute in
    // SendRRData.
    let li = [
        0x63, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let cip = [0x10, 2, 0x20, 1, 0x24, 1, 0xaa];
    let mut cpf = vec![0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0xb2, 0];
    cpf.extend_from_slice(&(cip.len() as u16).to_le_bytes());
    cpf.extend_from_slice(&cip);
    let mut rr = vec![0x6f, 0];
    rr.extend_from_slice(&(cpf.len() as u16).to_le_bytes());
    rr.extend_from_slice(&[0; 20]);
    rr.extend_from_slice(&cpf);
    let (p, i) = ics(6, 40000, 44818, &[(0, &li), (0, &rr)]);
    assert_eq!(p, AppProto::Enip);
    assert_eq!((i.discovery, i.writes), (1, 1));
    assert_eq!(i.functions, [(0x10, 1)]);
    assert_eq!(i.causes, [(0x63, 1), (0x6f, 1)]);

    // BACnet: who-is, then write-property.
    let who_is = [0x81, 0x0b, 0, 8, 1, 0, 0x10, 0x08];
    let write = [0x81, 0x0a, 0, 0x0c, 1, 4, 0, 5, 1, 0x0f, 0x0c, 0];
    let (p, i) = ics(17, 47808, 47808, &[(0, &who_is), (0, &write)]);
    assert_eq!(p, AppProto::Bacnet);
    assert_eq!((i.discovery, i.writes), (1, 1));
    assert_eq!(i.functions, [(15, 1), (0x108, 1)]);

    // OPC UA: a write request (type id 673) in a MSG chunk.
    let mut msg = b"MSGF".to_vec();
    msg.extend_from_slice(&[0; 4]);
    msg.extend_from_slice(&[0; 16]);
    msg.extend_from_slice(&[0x01, 0x00]);
    msg.extend_from_slice(&673u16.to_le_bytes());
    let n = msg.len() as u32;
    msg[4..8].copy_from_slice(&n.to_le_bytes());
    let (p, i) = ics(6, 40000, 4840, &[(0, &msg)]);
    assert_eq!(p, AppProto::OpcUa);
    assert_eq!((i.writes, i.functions.as_slice()), (1, &[(673, 1)][..]));
}

#[test]
fn ics_counts_are_per_record() {
    let req = [0, 1, 0, 0, 0, 6, 1, 16, 0, 1, 0, 2];
    let mut app = FlowApp::default();
    let mut stats = AppStats::default();
    let pkt = |seq| Payload {
        dir: 0,
        proto: 6,
        ports: (40000, 502),
        seq,
        data: &req,
    };
    app.packet(&pkt(1), &mut stats);
    assert_eq!(app.take_for_record().unwrap().ics.unwrap().writes, 1);
    assert_eq!(app.take_for_record().unwrap().ics.unwrap().writes, 0);
    app.packet(&pkt(13), &mut stats);
    assert_eq!(app.take_for_record().unwrap().ics.unwrap().writes, 1);
}

#[test]
fn the_sniffer_keeps_handshakes_and_leaves_bulk_data() {
    use crate::decode::key::FlowKey;
    let mut s = Sniffer::new(true);
    let mut buf = Vec::new();
    let (key, lo) = FlowKey::new([1; 16], 40000, [2; 16], 443, 6, false, [0; 2]);
    let hello = foxio_client_hello(true);
    let mut m = PacketMeta {
        key,
        hash: key.hash64(),
        src_is_lo: lo,
        tcp_seq: 100,
        ..PacketMeta::default()
    };
    let (a, b) = hello.split_at(50);
    s.keep(&mut m, a, &mut buf);
    assert_eq!((m.app_at, m.app_len), (0, 50));
    m.tcp_seq = 150;
    s.keep(&mut m, b, &mut buf);
    assert_eq!((m.app_at, m.app_len as usize), (50, b.len()));
    // The handshake done, application data is not kept.
    let mut m2 = m;
    m2.app_len = 0;
    m2.tcp_seq = 150 + b.len() as u32;
    s.keep(&mut m2, &[0x17, 3, 3, 0, 100, 1, 2, 3], &mut buf);
    assert_eq!(m2.app_len, 0);
    // Off: nothing is kept.
    let mut off = Sniffer::new(false);
    let mut m3 = m;
    m3.app_len = 0;
    off.keep(&mut m3, a, &mut buf);
    assert_eq!(m3.app_len, 0);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn quic_initial_keys_are_the_rfcs_examples() {
    // RFC 9001 Appendix A.1: the keys of the connection whose client chose
    // 0x8394c8f03e515708.
    let dcid = hex("8394c8f03e515708");
    let (key, iv, hp) = super::quic::key_bytes(1, &dcid, false).unwrap();
    assert_eq!(key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
    assert_eq!(iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
    assert_eq!(hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
    let (key, iv, hp) = super::quic::key_bytes(1, &dcid, true).unwrap();
    assert_eq!(key.to_vec(), hex("cf3a5331653c364c88f0f379b6067e37"));
    assert_eq!(iv.to_vec(), hex("0ac1493ca1905853b0bba03e"));
    assert_eq!(hp.to_vec(), hex("c206b8d9b9f0f37644430b490eeaa314"));
}

/// The hello records' handshake message (one record each here).
fn handshake_of(record: &[u8]) -> &[u8] {
    &record[5..]
}

#[test]
fn quic_hellos_are_decrypted_from_initial_packets_in_shuffled_frames() {
    use super::quic::testing::{crypto, initial};
    let hello = foxio_client_hello(true);
    let msg = handshake_of(&hello);
    let (dcid, scid) = (hex("8394c8f03e515708"), hex("c0ffee01"));
    for version in [1, 0x6b33_43cf] {
        // The hello in three frames over two packets, the first packet's
        // frames in reverse order (as Chrome shuffles them), a PING
        // between.
        let (a, b, c) = (&msg[..40], &msg[40..100], &msg[100..]);
        let mut f1 = crypto(40, b);
        f1.push(0x01);
        f1.extend(crypto(0, a));
        let p1 = initial(version, &dcid, &scid, false, 0, &f1);
        let p2 = initial(version, &dcid, &scid, false, 1, &crypto(100, c));
        let sh = foxio_server_hello();
        // The server's: an ACK frame, then its hello.
        let mut f3 = vec![0x02, 0x01, 0x00, 0x00, 0x01];
        f3.extend(crypto(0, handshake_of(&sh)));
        let p3 = initial(version, &dcid, &scid, true, 0, &f3);
        assert!(p1.len() >= 1200 && p2.len() >= 1200);
        let (app, stats) = flow(17, 50000, 443, &[(0, 0, &p1), (0, 0, &p2), (1, 0, &p3)]);
        assert_eq!(
            stats.errors,
            [0; AppError::ALL.len()],
            "version {version:x}"
        );
        assert_eq!(app.proto, Some(AppProto::Quic));
        let t = app.tls.unwrap();
        assert_eq!(t.sni, "example.org");
        assert_eq!(t.alpn, ["h2", "http/1.1"]);
        // FoxIO's example with QUIC's prefix.
        assert_eq!(t.ja4, "q13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(t.ja4s, "q120400_c030_4e8089b08790");
        // A flipped byte: the packet does not decrypt, counted.
        let mut bad = p1.clone();
        bad[200] ^= 1;
        let (app, stats) = flow(17, 50000, 443, &[(0, 0, &bad)]);
        assert_eq!(stats.errors[AppError::Quic as usize], 1);
        assert_eq!(app.tls.map(|t| t.sni), Some(String::new()));
    }
}

/// Initials that decrypt but carry hostile frames: CRYPTO frames at any
/// offset and length, truncated varints, unknown frame types, hellos that
/// claim more than arrives. Never a panic; what cannot be read is counted.
#[test]
fn hostile_quic_frames_never_panic() {
    use super::quic::testing::{crypto, initial};
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let dcid = hex("0011223344556677");
    let mut errors = 0;
    for _ in 0..2_000 {
        let mut frames = Vec::new();
        for _ in 0..(next() % 4) {
            match next() % 3 {
                0 => {
                    let len = (next() % 64) as usize;
                    let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    frames.extend(crypto((next() % 9000) as u16, &data));
                }
                1 => frames.extend((0..next() % 16).map(|_| next() as u8)),
                _ => frames.extend(crypto(0, &[1, 0xff, 0xff, 0xff, 3, 3])),
            }
        }
        let p = initial(
            1,
            &dcid,
            &[1],
            next() % 2 == 0,
            (next() % 8) as u32,
            &frames,
        );
        let dir = usize::from(next() % 2 == 0);
        let (_, stats) = flow(17, 50000, 443, &[(0, 0, &p), (dir, 0, &p)]);
        errors += stats.errors[AppError::Quic as usize];
    }
    assert!(errors > 0, "hostile frames are counted");
}

#[test]
fn hostile_payloads_never_panic() {
    // Every detector and parser over bytes that start like each protocol
    // and go on at random.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let starts: [&[u8]; 13] = [
        &[0x16, 3, 1],
        b"GET ",
        b"HTTP/1.1 ",
        b"SSH-2.0-",
        &[0, 1, 0, 0],
        &[5, 0x64],
        &[3, 0, 0],
        &[0x68],
        &[0x6f, 0],
        &[0x81, 0x0a],
        b"MSGF",
        &[0x12, 0x34, 1, 0, 0, 1],
        &[0xc3, 0, 0, 0, 1, 8],
    ];
    let ports = [443, 80, 22, 502, 20000, 102, 2404, 44818, 47808, 4840, 53];
    for round in 0..20_000 {
        let start = starts[round % starts.len()];
        let len = (next() % 300) as usize;
        let mut p = start.to_vec();
        p.extend((0..len).map(|_| next() as u8));
        let port = ports[(next() % ports.len() as u64) as usize];
        let proto = if next() % 3 == 0 { 17 } else { 6 };
        let mut app = FlowApp::default();
        let mut stats = AppStats::default();
        for (i, chunk) in p.chunks(1 + (next() % 64) as usize).enumerate() {
            app.packet(
                &Payload {
                    dir: i % 2,
                    proto,
                    ports: (40000, port),
                    seq: (i * 64) as u32,
                    data: chunk,
                },
                &mut stats,
            );
        }
        app.packet(
            &Payload {
                dir: 0,
                proto,
                ports: (40000, port),
                seq: 0,
                data: &p,
            },
            &mut stats,
        );
        let _ = app.take_for_record();
    }
}

#[test]
fn a_flows_state_takes_the_bytes_the_docs_state() {
    // README.md, "Application metadata": the state a flow with metadata
    // holds in the slab (its strings and the cold part besides).
    assert_eq!(std::mem::size_of::<FlowApp>(), 104);
}
