//! The filter language: tcpdump/nfdump primitives joined by `and`, `or`,
//! `not` and parentheses, parsed into a typed [`Filter`].
//!
//! ```text
//! expr    := term (("or" | "||") term)*
//! term    := factor (("and" | "&&") factor)*
//! factor  := ("not" | "!") factor | "(" expr ")" | primitive
//! primitive :=
//!     [src|dst] (host|ip) ADDR          one address
//!   | [src|dst] net CIDR                 a network, e.g. 10.20.0.0/16, 2001:db8::/32
//!   | [src|dst] port N                   one port (flows of protocols with ports)
//!   | [src|dst] portrange N-M            a port range
//!   | proto NAME|N  |  tcp | udp | icmp | icmp6 | sctp | gre | esp
//!   | ip4 | inet | ip6 | inet6           address family
//!   | vlan N                             either VLAN id of the flow
//!   | state S0|SF|REJ|…                  Zeek connection state
//!   | (bytes|packets) (>|<|>=|<=|=) N    both directions summed
//!   | sensor ID                          the sensor that reported the flow
//!   | cid 1:BASE64                       Community ID (pivot from Zeek/Suricata)
//!   | app [=] NAME                       application protocol: dns tls http ssh modbus
//!                                        dnp3 s7comm s7comm-plus iec104 enip bacnet opcua
//!   | TEXT [= | suffix | contains] VALUE dns.qname, tls.sni, http.host, ssh.client,
//!                                        tls.ja4, ssh.hassh; case-insensitive; `suffix`
//!                                        matches a domain and the names under it
//!   | ics.(reads|writes|control) (>|<|>=|<=|=) N   ICS operations in the record
//! ```
//! Without `src`/`dst` an address or port primitive matches either end.
//! Keywords are case-insensitive. An empty filter matches every flow.
//! Errors carry the 1-based column of the offending token.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use thiserror::Error;
use vigil_proto::{CommunityId, ConnState};

use vigil_proto::AppProto;

use super::{AppText, Cmp, Counter, Dir, Filter, IcsCounter, IpRange, TextOp};

/// A filter that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("filter: column {column}: {message}")]
pub struct ParseError {
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What was expected and what was found.
    pub message: String,
}

impl ParseError {
    /// The filter with a caret under the offending column, for terminals.
    pub fn render(&self, filter: &str) -> String {
        format!(
            "{self}\n  {filter}\n  {}^",
            " ".repeat(self.column.saturating_sub(1))
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    LParen,
    RParen,
    Not,
    And,
    Or,
    Op(Cmp),
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "`{w}`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::Not => f.write_str("`!`"),
            Tok::And => f.write_str("`&&`"),
            Tok::Or => f.write_str("`||`"),
            Tok::Op(c) => write!(f, "`{}`", c.as_str()),
        }
    }
}

/// Longest filter accepted, in bytes: a bound against hostile input.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses and `not`.
const MAX_DEPTH: usize = 64;

fn lex(s: &str) -> Result<Vec<(Tok<'_>, usize)>, ParseError> {
    let mut toks = Vec::new();
    let col = |byte: usize| s[..byte].chars().count() + 1;
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let two = s.get(i..i + 2).unwrap_or("");
        let (tok, len) = match c {
            c if c.is_whitespace() => {
                i += c.len_utf8();
                continue;
            }
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '&' if two == "&&" => (Tok::And, 2),
            '|' if two == "||" => (Tok::Or, 2),
            '!' if two == "!=" => {
                return Err(ParseError {
                    column: col(i),
                    message: "`!=` is not supported; use `not (… = N)`".into(),
                });
            }
            '!' => (Tok::Not, 1),
            '>' | '<' | '=' => match (c, two) {
                (_, ">=") => (Tok::Op(Cmp::Ge), 2),
                (_, "<=") => (Tok::Op(Cmp::Le), 2),
                (_, "==") => (Tok::Op(Cmp::Eq), 2),
                ('>', _) => (Tok::Op(Cmp::Gt), 1),
                ('<', _) => (Tok::Op(Cmp::Lt), 1),
                _ => (Tok::Op(Cmp::Eq), 1),
            },
            c if is_word_char(c) => {
                // Word characters are ASCII, so bytes are characters.
                let mut len = s[i..]
                    .find(|c: char| !is_word_char(c))
                    .unwrap_or(s.len() - i);
                // Base64 padding ends a Community ID (`1:…=`).
                if s[i..].starts_with("1:") {
                    len += s[i + len..].bytes().take_while(|&b| b == b'=').count();
                }
                (Tok::Word(&s[i..i + len]), len)
            }
            c => {
                return Err(ParseError {
                    column: col(i),
                    message: format!("unexpected character {c:?}"),
                });
            }
        };
        toks.push((tok, col(i)));
        i += len;
    }
    Ok(toks)
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '-' | '_' | '+')
}

struct Parser<'a> {
    toks: Vec<(Tok<'a>, usize)>,
    pos: usize,
    end_col: usize,
    depth: usize,
}

/// Parses a filter. An empty (or all-blank) filter is [`Filter::All`].
pub fn parse(s: &str) -> Result<Filter, ParseError> {
    if s.len() > MAX_FILTER_LEN {
        return Err(ParseError {
            column: 1,
            message: format!("filter of {} bytes (at most {MAX_FILTER_LEN})", s.len()),
        });
    }
    let toks = lex(s)?;
    if toks.is_empty() {
        return Ok(Filter::All);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        end_col: s.chars().count() + 1,
        depth: 0,
    };
    let f = p.expr()?;
    if let Some((t, c)) = p.toks.get(p.pos) {
        return Err(ParseError {
            column: *c,
            message: format!("expected `and`, `or` or the end, found {t}"),
        });
    }
    Ok(f)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end_col, |(_, c)| *c)
    }

    fn err<T>(&self, expected: &str) -> Result<T, ParseError> {
        let found = match self.peek() {
            Some(t) => t.to_string(),
            None => "the end of the filter".to_string(),
        };
        Err(ParseError {
            column: self.col(),
            message: format!("expected {expected}, found {found}"),
        })
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn word(&mut self, expected: &str) -> Result<(&'a str, usize), ParseError> {
        match self.toks.get(self.pos) {
            Some((Tok::Word(w), c)) => {
                let r = (*w, *c);
                self.pos += 1;
                Ok(r)
            }
            _ => self.err(expected),
        }
    }

    fn expr(&mut self) -> Result<Filter, ParseError> {
        let mut parts = vec![self.term()?];
        while matches!(self.peek(), Some(Tok::Or)) || self.keyword("or") {
            self.pos += 1;
            parts.push(self.term()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }

    fn term(&mut self) -> Result<Filter, ParseError> {
        let mut parts = vec![self.factor()?];
        while matches!(self.peek(), Some(Tok::And)) || self.keyword("and") {
            self.pos += 1;
            parts.push(self.factor()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn factor(&mut self) -> Result<Filter, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(ParseError {
                column: self.col(),
                message: format!("nested deeper than {MAX_DEPTH}"),
            });
        }
        if matches!(self.peek(), Some(Tok::Not)) || self.keyword("not") {
            self.pos += 1;
            self.depth += 1;
            let inner = self.factor()?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if matches!(self.peek(), Some(Tok::LParen)) {
            self.pos += 1;
            self.depth += 1;
            let inner = self.expr()?;
            self.depth -= 1;
            if !matches!(self.peek(), Some(Tok::RParen)) {
                return self.err("`)`");
            }
            self.pos += 1;
            return Ok(inner);
        }
        self.primitive()
    }

    /// `OP N`: a comparison with a number the stores can hold (SQLite's
    /// integers are i64).
    fn comparison(&mut self) -> Result<(Cmp, u64), ParseError> {
        let op = match self.peek() {
            Some(Tok::Op(op)) => *op,
            _ => return self.err("a comparison (>, <, >=, <=, =)"),
        };
        self.pos += 1;
        let (w, c) = self.word("a number")?;
        let n = parse_num::<u64>(w, c, "a number")?;
        if n > i64::MAX as u64 {
            return Err(ParseError {
                column: c,
                message: format!("`{w}` is too large"),
            });
        }
        Ok((op, n))
    }

    fn primitive(&mut self) -> Result<Filter, ParseError> {
        const EXPECTED: &str = "a primitive (host, net, port, portrange, proto, tcp, udp, icmp, ip4, ip6, vlan, state, bytes, packets, sensor, cid, app, dns.qname, tls.sni, tls.ja4, http.host, ssh.client, ssh.hassh, ics.reads, ics.writes, ics.control), `not` or `(`";
        let dir = if self.keyword("src") {
            self.pos += 1;
            Some(Dir::Src)
        } else if self.keyword("dst") {
            self.pos += 1;
            Some(Dir::Dst)
        } else {
            None
        };
        let (kw, kw_col) = self.word(if dir.is_some() {
            "`host`, `net`, `port` or `portrange`"
        } else {
            EXPECTED
        })?;
        let kw = kw.to_ascii_lowercase();
        let dir_any = dir.unwrap_or(Dir::Either);
        let directional = matches!(kw.as_str(), "host" | "ip" | "net" | "port" | "portrange");
        if dir.is_some() && !directional {
            return Err(ParseError {
                column: kw_col,
                message: format!(
                    "expected `host`, `net`, `port` or `portrange` after `src`/`dst`, found `{kw}`"
                ),
            });
        }
        Ok(match kw.as_str() {
            "host" | "ip" => {
                let (w, c) = self.word("an IP address")?;
                let ip: IpAddr = w.parse().map_err(|_| ParseError {
                    column: c,
                    message: format!("`{w}` is not an IP address"),
                })?;
                Filter::Ip(dir_any, IpRange::host(ip))
            }
            "net" => {
                let (w, c) = self.word("a network such as 10.0.0.0/8")?;
                Filter::Ip(dir_any, parse_cidr(w, c)?)
            }
            "port" => {
                let (w, c) = self.word("a port number")?;
                let p = parse_num::<u16>(w, c, "a port number (0-65535)")?;
                Filter::Port(dir_any, p, p)
            }
            "portrange" => {
                let (w, c) = self.word("a port range such as 1024-65535")?;
                let bad = || ParseError {
                    column: c,
                    message: format!("`{w}` is not a port range such as 1024-65535"),
                };
                let (a, b) = w.split_once('-').ok_or_else(bad)?;
                let lo = a.parse::<u16>().map_err(|_| bad())?;
                let hi = b.parse::<u16>().map_err(|_| bad())?;
                if lo > hi {
                    return Err(bad());
                }
                Filter::Port(dir_any, lo, hi)
            }
            "proto" => {
                let (w, c) = self.word("a protocol name or number")?;
                Filter::Proto(proto_number(w).ok_or_else(|| ParseError {
                    column: c,
                    message: format!("`{w}` is not a protocol name or number (0-255)"),
                })?)
            }
            "tcp" | "udp" | "icmp" | "icmp6" | "sctp" | "gre" | "esp" => {
                Filter::Proto(proto_number(&kw).unwrap_or(0))
            }
            "ip4" | "inet" => Filter::Family(4),
            "ip6" | "inet6" => Filter::Family(6),
            "vlan" => {
                let (w, c) = self.word("a VLAN id")?;
                let v = parse_num::<u16>(w, c, "a VLAN id (1-4095)")?;
                if !(1..=4095).contains(&v) {
                    return Err(ParseError {
                        column: c,
                        message: format!("`{w}` is not a VLAN id (1-4095)"),
                    });
                }
                Filter::Vlan(v)
            }
            "state" => {
                let (w, c) = self.word("a connection state such as S0 or SF")?;
                Filter::State(ConnState::parse(w).ok_or_else(|| ParseError {
                    column: c,
                    message: format!(
                        "`{w}` is not a connection state (S0 S1 SF REJ S2 S3 RSTO RSTR RSTOS0 RSTRH SH SHR OTH)"
                    ),
                })?)
            }
            "bytes" | "packets" => {
                let counter = if kw == "bytes" {
                    Counter::Bytes
                } else {
                    Counter::Packets
                };
                let (op, n) = self.comparison()?;
                Filter::Counter(counter, op, n)
            }
            "sensor" => {
                let (w, _) = self.word("a sensor id")?;
                Filter::Sensor(w.to_string())
            }
            "app" => {
                if matches!(self.peek(), Some(Tok::Op(Cmp::Eq))) {
                    self.pos += 1;
                }
                let (w, c) = self.word("an application protocol such as dns or modbus")?;
                Filter::App(AppProto::parse(&w.to_ascii_lowercase()).ok_or_else(|| {
                    let names: Vec<&str> = AppProto::ALL.iter().map(|p| p.as_str()).collect();
                    ParseError {
                        column: c,
                        message: format!(
                            "`{w}` is not an application protocol ({})",
                            names.join(" ")
                        ),
                    }
                })?)
            }
            "ics.reads" | "ics.writes" | "ics.control" => {
                let counter = match kw.as_str() {
                    "ics.reads" => IcsCounter::Reads,
                    "ics.writes" => IcsCounter::Writes,
                    _ => IcsCounter::Control,
                };
                let (op, n) = self.comparison()?;
                Filter::Ics(counter, op, n)
            }
            field if AppText::ALL.iter().any(|(_, k)| *k == field) => {
                let text = AppText::ALL
                    .iter()
                    .find(|(_, k)| *k == field)
                    .map_or(AppText::DnsQname, |(t, _)| *t);
                let op = if matches!(self.peek(), Some(Tok::Op(Cmp::Eq))) {
                    self.pos += 1;
                    TextOp::Eq
                } else if self.keyword("suffix") {
                    self.pos += 1;
                    TextOp::Suffix
                } else if self.keyword("contains") {
                    self.pos += 1;
                    TextOp::Contains
                } else {
                    TextOp::Eq
                };
                let (w, c) = self.word("a value (a name, a fingerprint)")?;
                if w.len() > 255 {
                    return Err(ParseError {
                        column: c,
                        message: format!("a value of {} bytes (at most 255)", w.len()),
                    });
                }
                Filter::Text(text, op, w.to_lowercase())
            }
            "cid" | "community-id" => {
                let (w, c) = self.word("a Community ID such as 1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=")?;
                Filter::CommunityId(parse_cid(w).ok_or_else(|| ParseError {
                    column: c,
                    message: format!("`{w}` is not a Community ID v1 (1:<base64 of 20 bytes>)"),
                })?)
            }
            _ => {
                return Err(ParseError {
                    column: kw_col,
                    message: format!("expected {EXPECTED}, found `{kw}`"),
                });
            }
        })
    }
}

fn parse_num<T: std::str::FromStr>(w: &str, c: usize, what: &str) -> Result<T, ParseError> {
    w.parse().map_err(|_| ParseError {
        column: c,
        message: format!("`{w}` is not {what}"),
    })
}

fn parse_cidr(w: &str, c: usize) -> Result<IpRange, ParseError> {
    let bad = |why: &str| ParseError {
        column: c,
        message: format!("`{w}` is not a network ({why})"),
    };
    let (addr, len) = match w.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (w, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad("expected ADDRESS/PREFIX, e.g. 10.20.0.0/16"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| bad(&format!("prefix length must be 0-{max}")))?,
        None => max,
    };
    Ok(IpRange::cidr(ip, len))
}

fn parse_cid(w: &str) -> Option<CommunityId> {
    let b64 = w.strip_prefix("1:")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(CommunityId(<[u8; 20]>::try_from(bytes.as_slice()).ok()?))
}

/// A protocol keyword or number.
pub fn proto_number(w: &str) -> Option<u8> {
    Some(match w.to_ascii_lowercase().as_str() {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmp6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        other => return other.parse().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_primitives_parse_and_name_their_errors() {
        assert_eq!(parse("app dns").unwrap(), Filter::App(AppProto::Dns));
        assert_eq!(
            parse("app = S7comm-Plus").unwrap(),
            Filter::App(AppProto::S7commPlus)
        );
        assert_eq!(
            parse("dns.qname suffix Example.ORG").unwrap(),
            Filter::Text(AppText::DnsQname, TextOp::Suffix, "example.org".into())
        );
        assert_eq!(
            parse("tls.sni = www.example.org").unwrap(),
            Filter::Text(AppText::TlsSni, TextOp::Eq, "www.example.org".into())
        );
        assert_eq!(
            parse("http.host contains cdn and ssh.client openssh_9.6").unwrap(),
            Filter::And(vec![
                Filter::Text(AppText::HttpHost, TextOp::Contains, "cdn".into()),
                Filter::Text(AppText::SshClient, TextOp::Eq, "openssh_9.6".into()),
            ])
        );
        assert_eq!(
            parse("ics.writes > 0").unwrap(),
            Filter::Ics(IcsCounter::Writes, Cmp::Gt, 0)
        );
        let e = parse("app smtp").unwrap_err();
        assert_eq!(e.column, 5);
        assert!(e.message.contains("modbus"), "{}", e.message);
        assert_eq!(parse("ics.control 3").unwrap_err().column, 13);
        assert_eq!(parse("dns.qname suffix").unwrap_err().column, 17);
    }

    #[test]
    fn primitives_parse() {
        assert_eq!(parse("").unwrap(), Filter::All);
        assert_eq!(parse("  ").unwrap(), Filter::All);
        assert_eq!(
            parse("src host 10.0.0.1").unwrap(),
            Filter::Ip(Dir::Src, IpRange::host("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            parse("port 502").unwrap(),
            Filter::Port(Dir::Either, 502, 502)
        );
        assert_eq!(
            parse("dst portrange 1-1024").unwrap(),
            Filter::Port(Dir::Dst, 1, 1024)
        );
        assert_eq!(parse("proto udp").unwrap(), Filter::Proto(17));
        assert_eq!(parse("PROTO 47").unwrap(), Filter::Proto(47));
        assert_eq!(parse("tcp").unwrap(), Filter::Proto(6));
        assert_eq!(parse("state s0").unwrap(), Filter::State(ConnState::S0));
        assert_eq!(
            parse("bytes >= 1000").unwrap(),
            Filter::Counter(Counter::Bytes, Cmp::Ge, 1000)
        );
        assert_eq!(
            parse("packets>5").unwrap(),
            Filter::Counter(Counter::Packets, Cmp::Gt, 5)
        );
        let net = parse("dst net 10.20.0.0/16").unwrap();
        let Filter::Ip(Dir::Dst, r) = net else {
            panic!("{net:?}")
        };
        assert!(r.contains("10.20.255.255".parse().unwrap()));
        assert!(!r.contains("10.21.0.0".parse().unwrap()));
        assert!(!r.contains("::a14:1".parse().unwrap()));
        let v6 = parse("net 2001:db8::/32").unwrap();
        let Filter::Ip(Dir::Either, r) = v6 else {
            panic!("{v6:?}")
        };
        assert!(r.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(parse("cid 1:LQU9qZlK+B5F3KDmev6m5PMibrg=").is_ok());
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let f = parse("tcp or udp and not port 53").unwrap();
        assert_eq!(
            f,
            Filter::Or(vec![
                Filter::Proto(6),
                Filter::And(vec![
                    Filter::Proto(17),
                    Filter::Not(Box::new(Filter::Port(Dir::Either, 53, 53)))
                ])
            ])
        );
        let g = parse("(tcp || udp) && !port 53").unwrap();
        assert_eq!(
            g,
            Filter::And(vec![
                Filter::Or(vec![Filter::Proto(6), Filter::Proto(17)]),
                Filter::Not(Box::new(Filter::Port(Dir::Either, 53, 53)))
            ])
        );
    }

    #[test]
    fn errors_point_at_the_column() {
        let cases = [
            ("src host 10.0.0.300", 10, "not an IP address"),
            ("port 502 and", 13, "found the end"),
            ("port 70000", 6, "not a port number"),
            ("dst net 10.0.0.0/33", 9, "prefix length"),
            ("(tcp or udp", 12, "expected `)`"),
            ("tcp udp", 5, "expected `and`, `or`"),
            ("src proto tcp", 5, "after `src`/`dst`"),
            ("frobnicate 1", 1, "expected a primitive"),
            ("bytes 5", 7, "comparison"),
            (
                "host 1.2.3.4; drop table flows",
                13,
                "unexpected character ';'",
            ),
            ("vlan 0", 6, "VLAN id"),
            ("state XX", 7, "connection state"),
            ("a != 1", 3, "`!=`"),
        ];
        for (filter, column, msg) in cases {
            let e = parse(filter).unwrap_err();
            assert_eq!(e.column, column, "{filter}: {e}");
            assert!(e.message.contains(msg), "{filter}: {e}");
        }
        let e = parse("port x").unwrap_err();
        assert_eq!(
            e.render("port x"),
            "filter: column 6: `x` is not a port number (0-65535)\n  port x\n       ^"
        );
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = "(".repeat(10_000);
        assert!(parse(&deep).unwrap_err().message.contains("bytes"));
        let deep = format!("{}tcp{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let nots = "not ".repeat(65) + "tcp";
        assert!(parse(&nots).unwrap_err().message.contains("nested"));
        assert!(parse("host é").is_err());
    }
}
