//! The well-known services the detectors know by port: reflectors abused
//! for amplification, remote-access and authentication services brute
//! forced, ICS protocols.

/// UDP services abused as reflectors, with their names.
pub const REFLECTOR_PORTS: &[(u16, &str)] = &[
    (17, "QOTD"),
    (19, "CharGen"),
    (53, "DNS"),
    (69, "TFTP"),
    (111, "Portmap"),
    (123, "NTP"),
    (137, "NetBIOS"),
    (161, "SNMP"),
    (389, "CLDAP"),
    (427, "SLP"),
    (500, "ISAKMP/IKE"),
    (520, "RIPv1"),
    (623, "IPMI"),
    (1194, "OpenVPN"),
    (1434, "MS-SQL"),
    (1900, "SSDP"),
    (3283, "ARD"),
    (3478, "STUN"),
    (3702, "WS-Discovery"),
    (4500, "IKE NAT-T"),
    (5060, "SIP"),
    (5353, "mDNS"),
    (5683, "CoAP"),
    (6881, "BitTorrent DHT"),
    (10001, "Ubiquiti"),
    (11211, "memcached"),
    (27015, "Steam"),
    (30718, "Lantronix"),
    (32414, "Plex"),
    (33848, "Jenkins"),
    (37810, "DVR DHCPDiscover"),
    (47808, "BACnet"),
];

/// TCP remote-access and authentication services, with their names.
pub const AUTH_PORTS: &[(u16, &str)] = &[
    (21, "FTP"),
    (22, "SSH"),
    (23, "Telnet"),
    (88, "Kerberos"),
    (110, "POP3"),
    (139, "NetBIOS-SSN"),
    (143, "IMAP"),
    (389, "LDAP"),
    (445, "SMB"),
    (465, "SMTPS"),
    (587, "SMTP submission"),
    (636, "LDAPS"),
    (993, "IMAPS"),
    (995, "POP3S"),
    (1433, "MS-SQL"),
    (1521, "Oracle"),
    (2222, "SSH (alt)"),
    (3306, "MySQL"),
    (3389, "RDP"),
    (5432, "PostgreSQL"),
    (5900, "VNC"),
    (5901, "VNC"),
    (5902, "VNC"),
    (5985, "WinRM"),
    (5986, "WinRM"),
    (8291, "MikroTik Winbox"),
];

/// ICS protocols: (IP protocol, port, name).
pub const ICS_PORTS: &[(u8, u16, &str)] = &[
    (6, 502, "Modbus/TCP"),
    (6, 20000, "DNP3"),
    (17, 20000, "DNP3"),
    (6, 102, "S7comm (ISO-TSAP)"),
    (6, 2404, "IEC 60870-5-104"),
    (6, 44818, "EtherNet/IP"),
    (17, 44818, "EtherNet/IP"),
    (17, 2222, "EtherNet/IP I/O"),
    (6, 4840, "OPC UA"),
    (6, 1911, "Niagara Fox"),
    (17, 47808, "BACnet"),
];

pub(crate) fn name_of(list: &[(u16, &'static str)], port: u16) -> Option<&'static str> {
    list.iter().find(|(p, _)| *p == port).map(|(_, n)| *n)
}

/// The reflector service on UDP `port` (or one configured in `extra`).
pub fn reflector(port: u16, extra: &[u16]) -> Option<&'static str> {
    name_of(REFLECTOR_PORTS, port)
        .or_else(|| extra.contains(&port).then_some("configured reflector"))
}

/// The authentication service on TCP `port` (or one configured in `extra`).
pub fn auth_service(port: u16, extra: &[u16]) -> Option<&'static str> {
    name_of(AUTH_PORTS, port).or_else(|| extra.contains(&port).then_some("configured service"))
}

/// The ICS protocol on `port` of IP protocol `proto`.
pub fn ics_name(proto: u8, port: u16) -> Option<&'static str> {
    ICS_PORTS
        .iter()
        .find(|(pr, p, _)| *pr == proto && *p == port)
        .map(|x| x.2)
}
