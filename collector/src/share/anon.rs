//! Applying a partner's anonymization to what is shared: addresses in
//! text, in JSON documents and in flow records.

use std::net::IpAddr;

use serde_json::Value;

use super::config::Anonymizer;

/// Rewrites every IP address in `text` (bare, `A.B.C.D:PORT` or
/// `[V6]:PORT`) with `f`.
pub fn rewrite_addresses(text: &str, f: impl Fn(IpAddr) -> IpAddr) -> String {
    let is_addr_char = |c: char| c.is_ascii_hexdigit() || c == '.' || c == ':';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_addr_char) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail.find(|c| !is_addr_char(c)).unwrap_or(tail.len());
        let token = &tail[..end];
        out.push_str(&rewrite_token(token, &f));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn rewrite_token(token: &str, f: &impl Fn(IpAddr) -> IpAddr) -> String {
    // Trailing sentence punctuation and ports are kept as they are.
    let trimmed = token.trim_end_matches(['.', ':']);
    let suffix = &token[trimmed.len()..];
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return format!("{}{suffix}", f(ip));
    }
    if let Some((a, port)) = trimmed.rsplit_once(':')
        && port.bytes().all(|b| b.is_ascii_digit())
        && let Ok(ip) = a.parse::<std::net::Ipv4Addr>()
    {
        return format!("{}:{port}{suffix}", f(IpAddr::V4(ip)));
    }
    token.to_string()
}

/// Rewrites the addresses in every string of `v` (not in keys or numbers).
pub fn anonymize_json(v: &mut Value, an: &Anonymizer) {
    match v {
        Value::String(s) => {
            let r = rewrite_addresses(s, |ip| an.ip(ip));
            if r != *s {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| anonymize_json(x, an)),
        Value::Object(o) => o.values_mut().for_each(|x| anonymize_json(x, an)),
        _ => {}
    }
}

/// A flow record's JSON (as `flows.jsonl` has it) as the partner sees it:
/// its addresses (and a tunnel's outer ones) anonymized, and its Community
/// ID, a hash of the original addresses, removed (`null`).
pub fn anonymize_flow(record: &vigil_proto::FlowRecord, an: &Anonymizer) -> Value {
    let mut r = record.clone();
    r.src_ip = an.ip(r.src_ip);
    r.dst_ip = an.ip(r.dst_ip);
    if let Some(t) = &mut r.tunnel {
        t.outer_src = an.ip(t.outer_src);
        t.outer_dst = an.ip(t.outer_dst);
    }
    let mut v = serde_json::to_value(&r).unwrap_or_default();
    v["community_id"] = Value::Null;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shift(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) ^ 0xff00_0000)),
            IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) ^ 1)),
        }
    }

    #[test]
    fn addresses_in_text_are_found_in_every_form_and_nothing_else() {
        let t = "SYN flood against 10.0.0.5: 3 sources (10.0.0.6:443, [2001:db8::1]:80, 2001:db8::2). \
                 At 2026-01-01T10:00:00.123456789Z, 12.5 Mb/s, sha deadbeef, ratio 1.2.";
        let r = rewrite_addresses(t, shift);
        assert_eq!(
            r,
            "SYN flood against 245.0.0.5: 3 sources (245.0.0.6:443, [2001:db8::]:80, 2001:db8::3). \
                 At 2026-01-01T10:00:00.123456789Z, 12.5 Mb/s, sha deadbeef, ratio 1.2."
        );
        assert_eq!(
            rewrite_addresses("from 10.0.0.1.", shift),
            "from 245.0.0.1."
        );
    }
}
