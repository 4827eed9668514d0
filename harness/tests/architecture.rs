//! The layout's rule, checked on the source: no module imports another that imports it back,
//! directly or through others. Every `use` and every inline `crate::`, `super::`, `self::` or
//! child-module path is resolved to the file that defines the module it names, giving a graph of
//! files; a strongly connected component of more than one file is a cycle, and the test names
//! its files and the imports that tie them.
//!
//! Module declarations (`mod x;`) are not imports: a parent may declare children whose code
//! imports the parent, as long as the parent does not import them back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["backend", "qemu"]`) → the file defining it.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") || p.file_name().is_some_and(|n| n == "main.rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap();
            let mut segs: Vec<String> = rel.iter().map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
            if segs.last().is_some_and(|s| s == "mod" || s == "lib") {
                segs.pop();
            }
            out.insert(segs, p);
        }
    }
    out
}

/// The code without comments, string and char literals (which can hold `crate::` in text).
fn code_only(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && i + 1 < b.len() && (b[i + 1] == b'"' || b[i + 1] == b'#') && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) {
            // Raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == b'"' {
                let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                j += 1;
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                i = j + close.len();
                out.push_str("\"\"");
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || (b[i + 1] == b'\\' && b[i + 3..].contains(&b'\''))) {
            // A char literal ('x' or '\n'); lifetimes ('a) are left alone.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The code without inline `#[cfg(test)] mod name { ... }` blocks: unit tests are not part of
/// the layout (and inside them `super` is the file's own module).
fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let t = after.trim_start();
        let inline_mod = t.starts_with("mod ") && t.find('{').is_some_and(|b| t.find(';').is_none_or(|s| b < s));
        if !inline_mod {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let open = after.find('{').unwrap();
        let mut depth = 0;
        let mut end = after.len();
        for (k, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every path the code names: the prefixes of `use` trees, expanded, and inline `a::b::c`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    // `use` trees, flattened (`use a::{b, c::d}` gives a::b and a::c::d).
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before_ok = at == 0 || !ident(rest[..at].chars().last().unwrap());
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before_ok {
            expand_use(&after[..end].replace(char::is_whitespace, ""), &mut Vec::new(), &mut out);
        }
        rest = &after[end.min(after.len())..];
    }
    // Inline paths: maximal runs of `ident::ident::...`.
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if ident(chars[i]) && (i == 0 || !(ident(chars[i - 1]) || chars[i - 1] == ':')) {
            let mut segs = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < chars.len() && ident(chars[j]) {
                    j += 1;
                }
                segs.push(chars[start..j].iter().collect::<String>());
                if j + 2 < chars.len() && chars[j] == ':' && chars[j + 1] == ':' && ident(chars[j + 2]) {
                    j += 2;
                } else {
                    break;
                }
            }
            if segs.len() > 1 {
                out.push(segs);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

fn expand_use(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim_start_matches("::");
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open].split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let n = prefix.len();
        prefix.extend(head);
        let mut depth = 0;
        let mut start = 0;
        let parts: Vec<&str> = {
            let mut v = Vec::new();
            for (k, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        v.push(&inner[start..k]);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            v.push(&inner[start..]);
            v
        };
        for p in parts.into_iter().filter(|p| !p.is_empty()) {
            expand_use(p, prefix, out);
        }
        prefix.truncate(n);
    } else {
        let mut v = prefix.clone();
        v.extend(tree.split(" as ").next().unwrap_or("").split("::").filter(|s| !s.is_empty() && *s != "*").map(str::to_string));
        if !v.is_empty() {
            out.push(v);
        }
    }
}

/// The file a path names, from module `here` (None: outside this crate).
fn resolve(here: &[String], path: &[String], mods: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    let mut base: Vec<String> = match path.first()?.as_str() {
        "crate" => vec![],
        "super" => here[..here.len().checked_sub(1)?].to_vec(),
        "self" => here.to_vec(),
        first => {
            // A child module of `here`, named without `self::`.
            let mut child = here.to_vec();
            child.push(first.to_string());
            if !mods.contains_key(&child) {
                return None;
            }
            here.to_vec()
        }
    };
    let mut rest: &[String] = if matches!(path[0].as_str(), "crate" | "super" | "self") { &path[1..] } else { path };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    let mut best = None;
    let mut cur = base;
    if mods.contains_key(&cur) {
        best = mods.get(&cur).cloned();
    }
    for seg in rest {
        cur.push(seg.clone());
        match mods.get(&cur) {
            Some(f) => best = Some(f.clone()),
            None => break,
        }
    }
    best
}

/// Tarjan's strongly connected components.
fn sccs(graph: &Graph) -> Vec<Vec<PathBuf>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a PathBuf) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let Some((w, _)) = t.g.get_key_value(w) else { continue };
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T { g: graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], on: BTreeSet::new(), next: 0, out: vec![] };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// file → files it imports.
type Graph = BTreeMap<PathBuf, BTreeSet<PathBuf>>;
/// (file, file) → the paths by which the first imports the second.
type Why = BTreeMap<(PathBuf, PathBuf), BTreeSet<String>>;

/// The import graph of the files under `src`, with the paths that tie them.
fn import_graph(src: &Path) -> (Graph, Why) {
    let mods = modules(src);
    let mut graph = BTreeMap::new();
    let mut why: BTreeMap<(PathBuf, PathBuf), BTreeSet<String>> = BTreeMap::new();
    for (m, file) in &mods {
        let code = without_test_modules(&code_only(&std::fs::read_to_string(file).unwrap()));
        let mut deps = BTreeSet::new();
        for p in paths(&code) {
            if let Some(target) = resolve(m, &p, &mods) {
                if &target != file {
                    why.entry((file.clone(), target.clone())).or_default().insert(p.join("::"));
                    deps.insert(target);
                }
            }
        }
        graph.insert(file.clone(), deps);
    }
    (graph, why)
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (graph, why) = import_graph(&src);
    assert!(graph.len() > 40, "the walk found only {} files", graph.len());
    let cycles = sccs(&graph);
    let mut msg = String::new();
    for c in &cycles {
        msg.push_str("cycle:\n");
        for a in c {
            for b in c {
                if let Some(w) = why.get(&(a.clone(), b.clone())) {
                    let rel = |p: &Path| p.strip_prefix(&src).unwrap().display().to_string();
                    msg.push_str(&format!("  {} -> {}: {}\n", rel(a), rel(b), w.iter().cloned().collect::<Vec<_>>().join(", ")));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "{msg}");
}

/// The checker itself finds a cycle where there is one, through `use`, `super::` and a child
/// module named without `self::`, and ignores paths in comments and strings.
#[test]
fn the_checker_sees_cycles_and_ignores_text() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "pub mod c;\nuse c::Thing; // crate::b::X in a comment\nconst S: &str = \"crate::b::X\";\n").unwrap();
    std::fs::write(src.join("a/c.rs"), "pub struct Thing;\nfn f() { super::super::b::g() }\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{a::{self, c::Thing as T}};\npub fn g() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    fn h() { crate::lib_only() }\n}\n").unwrap();
    let (graph, _) = import_graph(src);
    let cycles = sccs(&graph);
    assert_eq!(cycles.len(), 1, "{graph:?}");
    let names: BTreeSet<String> = cycles[0].iter().map(|p| p.strip_prefix(src).unwrap().display().to_string()).collect();
    assert_eq!(names, ["a/c.rs", "a/mod.rs", "b.rs"].into_iter().map(String::from).collect());
    // Without the import in c.rs there is none: the comment and the string do not count.
    std::fs::write(src.join("a/c.rs"), "pub struct Thing;\n").unwrap();
    let (graph, _) = import_graph(src);
    assert!(sccs(&graph).is_empty(), "{graph:?}");
}
