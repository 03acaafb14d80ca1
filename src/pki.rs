//! `vigil pki`: a certificate authority for a Vigil site, and the
//! certificates its collector, sensors and analysts present, with the names
//! the collector checks (ARCHITECTURE.md, "Trust model"): the collector's
//! certificate names its host (DNS names and addresses, for the sensors'
//! server check), a sensor's names its sensor id, an analyst's names the
//! identity listed in `[access] analysts`. mTLS takes three commands:
//!
//! ```text
//! vigil pki init --dir /etc/vigil/pki
//! vigil pki issue collector collector.example.org --ip 192.0.2.10 --dir /etc/vigil/pki
//! vigil pki issue sensor site-1 --dir /etc/vigil/pki
//! ```
//!
//! Keys are ECDSA P-256, written 0600; no file is ever overwritten.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Failure;

/// `vigil pki …`
#[derive(Debug, Subcommand)]
pub enum PkiCmd {
    /// Create the site's certificate authority: DIR/ca.pem and DIR/ca.key.
    Init(InitArgs),
    /// Issue a certificate signed by the authority in DIR: DIR/NAME.pem and
    /// DIR/NAME.key.
    Issue(IssueArgs),
}

/// `vigil pki init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where the authority's files go (made if missing).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The authority's name (its certificate's common name).
    #[arg(long, default_value = "Vigil site CA")]
    name: String,
    /// Days the authority's certificate is valid.
    #[arg(long, default_value = "3650")]
    days: u32,
}

/// `vigil pki issue`
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Who the certificate is for: collector, sensor or analyst.
    role: Role,
    /// The collector's host name; the sensor's id (as given to `vigil
    /// sensor --sensor-id`); the analyst's identity (as listed in `[access]
    /// analysts`).
    name: String,
    /// The authority's directory (from `vigil pki init`); the certificate
    /// and key are written there too, unless --out says otherwise.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Where to write NAME.pem and NAME.key (default: --dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A collector's further DNS names (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    /// A collector's addresses, as sensors dial them (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
    /// Days the certificate is valid.
    #[arg(long, default_value = "825")]
    days: u32,
}

/// Whom a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The collector: a server (and a client, for collectors that talk to
    /// each other's store).
    Collector,
    /// A sensor: a client named by its sensor id.
    Sensor,
    /// An analyst: a client named by the identity in `[access] analysts`.
    Analyst,
}

pub fn run(cmd: PkiCmd) -> Result<(), Failure> {
    match cmd {
        PkiCmd::Init(a) => init(&a),
        PkiCmd::Issue(a) => issue(&a),
    }
}

/// The validity window: from an hour ago (clocks differ) for `days`.
fn validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days));
}

/// Writes `text` to a new file (never over an existing one), `mode`.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::usage(anyhow::anyhow!(
                    "{} exists: not overwritten (remove it first to make a new one)",
                    path.display()
                ))
            } else {
                Failure::from(anyhow::anyhow!("creating {}: {e}", path.display()))
            }
        })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn init(a: &InitArgs) -> Result<(), Failure> {
    if a.days == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--days: at least 1")));
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let (cert, key) = (a.dir.join("ca.pem"), a.dir.join("ca.key"));
    for f in [&cert, &key] {
        if f.exists() {
            return Err(Failure::usage(anyhow::anyhow!(
                "{} exists: the authority is made once (remove it first to make a new one)",
                f.display()
            )));
        }
    }
    let k = KeyPair::generate().context("generating the authority's key")?;
    let mut p = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name
        .push(DnType::CommonName, a.name.as_str());
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p, a.days);
    let c = p
        .self_signed(&k)
        .context("signing the authority's certificate")?;
    write_new(&key, &k.serialize_pem(), 0o600)?;
    write_new(&cert, &c.pem(), 0o644)?;
    println!("{}", cert.display());
    eprintln!(
        "vigil pki: authority {:?} in {} (keep ca.key offline when the certificates are issued); \
         next: vigil pki issue collector HOST --dir {}",
        a.name,
        a.dir.display(),
        a.dir.display()
    );
    Ok(())
}

/// A name the collector takes as an identity: what `[access] analysts`
/// and sensor ids allow, and a DNS name a certificate can carry.
fn check_name(role: Role, name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        return Ok(());
    }
    Err(Failure::usage(anyhow::anyhow!(
        "{}: {name:?}: 1-253 characters of letters, digits, '-', '.' and '_' (the name the \
         certificate carries as its DNS name{})",
        match role {
            Role::Collector => "the collector's host name",
            Role::Sensor => "the sensor id",
            Role::Analyst => "the analyst's identity",
        },
        match role {
            Role::Collector => ", which sensors check",
            Role::Sensor => ", which must be the sensor's --sensor-id",
            Role::Analyst => ", listed in the collector's [access] analysts",
        }
    )))
}

fn issue(a: &IssueArgs) -> Result<(), Failure> {
    check_name(a.role, &a.name)?;
    if a.role != Role::Collector && !(a.dns.is_empty() && a.ips.is_empty()) {
        return Err(Failure::usage(anyhow::anyhow!(
            "--dns and --ip name a collector's host; a {} is named by its NAME alone",
            if a.role == Role::Sensor {
                "sensor"
            } else {
                "an analyst"
            }
        )));
    }
    for d in &a.dns {
        check_name(Role::Collector, d)?;
    }
    if a.days == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--days: at least 1")));
    }
    let read = |f: &str| {
        let p = a.dir.join(f);
        std::fs::read_to_string(&p).map_err(|e| {
            Failure::usage(anyhow::anyhow!(
                "reading {}: {e} (make the authority first: vigil pki init --dir {})",
                p.display(),
                a.dir.display()
            ))
        })
    };
    let ca_key = KeyPair::from_pem(&read("ca.key")?).map_err(|e| {
        anyhow::anyhow!("{}: not a private key: {e}", a.dir.join("ca.key").display())
    })?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key).map_err(|e| {
        anyhow::anyhow!("{}: not a certificate: {e}", a.dir.join("ca.pem").display())
    })?;
    let out = a.out.clone().unwrap_or_else(|| a.dir.clone());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let (cert_path, key_path) = (
        out.join(format!("{}.pem", a.name)),
        out.join(format!("{}.key", a.name)),
    );
    if cert_path.exists() || key_path.exists() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} or {} exists: not overwritten",
            cert_path.display(),
            key_path.display()
        )));
    }
    let mut names = vec![a.name.clone()];
    names.extend(a.dns.iter().cloned());
    let mut p = CertificateParams::new(names).context("certificate parameters")?;
    p.subject_alt_names
        .extend(a.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.distinguished_name
        .push(DnType::CommonName, a.name.as_str());
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = match a.role {
        Role::Collector => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Sensor | Role::Analyst => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, a.days);
    let k = KeyPair::generate().context("generating the key")?;
    let c = p
        .signed_by(&k, &issuer)
        .context("signing the certificate")?;
    write_new(&key_path, &k.serialize_pem(), 0o600)?;
    write_new(&cert_path, &c.pem(), 0o644)?;
    println!("{}", cert_path.display());
    let ca = a.dir.join("ca.pem");
    let (cert, key, ca) = (cert_path.display(), key_path.display(), ca.display());
    let hint = match a.role {
        Role::Collector => format!(
            "vigil collector --listen 0.0.0.0:50051 --tls-cert {cert} --tls-key {key} --tls-ca {ca} …"
        ),
        Role::Sensor => format!(
            "vigil sensor --sensor-id {} --collector https://COLLECTOR:50051 --tls-cert {cert} \
             --tls-key {key} --tls-ca {ca} …",
            a.name
        ),
        Role::Analyst => format!(
            "list {:?} in the collector's [access] analysts; vigil query --collector \
             https://COLLECTOR:50051 --tls-cert {cert} --tls-key {key} --tls-ca {ca} …",
            a.name
        ),
    };
    eprintln!("vigil pki: use it with: {hint}");
    Ok(())
}
