//! Helpers shared by the integration tests.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use vigil_proto::FlowRecord;
use vigil_sensor::export::grpc::{DrainReport, ExportError, Exporter, ExporterConfig};
use vigil_sensor::flow::{FlowConfig, Timeouts};
use vigil_sensor::run::{self, Input, LiveCounters, RunConfig, RunReport};

/// A test's real dependency is missing: outside CI the test prints why and
/// passes without running; under CI (`CI` set) it fails, since CI installs
/// everything the suite needs.
pub fn skip(why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("CI is set, so this test may not skip: {why}");
    }
    eprintln!("skipped: {why}");
}

/// Records that the running test reached its real dependency `dep`
/// (`corpus`, `clickhouse`, `netns`, `libpcap`, `tshark`, `promtool`):
/// with `VIGIL_DEPS_LOG` naming a file (`.ci/run` sets it), a line "dep
/// test" is appended to it, so that CI can say how many tests ran against
/// each dependency rather than only that none skipped.
pub fn ran_with(dep: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("VIGIL_DEPS_LOG") else {
        return;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string();
    // One short write with O_APPEND: lines from concurrent tests never mix.
    let line = format!("{dep} {test}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("VIGIL_DEPS_LOG={}: {e}", PathBuf::from(path).display());
    }
}

/// The capture corpus, or `None` (with the reason printed, see [`skip`])
/// when the environment does not name it.
pub fn corpus_dir() -> Option<PathBuf> {
    match std::env::var_os("VIGIL_PCAP_CORPUS") {
        Some(p) if PathBuf::from(&p).is_dir() => {
            ran_with("corpus");
            Some(PathBuf::from(p))
        }
        Some(p) => {
            skip(&format!(
                "VIGIL_PCAP_CORPUS={} is not a directory",
                PathBuf::from(p).display()
            ));
            None
        }
        None => {
            skip("VIGIL_PCAP_CORPUS is not set (.ci/run sets it to ../shared/pcaps)");
            None
        }
    }
}

/// Every capture of the corpus, sorted.
pub fn corpus_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    v
}

/// A pipeline configuration with uniform timeouts.
pub fn config(workers: usize, batch: usize, timeout: Duration) -> RunConfig {
    RunConfig {
        workers: workers.try_into().expect("workers > 0"),
        batch_size: batch.try_into().expect("batch > 0"),
        flow: FlowConfig {
            timeouts: Timeouts::uniform(timeout),
            active_timeout: timeout,
            ..FlowConfig::default()
        },
        ..RunConfig::default()
    }
}

type Sink<'a> = dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send + 'a;

/// Collects the records a run hands its sink, sorted by (first_seen,
/// flow_id), with the run's report.
pub fn collect(run: impl FnOnce(&mut Sink<'_>) -> RunReport) -> (Vec<FlowRecord>, RunReport) {
    let out = Mutex::new(Vec::new());
    let mut sink = |r: &[FlowRecord]| {
        out.lock().unwrap().extend_from_slice(r);
        Ok(())
    };
    let report = run(&mut sink);
    let mut recs = out.into_inner().unwrap();
    recs.sort_by_key(|r| (r.first_seen_ns, r.flow_id, r.last_seen_ns));
    (recs, report)
}

/// Runs inputs through the dispatch pipeline.
pub fn run_inputs(inputs: &[Input<'_>], cfg: &RunConfig) -> (Vec<FlowRecord>, RunReport) {
    collect(|sink| run::run(inputs, cfg, sink, None).expect("pipeline run"))
}

/// Runs in-memory captures through shared-nothing fanout workers, one each.
pub fn run_fanout(streams: &[&[u8]], cfg: &RunConfig) -> (Vec<FlowRecord>, RunReport) {
    collect(|sink| vigil_sensor::run::split::run(streams, cfg, sink).expect("fanout run"))
}

/// Runs one file.
pub fn run_file(path: &std::path::Path, cfg: &RunConfig) -> (Vec<FlowRecord>, RunReport) {
    run_inputs(&[Input::File(path.to_owned())], cfg)
}

/// Runs in-memory pcap bytes.
pub fn run_bytes(bytes: &[u8], cfg: &RunConfig) -> (Vec<FlowRecord>, RunReport) {
    run_inputs(
        &[Input::Memory {
            name: "test".into(),
            bytes,
        }],
        cfg,
    )
}

/// Timeouts long enough that nothing expires within a capture.
pub const FOREVER: Duration = Duration::from_secs(1_000_000);

/// A sensor in process: `inputs` through a pipeline configured with `flow`
/// into an exporter to `exp.collector`, then the bounded wait for the acks.
pub async fn sensor_with(
    inputs: Vec<Input<'static>>,
    exp: ExporterConfig,
    flow: FlowConfig,
    drain: Duration,
) -> Result<DrainReport, ExportError> {
    let live = Arc::new(LiveCounters::default());
    let exporter = Exporter::start(exp, live.clone())?;
    capture_into(&exporter, live, inputs, flow).await;
    exporter.drain(drain).await
}

/// Runs the pipeline over `inputs` into `exporter` (whose counters are
/// `live`), on a blocking thread.
pub async fn capture_into(
    exporter: &Exporter,
    live: Arc<LiveCounters>,
    inputs: Vec<Input<'static>>,
    flow: FlowConfig,
) {
    let sink = exporter.sink();
    let cfg = RunConfig {
        live: Some(live),
        flow,
        ..RunConfig::default()
    };
    tokio::task::spawn_blocking(move || {
        let mut push = |recs: &[FlowRecord]| sink.push(recs);
        run::run(&inputs, &cfg, &mut push, None).expect("pipeline")
    })
    .await
    .expect("pipeline task");
}

/// The tokio runtime of the in-process daemons: two workers, as the machine.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A test PKI: a CA, the collector's certificate for localhost, and
/// client certificates for sensors s1, s2 and analyst alice.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "vigil test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        for (name, sans) in [
            ("collector", vec!["localhost".to_string()]),
            ("s1", vec!["s1".to_string()]),
            ("s2", vec!["s2".to_string()]),
            ("alice", vec!["alice".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            let cert = p.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    /// The collector's files: its certificate for localhost and the CA.
    pub fn collector(&self) -> vigil_collector::server::TlsFiles {
        vigil_collector::server::TlsFiles {
            cert: self.dir.join("collector.pem"),
            key: self.dir.join("collector.key"),
            ca: self.dir.join("ca.pem"),
        }
    }

    pub fn client(&self, name: &str) -> vigil_sensor::export::grpc::ClientTls {
        vigil_sensor::export::grpc::ClientTls {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            server_name: Some("localhost".into()),
        }
    }
}

/// Copies records `range` (by index) of the classic little-endian pcap
/// `src` to `dst`, their timestamps moved by `shift_s` seconds; returns
/// how many records `src` has.
pub fn pcap_slice(src: &Path, dst: &Path, range: std::ops::Range<usize>, shift_s: i64) -> usize {
    let b = std::fs::read(src).expect("read capture");
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    assert!(
        matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d),
        "{}: not a little-endian classic pcap",
        src.display()
    );
    let mut out = b[..24].to_vec();
    let (mut at, mut i) = (24, 0);
    while at + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        let end = at + 16 + incl;
        if end > b.len() {
            break;
        }
        if range.contains(&i) {
            let sec = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let sec = u32::try_from(i64::from(sec) + shift_s).expect("shifted time fits");
            out.extend_from_slice(&sec.to_le_bytes());
            out.extend_from_slice(&b[at + 4..end]);
        }
        at = end;
        i += 1;
    }
    std::fs::write(dst, out).expect("write capture");
    i
}

/// Sends bytes as they are as gRPC messages on `Ingest.Stream` (hostile
/// peers' garbage, hand-made batches), and reads its acks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Raw;
#[derive(Clone, Copy, Debug, Default)]
pub struct RawEnc;
#[derive(Clone, Copy, Debug, Default)]
pub struct AckDec;

impl tonic::codec::Encoder for RawEnc {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for AckDec {
    type Item = vigil_proto::pb::Ack;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<vigil_proto::pb::Ack>, tonic::Status> {
        use prost::Message as _;
        vigil_proto::pb::Ack::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Codec for Raw {
    type Encode = bytes::Bytes;
    type Decode = vigil_proto::pb::Ack;
    type Encoder = RawEnc;
    type Decoder = AckDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> AckDec {
        AckDec
    }
}

/// The `vigil` binary under test.
pub fn vigil() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
}

/// A free loopback port (bound and released).
pub fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// `vigil collector` on `addr` with its store in `data`, quiet.
pub fn spawn_collector(addr: std::net::SocketAddr, data: &Path) -> std::process::Child {
    use std::process::Stdio;
    vigil()
        .args(["collector", "--listen", &addr.to_string(), "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn collector")
}

/// A tar's members (an evidence bundle's), in order.
pub fn tar_members(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read as _;
    let mut ar = tar::Archive::new(bundle);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (p, b)
        })
        .collect()
}

/// An Ethernet frame of a UDP datagram from `src:sport` to `dst:dport`.
pub fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut frame, payload)
        .expect("a UDP frame");
    frame
}

/// A DNS query of `name` (type TXT) with id `id`, and its answer with
/// response code `rcode` and no records.
pub fn dns_exchange(id: u16, name: &str, rcode: u8) -> (Vec<u8>, Vec<u8>) {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    let mut r = q.clone();
    r[2] = 0x81;
    r[3] = 0x80 | rcode;
    (q, r)
}

/// `vigil flows -q -r FILE`'s records, as JSON.
pub fn flows_json(pcap: &Path) -> Vec<serde_json::Value> {
    let o = vigil()
        .args(["flows", "-q", "-r"])
        .arg(pcap)
        .output()
        .expect("run vigil flows");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

/// A plain HTTP/1.1 GET on `addr` (one request, then the connection
/// closes): the status, the content type and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP endpoint");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // The head, then the body: by its length where the head gives one
    // (some servers keep the connection open), else to the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).expect("read the answer");
        assert!(n > 0, "the connection closed before an HTTP head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    match header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut buf).expect("read the body");
                assert!(n > 0, "the connection closed inside the body");
                body.extend_from_slice(&buf[..n]);
            }
            body.truncate(len);
        }
        None => {
            s.read_to_end(&mut body).expect("read the body");
        }
    }
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .expect("chunk size");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 4 + n..];
        }
        body = out;
    }
    (status, header("content-type").unwrap_or_default(), body)
}

/// Whether `python3` imports `modules` (else a skip naming the `pip`
/// packages to install; under CI a failure).
pub fn have_python(modules: &[&str], pip: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!(
            "python3 with {} is not installed (pip install {pip})",
            modules.join(", ")
        ));
    }
    ok
}
