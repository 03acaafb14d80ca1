//! The web console in a real browser: Debian's headless Chromium, driven
//! through the DevTools protocol, against a collector holding the alerts of
//! real attack captures. Every page loads without a console error or a
//! failed resource, at 1280×800 and on a phone's screen (no page wider
//! than the screen); the alert pages show their evidence flows; the flow
//! explorer's filter, typed in its box, returns what `vigil query` returns;
//! a bad filter is answered with the parser's message. Screenshots go to
//! `target/tmp/console-screenshots/` for review.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::api::{AttackSite, attack_site, cli};
use crate::util::{corpus_dir, http_get, ran_with, skip};

/// A headless Chromium and a DevTools session on its one page.
struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next: u64,
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium (`None`, with a printed reason, if there is none).
    fn start() -> Option<Browser> {
        let profile = tempfile::tempdir().unwrap();
        let spawned = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = spawned else {
            skip("chromium is not installed (apt-get install chromium)");
            return None;
        };
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut port = None;
        let mut line = String::new();
        while err.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(rest) = line
                .trim()
                .strip_prefix("DevTools listening on ws://127.0.0.1:")
            {
                port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                break;
            }
            line.clear();
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        let port = port.expect("chromium's DevTools port");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let (_, _, body) = http_get(addr, "/json/list");
        let targets: Vec<Value> = serde_json::from_slice(&body).unwrap();
        let page = targets
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client::client(url.as_str(), stream).expect("DevTools socket");
        let mut b = Browser {
            child,
            ws,
            next: 0,
            events: Vec::new(),
            _profile: profile,
        };
        for m in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(m, json!({}));
        }
        Some(b)
    }

    /// The next message from the browser.
    fn read(&mut self) -> Value {
        loop {
            match self.ws.read().expect("DevTools message") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(_) => panic!("DevTools socket closed"),
                _ => {}
            }
        }
    }

    /// Calls `method`; its result. Events read meanwhile are kept.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("DevTools send");
        loop {
            let m = self.read();
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
            self.events.push(m);
        }
    }

    /// Waits for the page's load event (after the last `events.clear()`).
    fn wait_load(&mut self) {
        let until = Instant::now() + Duration::from_secs(30);
        while !self
            .events
            .iter()
            .any(|e| e["method"] == "Page.loadEventFired")
        {
            assert!(Instant::now() < until, "the page did not load");
            let m = self.read();
            self.events.push(m);
        }
    }

    /// Loads `url`; the console errors, exceptions and failed loads it
    /// logged.
    fn goto(&mut self, url: &str) -> Vec<String> {
        self.events.clear();
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_load();
        self.errors()
    }

    /// Runs `f` (which navigates), waits for the new page; its errors.
    fn navigate_by(&mut self, script: &str) -> Vec<String> {
        self.events.clear();
        self.eval(script);
        self.wait_load();
        self.errors()
    }

    fn errors(&mut self) -> Vec<String> {
        // Anything logged right after the load event.
        self.eval("1");
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str()? {
                "Runtime.exceptionThrown" => Some(e["params"]["exceptionDetails"].to_string()),
                "Runtime.consoleAPICalled"
                    if matches!(e["params"]["type"].as_str(), Some("error" | "assert")) =>
                {
                    Some(e["params"]["args"].to_string())
                }
                "Log.entryAdded" if e["params"]["entry"]["level"] == "error" => {
                    Some(e["params"]["entry"]["text"].to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// Evaluates `expr` in the page; its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// `ip:port` as the console's tables write a flow's end.
fn end(ip: &Value, port: &Value) -> String {
    let ip = ip.as_str().unwrap();
    match port.as_u64() {
        Some(p) if ip.contains(':') => format!("[{ip}]:{p}"),
        Some(p) => format!("{ip}:{p}"),
        None => ip.to_string(),
    }
}

/// Flow records' (source, destination) as the console's tables show them.
fn ends(records: &[Value]) -> Value {
    records
        .iter()
        .map(|f| {
            json!([
                end(&f["src_ip"], &f["src_port"]),
                end(&f["dst_ip"], &f["dst_port"])
            ])
        })
        .collect()
}

/// The flow table's (source, destination) cells.
const ROWS: &str = "Array.from(document.querySelectorAll('table.flows tbody tr'))\
    .map(r => [r.cells[2].textContent, r.cells[3].textContent])";

#[test]
fn the_console_shows_real_alerts_their_evidence_and_what_vigil_query_returns() {
    let Some(corpus) = corpus_dir() else { return };
    let Some(mut b) = Browser::start() else {
        return;
    };
    let site = attack_site(&corpus);
    let base = format!("http://{}", site.http);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let alerts = cli(&site.url, &["alerts", "list"]);
    assert!(alerts.len() >= 3, "{alerts:?}");

    let mut pages = vec![
        ("overview".to_string(), "/?range=all".to_string()),
        ("overview-24h".into(), "/".into()),
        ("alerts".into(), "/alerts".into()),
        (
            "alerts-filtered".into(),
            "/alerts?min_severity=high&kind=syn_flood".into(),
        ),
        ("flows".into(), "/flows?range=all".into()),
        ("sensors".into(), "/sensors".into()),
    ];
    for a in &alerts {
        let id = a["id"].as_u64().unwrap();
        pages.push((format!("alert-{id}"), format!("/alerts/{id}")));
    }
    for (name, path) in &pages {
        for (w, h, mobile, suffix) in [(1280, 800, false, ""), (390, 844, true, "-phone")] {
            b.viewport(w, h, mobile);
            let errors = b.goto(&format!("{base}{path}"));
            assert!(errors.is_empty(), "{path} at {w}x{h}: {errors:?}");
            assert!(
                b.eval("document.querySelector('h1') !== null") == json!(true),
                "{path}"
            );
            let (scroll, inner) = (
                b.eval("document.documentElement.scrollWidth"),
                b.eval("window.innerWidth"),
            );
            assert!(
                scroll.as_u64() <= inner.as_u64(),
                "{path} at {w}x{h}: {scroll} wide in a {inner} window"
            );
            // The page fits the screen: not zoomed out to a wider layout.
            let wide = b.eval(&format!(
                "Array.from(document.querySelectorAll('body *'))\
                 .filter(e => e.getBoundingClientRect().right > {w} + 1)\
                 .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))\
                 .slice(0, 8)"
            ));
            assert_eq!(inner, json!(w), "{path} at {w}x{h}: laid out wider: {wide}");
            // Nothing sticks out of the screen but what scrolls in its box.
            let out = b.eval(
                "Array.from(document.querySelectorAll('main *'))\
                 .filter(e => !e.closest('.scroll') && !e.closest('.chart'))\
                 .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)\
                 .map(e => e.tagName + (e.name ? '[' + e.name + ']' : ''))",
            );
            assert_eq!(out, json!([]), "{path} at {w}x{h}: wider than the screen");
            b.screenshot(&shots.join(format!("{name}{suffix}.png")));
        }
    }
    // The overview's chart is drawn.
    b.viewport(1280, 800, false);
    b.goto(&format!("{base}/?range=all"));
    assert_eq!(
        b.eval("!!document.querySelector('#traffic canvas')"),
        json!(true)
    );

    // Each alert page lists its evidence flows, those `vigil alerts show`
    // prints.
    for a in &alerts {
        let id = a["id"].as_u64().unwrap().to_string();
        b.goto(&format!("{base}/alerts/{id}"));
        let lines = cli(&site.url, &["alerts", "show", &id, "--flows", "100"]);
        let want = ends(&lines[1..]);
        assert!(
            want.as_array().is_some_and(|w| !w.is_empty()),
            "alert {id}: evidence"
        );
        assert_eq!(b.eval(ROWS), want, "alert {id}");
        let text = b
            .eval("document.body.innerText")
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.contains(a["summary"].as_str().unwrap()), "alert {id}");
        assert!(
            text.contains(a["technique"].as_str().unwrap()),
            "alert {id}"
        );
    }

    // The explorer: a filter typed in its box, run, returns `vigil
    // query`'s flows and totals.
    b.goto(&format!("{base}/flows?range=all"));
    for filter in ["dst port 502", "tcp and not dst host 10.10.10.10", "udp"] {
        let errors = b.navigate_by(&format!(
            "document.getElementById('filter').value = {}; \
             document.querySelector('form.explorer').submit()",
            json!(filter)
        ));
        assert!(errors.is_empty(), "{filter}: {errors:?}");
        let mut args = vec!["query"];
        args.extend(filter.split(' '));
        let want = ends(&cli(&site.url, &[&args[..], &["--limit", "50"]].concat()));
        assert!(want.as_array().is_some_and(|w| !w.is_empty()), "{filter}");
        assert_eq!(b.eval(ROWS), want, "{filter}");
        let totals = cli(&site.url, &[&args[..], &["--count"]].concat()).remove(0);
        let shown = b.eval("document.querySelector('p.totals b').textContent");
        let flows = totals["flows"].as_u64().unwrap();
        assert_eq!(
            shown.as_str().unwrap().replace(',', ""),
            flows.to_string(),
            "{filter}"
        );
        // The box keeps the filter.
        assert_eq!(
            b.eval("document.getElementById('filter').value"),
            json!(filter)
        );
    }
    b.screenshot(&shots.join("flows-filtered.png"));
    // A bad filter: the parser's message under the box, nothing run.
    b.events.clear();
    b.eval(
        "document.getElementById('filter').value = 'dst port'; \
         document.querySelector('form.explorer').submit()",
    );
    b.wait_load();
    let shown = b.eval("document.getElementById('filter-error').textContent");
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("dst port") && shown.contains('^'), "{shown}");
    b.screenshot(&shots.join("flows-bad-filter.png"));
    eprintln!("console screenshots in {}", shots.display());
    ran_with("chromium");
    let AttackSite { rt, collector, .. } = site;
    rt.block_on(collector.shutdown()).unwrap();
}
