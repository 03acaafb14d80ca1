//! The code's layout, as a newcomer reads it: every source file opens with
//! a line saying what it owns, no hand-written source file is longer than
//! 900 lines, and no two modules import each other, directly or around a
//! circle, at any level of any crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates: (name, source root).
const CRATES: [(&str, &str); 4] = [
    ("vigil", "src"),
    ("vigil-proto", "proto/src"),
    ("vigil-sensor", "sensor/src"),
    ("vigil-collector", "collector/src"),
];

/// Longest hand-written source file, in lines.
const MAX_LINES: usize = 900;

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Committed generated code (tonic/prost output), not written by hand.
fn generated(p: &Path) -> bool {
    p.components().any(|c| c.as_os_str() == "gen")
}

/// A file's module path in its crate: `src/run/shared/mod.rs` is
/// `["run", "shared"]`, `src/lib.rs` is `[]`.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// Test-only code: whole test files, and a file's tail from its test
/// module on.
fn non_test_code(path: &Path, text: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if matches!(name, "tests.rs" | "testutil.rs" | "fuzzing.rs") {
        return None;
    }
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            let next = lines.peek().unwrap().trim();
            // `mod tests;` (a file of its own) ends nothing here.
            if next.ends_with('{') {
                break;
            }
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    Some(out)
}

/// The module paths a file's code names: `crate::a::b`, `super::c`,
/// `self::d`, resolved to modules that exist.
fn references(module: &[String], code: &str, modules: &BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let start_ok = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        let rest = &code[i..];
        let (mut base, skip): (Vec<String>, usize) = if start_ok && rest.starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else if start_ok && rest.starts_with("super::") {
            let mut m = module.to_vec();
            let mut k = 0;
            while code[i + k..].starts_with("super::") {
                m.pop();
                k += "super::".len();
            }
            (m, k)
        } else if start_ok && rest.starts_with("self::") {
            (module.to_vec(), "self::".len())
        } else {
            i += 1;
            continue;
        };
        // The path's segments after the prefix, up to the first that is
        // not a plain identifier followed by `::`.
        let mut j = i + skip;
        loop {
            let s = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            if s == j {
                break;
            }
            let seg = &code[s..j];
            let mut next = base.clone();
            next.push(seg.to_string());
            if !modules.contains(&next) {
                break;
            }
            base = next;
            if !code[j..].starts_with("::") {
                break;
            }
            j += 2;
        }
        out.push(base);
        i = j.max(i + 1);
    }
    out
}

fn is_ancestor(a: &[String], b: &[String]) -> bool {
    a.len() <= b.len() && b[..a.len()] == *a
}

/// A cycle in `edges` (node → its targets), if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut c = stack[from..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn every_file_says_what_it_owns_and_none_is_too_long() {
    let mut problems = Vec::new();
    for (_, root) in CRATES {
        let mut files = Vec::new();
        rs_files(Path::new(root), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let first = text.lines().next().unwrap_or("");
            if !generated(&f) && !first.starts_with("//!") {
                problems.push(format!(
                    "{}: does not open with a `//!` line saying what it owns",
                    f.display()
                ));
            }
            let lines = text.lines().count();
            let name = f.file_name().unwrap().to_string_lossy();
            if !generated(&f) && name != "tests.rs" && lines > MAX_LINES {
                problems.push(format!(
                    "{}: {lines} lines (at most {MAX_LINES})",
                    f.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_two_modules_import_each_other_at_any_level() {
    let mut problems = Vec::new();
    for (krate, root) in CRATES {
        let root = Path::new(root);
        let mut files = Vec::new();
        rs_files(root, &mut files);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(root, f)).collect();
        // Per parent module: its children, and which child's code names
        // which other child (with an example).
        let mut levels: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        let mut examples: BTreeMap<(Vec<String>, String, String), String> = BTreeMap::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            let Some(code) = non_test_code(f, &text) else {
                continue;
            };
            let from = module_of(root, f);
            for to in references(&from, &code, &modules) {
                if is_ancestor(&from, &to) || is_ancestor(&to, &from) {
                    continue;
                }
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                let (a, b) = (from[common].clone(), to[common].clone());
                let parent = from[..common].to_vec();
                levels
                    .entry(parent.clone())
                    .or_default()
                    .entry(a.clone())
                    .or_default()
                    .insert(b.clone());
                examples
                    .entry((parent, a, b))
                    .or_insert_with(|| format!("{} names {}", f.display(), to.join("::")));
            }
        }
        for (parent, edges) in &levels {
            if let Some(cycle) = find_cycle(edges) {
                let why: Vec<String> = cycle
                    .windows(2)
                    .map(|w| {
                        examples
                            .get(&(parent.clone(), w[0].clone(), w[1].clone()))
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                problems.push(format!(
                    "{krate}: modules of `{}` import each other: {} ({})",
                    if parent.is_empty() {
                        "crate".to_string()
                    } else {
                        parent.join("::")
                    },
                    cycle.join(" -> "),
                    why.join("; ")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_find_a_circle_and_resolve_paths() {
    let modules: BTreeSet<Vec<String>> = [
        vec![],
        vec!["a".to_string()],
        vec!["a".to_string(), "x".to_string()],
        vec!["b".to_string()],
    ]
    .into_iter()
    .collect();
    let m = vec!["a".to_string(), "x".to_string()];
    let refs = references(
        &m,
        "use super::super::b::Thing; crate::a::x::f(); self::g",
        &modules,
    );
    assert_eq!(
        refs,
        vec![vec!["b".to_string()], m.clone(), m.clone()],
        "super::super from a::x is the crate"
    );
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert!(find_cycle(&edges).is_none());
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
}
