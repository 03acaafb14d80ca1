//! Application-layer metadata of a flow: what its DNS, TLS, HTTP, SSH or
//! ICS protocol said, as the sensor extracted it from the flow's packets.
//!
//! The vocabulary follows the tools analysts already read: Zeek's dns.log,
//! ssl.log, http.log, ssh.log and modbus.log field meanings, FoxIO's JA4 and
//! JA4S, Salesforce's HASSH, and Wireshark's names of ICS function codes.
//! Identification fields (a query name, a server name) repeat on every
//! record of a flow; ICS counts are per record, as packet counts are.

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// Longest string field accepted from the wire (a DNS name is at most 253
/// characters; a path or banner is cut by the sensor well below this).
pub const MAX_TEXT: usize = 1024;
/// Most entries of a list field accepted from the wire.
pub const MAX_LIST: usize = 64;

/// An application protocol recognized by content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppProto {
    /// DNS over UDP or TCP.
    Dns,
    /// TLS (a ClientHello or ServerHello seen).
    Tls,
    /// HTTP/1.x.
    Http,
    /// SSH.
    Ssh,
    /// Modbus/TCP.
    Modbus,
    /// DNP3 over TCP or UDP.
    Dnp3,
    /// Siemens S7comm (ISO-on-TCP).
    S7comm,
    /// Siemens S7comm-plus.
    S7commPlus,
    /// IEC 60870-5-104.
    Iec104,
    /// EtherNet/IP with CIP.
    Enip,
    /// BACnet/IP.
    Bacnet,
    /// OPC UA binary.
    OpcUa,
    /// QUIC (its Initial packets: the TLS hellos they carry, in `tls`).
    Quic,
}

impl AppProto {
    /// Every protocol, in wire order.
    pub const ALL: [AppProto; 13] = [
        AppProto::Dns,
        AppProto::Tls,
        AppProto::Http,
        AppProto::Ssh,
        AppProto::Modbus,
        AppProto::Dnp3,
        AppProto::S7comm,
        AppProto::S7commPlus,
        AppProto::Iec104,
        AppProto::Enip,
        AppProto::Bacnet,
        AppProto::OpcUa,
        AppProto::Quic,
    ];

    /// The lowercase name used in JSON and queries (Zeek's and
    /// Wireshark's, where they agree).
    pub fn as_str(self) -> &'static str {
        match self {
            AppProto::Dns => "dns",
            AppProto::Tls => "tls",
            AppProto::Http => "http",
            AppProto::Ssh => "ssh",
            AppProto::Modbus => "modbus",
            AppProto::Dnp3 => "dnp3",
            AppProto::S7comm => "s7comm",
            AppProto::S7commPlus => "s7comm-plus",
            AppProto::Iec104 => "iec104",
            AppProto::Enip => "enip",
            AppProto::Bacnet => "bacnet",
            AppProto::OpcUa => "opcua",
            AppProto::Quic => "quic",
        }
    }

    /// The protocol of a name [`AppProto::as_str`] gives.
    pub fn parse(s: &str) -> Option<AppProto> {
        AppProto::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether this is an industrial control protocol (its metadata is [`Ics`]).
    pub fn is_ics(self) -> bool {
        !matches!(
            self,
            AppProto::Dns | AppProto::Tls | AppProto::Http | AppProto::Ssh | AppProto::Quic
        )
    }

    /// The `AppProto` enum's wire value.
    pub fn to_wire(self) -> i32 {
        AppProto::ALL.iter().position(|p| *p == self).unwrap_or(0) as i32 + 1
    }

    /// The protocol of a wire value, `None` for an unknown one.
    pub fn from_wire(v: i32) -> Option<AppProto> {
        usize::try_from(v - 1)
            .ok()
            .and_then(|i| AppProto::ALL.get(i).copied())
    }
}

/// A flow's application metadata: `proto`, and the part that goes with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct App {
    /// The protocol; `None` only in a value under construction.
    pub proto: Option<AppProto>,
    /// DNS.
    pub dns: Option<Box<Dns>>,
    /// TLS.
    pub tls: Option<Box<Tls>>,
    /// HTTP.
    pub http: Option<Box<Http>>,
    /// SSH.
    pub ssh: Option<Box<Ssh>>,
    /// The ICS protocols.
    pub ics: Option<Box<Ics>>,
}

/// The flow's first DNS query and its response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    /// Transaction id.
    pub id: u16,
    /// Query name, lowercase, without the final dot (Zeek's `query`).
    pub qname: String,
    /// Query type (1 A, 28 AAAA, …).
    pub qtype: u16,
    /// Response code; `None` until a response was seen.
    pub rcode: Option<u8>,
    /// The first A, AAAA and CNAME answers (at most 8), as text.
    pub answers: Vec<String>,
    /// The response's answer count.
    pub answer_count: u16,
}

/// A TLS handshake's client and server hellos.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// Server name indication (empty when the client sent none).
    pub sni: String,
    /// Protocols the client offered (ALPN), in its order.
    pub alpn: Vec<String>,
    /// Negotiated version (0x0304 TLS 1.3); 0 before a ServerHello.
    pub version: u16,
    /// FoxIO JA4 of the ClientHello.
    pub ja4: String,
    /// FoxIO JA4S of the ServerHello.
    pub ja4s: String,
    /// The protocol the server chose.
    pub server_alpn: String,
}

/// The flow's first HTTP/1.x request and response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Http {
    /// Request method.
    pub method: String,
    /// Host header.
    pub host: String,
    /// Request target, cut at 256 bytes.
    pub path: String,
    /// Response status; 0 before a response.
    pub status: u16,
    /// User-Agent header, cut at 256 bytes.
    pub user_agent: String,
}

/// An SSH session's banners and key-exchange fingerprints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ssh {
    /// Client identification string (without CR LF).
    pub client: String,
    /// Server identification string.
    pub server: String,
    /// HASSH of the client's KEXINIT.
    pub hassh: String,
    /// HASSHServer of the server's KEXINIT.
    pub hassh_server: String,
}

/// An ICS protocol's operations within one record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ics {
    /// `(code, count)` of the requests' function codes, by code (at most
    /// 32 codes): see the `Ics` message of the protocol for each
    /// protocol's codes.
    pub functions: Vec<(u16, u64)>,
    /// Modbus unit ids, DNP3 destination addresses (at most 16).
    pub units: Vec<u16>,
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Control: operate, program download, start, stop, restart.
    pub control: u64,
    /// Diagnostics.
    pub diagnostics: u64,
    /// Discovery (who-is, list-identity, …).
    pub discovery: u64,
    /// IEC 104 causes of transmission, EtherNet/IP encapsulation commands.
    pub causes: Vec<(u16, u64)>,
    /// Exception or error responses.
    pub exceptions: u64,
    /// PDUs that could not be parsed.
    pub malformed: u64,
}

impl App {
    /// Metadata of one protocol, its part empty.
    pub fn of(proto: AppProto) -> App {
        let mut a = App {
            proto: Some(proto),
            ..App::default()
        };
        match proto {
            AppProto::Dns => a.dns = Some(Box::default()),
            AppProto::Tls | AppProto::Quic => a.tls = Some(Box::default()),
            AppProto::Http => a.http = Some(Box::default()),
            AppProto::Ssh => a.ssh = Some(Box::default()),
            _ => a.ics = Some(Box::default()),
        }
        a
    }
}

/// A DNS query type's mnemonic, where it has a common one.
pub fn qtype_name(t: u16) -> Option<&'static str> {
    Some(match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        10 => "NULL",
        _ => return None,
    })
}

/// A DNS response code's mnemonic (RFC 6895's names, as Zeek's `rcode_name`).
pub fn rcode_name(r: u8) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => "UNKNOWN",
    }
}

/// The name of an ICS function code of `proto`, as Wireshark's dissector
/// (snake case) names it, where there is one.
pub fn ics_function_name(proto: AppProto, code: u16) -> Option<&'static str> {
    Some(match (proto, code) {
        (AppProto::Modbus, 1) => "read_coils",
        (AppProto::Modbus, 2) => "read_discrete_inputs",
        (AppProto::Modbus, 3) => "read_holding_registers",
        (AppProto::Modbus, 4) => "read_input_registers",
        (AppProto::Modbus, 5) => "write_single_coil",
        (AppProto::Modbus, 6) => "write_single_register",
        (AppProto::Modbus, 7) => "read_exception_status",
        (AppProto::Modbus, 8) => "diagnostics",
        (AppProto::Modbus, 11) => "get_comm_event_counter",
        (AppProto::Modbus, 12) => "get_comm_event_log",
        (AppProto::Modbus, 15) => "write_multiple_coils",
        (AppProto::Modbus, 16) => "write_multiple_registers",
        (AppProto::Modbus, 17) => "report_server_id",
        (AppProto::Modbus, 20) => "read_file_record",
        (AppProto::Modbus, 21) => "write_file_record",
        (AppProto::Modbus, 22) => "mask_write_register",
        (AppProto::Modbus, 23) => "read_write_multiple_registers",
        (AppProto::Modbus, 24) => "read_fifo_queue",
        (AppProto::Modbus, 43) => "encapsulated_interface_transport",
        (AppProto::Dnp3, 0) => "confirm",
        (AppProto::Dnp3, 1) => "read",
        (AppProto::Dnp3, 2) => "write",
        (AppProto::Dnp3, 3) => "select",
        (AppProto::Dnp3, 4) => "operate",
        (AppProto::Dnp3, 5) => "direct_operate",
        (AppProto::Dnp3, 6) => "direct_operate_no_ack",
        (AppProto::Dnp3, 7) => "immediate_freeze",
        (AppProto::Dnp3, 9) => "freeze_clear",
        (AppProto::Dnp3, 13) => "cold_restart",
        (AppProto::Dnp3, 14) => "warm_restart",
        (AppProto::Dnp3, 16) => "initialize_application",
        (AppProto::Dnp3, 17) => "start_application",
        (AppProto::Dnp3, 18) => "stop_application",
        (AppProto::Dnp3, 20) => "enable_unsolicited",
        (AppProto::Dnp3, 21) => "disable_unsolicited",
        (AppProto::Dnp3, 23) => "delay_measure",
        (AppProto::Dnp3, 24) => "record_current_time",
        (AppProto::Dnp3, 25) => "open_file",
        (AppProto::Dnp3, 27) => "delete_file",
        (AppProto::Dnp3, 129) => "response",
        (AppProto::Dnp3, 130) => "unsolicited_response",
        (AppProto::S7comm, 0x00) => "cpu_services",
        (AppProto::S7comm, 0x04) => "read_var",
        (AppProto::S7comm, 0x05) => "write_var",
        (AppProto::S7comm, 0x1a) => "request_download",
        (AppProto::S7comm, 0x1b) => "download_block",
        (AppProto::S7comm, 0x1c) => "download_ended",
        (AppProto::S7comm, 0x1d) => "start_upload",
        (AppProto::S7comm, 0x1e) => "upload",
        (AppProto::S7comm, 0x1f) => "end_upload",
        (AppProto::S7comm, 0x28) => "pi_service",
        (AppProto::S7comm, 0x29) => "plc_stop",
        (AppProto::S7comm, 0xf0) => "setup_communication",
        (AppProto::S7commPlus, 0x04bb) => "explore",
        (AppProto::S7commPlus, 0x04ca) => "create_object",
        (AppProto::S7commPlus, 0x04d4) => "delete_object",
        (AppProto::S7commPlus, 0x04f2) => "set_variable",
        (AppProto::S7commPlus, 0x04fc) => "get_variable",
        (AppProto::S7commPlus, 0x0524) => "get_var_substreamed",
        (AppProto::S7commPlus, 0x0542) => "set_multi_variables",
        (AppProto::S7commPlus, 0x054c) => "get_multi_variables",
        (AppProto::S7commPlus, 0x0556) => "begin_sequence",
        (AppProto::S7commPlus, 0x0560) => "end_sequence",
        (AppProto::S7commPlus, 0x056b) => "invoke",
        (AppProto::S7commPlus, 0x0586) => "get_link",
        (AppProto::Iec104, 1) => "M_SP_NA_1",
        (AppProto::Iec104, 3) => "M_DP_NA_1",
        (AppProto::Iec104, 9) => "M_ME_NA_1",
        (AppProto::Iec104, 11) => "M_ME_NB_1",
        (AppProto::Iec104, 13) => "M_ME_NC_1",
        (AppProto::Iec104, 30) => "M_SP_TB_1",
        (AppProto::Iec104, 31) => "M_DP_TB_1",
        (AppProto::Iec104, 36) => "M_ME_TF_1",
        (AppProto::Iec104, 45) => "C_SC_NA_1",
        (AppProto::Iec104, 46) => "C_DC_NA_1",
        (AppProto::Iec104, 47) => "C_RC_NA_1",
        (AppProto::Iec104, 48) => "C_SE_NA_1",
        (AppProto::Iec104, 49) => "C_SE_NB_1",
        (AppProto::Iec104, 50) => "C_SE_NC_1",
        (AppProto::Iec104, 51) => "C_BO_NA_1",
        (AppProto::Iec104, 58) => "C_SC_TA_1",
        (AppProto::Iec104, 59) => "C_DC_TA_1",
        (AppProto::Iec104, 70) => "M_EI_NA_1",
        (AppProto::Iec104, 100) => "C_IC_NA_1",
        (AppProto::Iec104, 101) => "C_CI_NA_1",
        (AppProto::Iec104, 102) => "C_RD_NA_1",
        (AppProto::Iec104, 103) => "C_CS_NA_1",
        (AppProto::Iec104, 104) => "C_TS_NA_1",
        (AppProto::Iec104, 105) => "C_RP_NA_1",
        (AppProto::Iec104, 107) => "C_TS_TA_1",
        (AppProto::Enip, 0x01) => "get_attributes_all",
        (AppProto::Enip, 0x02) => "set_attributes_all",
        (AppProto::Enip, 0x03) => "get_attribute_list",
        (AppProto::Enip, 0x04) => "set_attribute_list",
        (AppProto::Enip, 0x05) => "reset",
        (AppProto::Enip, 0x06) => "start",
        (AppProto::Enip, 0x07) => "stop",
        (AppProto::Enip, 0x0a) => "multiple_service_packet",
        (AppProto::Enip, 0x0e) => "get_attribute_single",
        (AppProto::Enip, 0x10) => "set_attribute_single",
        (AppProto::Enip, 0x4b) => "execute_pccc",
        (AppProto::Enip, 0x4c) => "read_tag",
        (AppProto::Enip, 0x4d) => "write_tag",
        (AppProto::Enip, 0x4e) => "forward_close",
        (AppProto::Enip, 0x52) => "unconnected_send",
        (AppProto::Enip, 0x53) => "write_tag_fragmented",
        (AppProto::Enip, 0x54) => "forward_open",
        (AppProto::Enip, 0x5b) => "large_forward_open",
        (AppProto::Bacnet, 0) => "acknowledge_alarm",
        (AppProto::Bacnet, 5) => "subscribe_cov",
        (AppProto::Bacnet, 6) => "atomic_read_file",
        (AppProto::Bacnet, 7) => "atomic_write_file",
        (AppProto::Bacnet, 8) => "add_list_element",
        (AppProto::Bacnet, 9) => "remove_list_element",
        (AppProto::Bacnet, 10) => "create_object",
        (AppProto::Bacnet, 11) => "delete_object",
        (AppProto::Bacnet, 12) => "read_property",
        (AppProto::Bacnet, 14) => "read_property_multiple",
        (AppProto::Bacnet, 15) => "write_property",
        (AppProto::Bacnet, 16) => "write_property_multiple",
        (AppProto::Bacnet, 17) => "device_communication_control",
        (AppProto::Bacnet, 18) => "confirmed_private_transfer",
        (AppProto::Bacnet, 20) => "reinitialize_device",
        (AppProto::Bacnet, 26) => "read_range",
        (AppProto::Bacnet, 0x100) => "i_am",
        (AppProto::Bacnet, 0x101) => "i_have",
        (AppProto::Bacnet, 0x102) => "unconfirmed_cov_notification",
        (AppProto::Bacnet, 0x103) => "unconfirmed_event_notification",
        (AppProto::Bacnet, 0x104) => "unconfirmed_private_transfer",
        (AppProto::Bacnet, 0x105) => "unconfirmed_text_message",
        (AppProto::Bacnet, 0x106) => "time_synchronization",
        (AppProto::Bacnet, 0x107) => "who_has",
        (AppProto::Bacnet, 0x108) => "who_is",
        (AppProto::Bacnet, 0x109) => "utc_time_synchronization",
        (AppProto::OpcUa, 422) => "find_servers",
        (AppProto::OpcUa, 428) => "get_endpoints",
        (AppProto::OpcUa, 446) => "open_secure_channel",
        (AppProto::OpcUa, 452) => "close_secure_channel",
        (AppProto::OpcUa, 461) => "create_session",
        (AppProto::OpcUa, 467) => "activate_session",
        (AppProto::OpcUa, 473) => "close_session",
        (AppProto::OpcUa, 527) => "browse",
        (AppProto::OpcUa, 631) => "read",
        (AppProto::OpcUa, 673) => "write",
        (AppProto::OpcUa, 712) => "call",
        (AppProto::OpcUa, 751) => "create_monitored_items",
        (AppProto::OpcUa, 787) => "create_subscription",
        (AppProto::OpcUa, 826) => "publish",
        _ => return None,
    })
}

struct Counts<'a>(AppProto, &'a [(u16, u64)], bool);

impl Serialize for Counts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        #[derive(Serialize)]
        struct Entry {
            code: u16,
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<&'static str>,
            count: u64,
        }
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for &(code, count) in self.1 {
            let name = if self.2 {
                ics_function_name(self.0, code)
            } else {
                None
            };
            seq.serialize_element(&Entry { code, name, count })?;
        }
        seq.end()
    }
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The `app` object of the `vigil flows` JSON contract:
/// `{"proto": "dns", "dns": {…}}`.
impl Serialize for App {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("App", 2)?;
        st.serialize_field("proto", &self.proto.map(AppProto::as_str))?;
        if let Some(d) = &self.dns {
            st.serialize_field("dns", &DnsJson(d))?;
        }
        if let Some(t) = &self.tls {
            st.serialize_field("tls", &TlsJson(t))?;
        }
        if let Some(h) = &self.http {
            st.serialize_field("http", &HttpJson(h))?;
        }
        if let Some(x) = &self.ssh {
            st.serialize_field("ssh", &SshJson(x))?;
        }
        if let (Some(i), Some(p)) = (&self.ics, self.proto) {
            st.serialize_field("ics", &IcsJson(p, i))?;
        }
        st.end()
    }
}

struct DnsJson<'a>(&'a Dns);
impl Serialize for DnsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let mut st = s.serialize_struct("Dns", 8)?;
        st.serialize_field("id", &d.id)?;
        st.serialize_field("qname", &d.qname)?;
        st.serialize_field("qtype", &d.qtype)?;
        st.serialize_field("qtype_name", &qtype_name(d.qtype))?;
        st.serialize_field("rcode", &d.rcode)?;
        st.serialize_field("rcode_name", &d.rcode.map(rcode_name))?;
        st.serialize_field("answers", &d.answers)?;
        st.serialize_field("answer_count", &d.answer_count)?;
        st.end()
    }
}

struct TlsJson<'a>(&'a Tls);
impl Serialize for TlsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut st = s.serialize_struct("Tls", 6)?;
        st.serialize_field("sni", &nonempty(&t.sni))?;
        st.serialize_field("alpn", &t.alpn)?;
        st.serialize_field("version", &tls_version_name(t.version))?;
        st.serialize_field("ja4", &nonempty(&t.ja4))?;
        st.serialize_field("ja4s", &nonempty(&t.ja4s))?;
        st.serialize_field("server_alpn", &nonempty(&t.server_alpn))?;
        st.end()
    }
}

/// A TLS version as Zeek's ssl.log writes it (`TLSv13`), `None` for 0.
pub fn tls_version_name(v: u16) -> Option<&'static str> {
    Some(match v {
        0 => return None,
        0x0300 => "SSLv3",
        0x0301 => "TLSv10",
        0x0302 => "TLSv11",
        0x0303 => "TLSv12",
        0x0304 => "TLSv13",
        0x0002 => "SSLv2",
        _ => "unknown",
    })
}

struct HttpJson<'a>(&'a Http);
impl Serialize for HttpJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = self.0;
        let mut st = s.serialize_struct("Http", 5)?;
        st.serialize_field("method", &nonempty(&h.method))?;
        st.serialize_field("host", &nonempty(&h.host))?;
        st.serialize_field("path", &nonempty(&h.path))?;
        st.serialize_field("status", &(h.status != 0).then_some(h.status))?;
        st.serialize_field("user_agent", &nonempty(&h.user_agent))?;
        st.end()
    }
}

struct SshJson<'a>(&'a Ssh);
impl Serialize for SshJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        let mut st = s.serialize_struct("Ssh", 4)?;
        st.serialize_field("client", &nonempty(&x.client))?;
        st.serialize_field("server", &nonempty(&x.server))?;
        st.serialize_field("hassh", &nonempty(&x.hassh))?;
        st.serialize_field("hassh_server", &nonempty(&x.hassh_server))?;
        st.end()
    }
}

struct IcsJson<'a>(AppProto, &'a Ics);
impl Serialize for IcsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (p, i) = (self.0, self.1);
        let mut st = s.serialize_struct("Ics", 10)?;
        st.serialize_field("functions", &Counts(p, &i.functions, true))?;
        st.serialize_field("units", &i.units)?;
        st.serialize_field("reads", &i.reads)?;
        st.serialize_field("writes", &i.writes)?;
        st.serialize_field("control", &i.control)?;
        st.serialize_field("diagnostics", &i.diagnostics)?;
        st.serialize_field("discovery", &i.discovery)?;
        st.serialize_field("causes", &Counts(p, &i.causes, false))?;
        st.serialize_field("exceptions", &i.exceptions)?;
        st.serialize_field("malformed", &i.malformed)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_the_functions_and_the_dns_codes() {
        let mut m = App::of(AppProto::Modbus);
        let i = m.ics.as_mut().unwrap();
        i.functions = vec![(3, 10), (6, 1)];
        i.writes = 1;
        let j = serde_json::to_value(m).unwrap();
        assert_eq!(j["proto"], "modbus");
        assert_eq!(j["ics"]["functions"][0]["name"], "read_holding_registers");
        assert_eq!(j["ics"]["writes"], 1);
        let mut d = App::of(AppProto::Dns);
        let x = d.dns.as_mut().unwrap();
        x.qname = "example.org".into();
        x.qtype = 28;
        x.rcode = Some(3);
        let j = serde_json::to_value(d).unwrap();
        assert_eq!(j["dns"]["qtype_name"], "AAAA");
        assert_eq!(j["dns"]["rcode_name"], "NXDOMAIN");
        for p in AppProto::ALL {
            assert_eq!(AppProto::parse(p.as_str()), Some(p));
            assert_eq!(AppProto::from_wire(p.to_wire()), Some(p));
        }
    }
}
