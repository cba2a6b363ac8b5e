//! Architecture invariant: the modules of `engine/src` are layers, and a module never names
//! one above it. Checked here on the source: every `crate::` path (`crate::x::...`,
//! `crate::{x, y}`, and names the crate root re-exports, `crate::Engine`) is an edge from
//! the top-level module of the file it is in to the module it names, and the graph of
//! those edges must have no cycle. A child module (`src/x/*.rs`, or a file included with
//! `#[path]`) is part of its top-level module: `impl Engine` blocks in `engine`'s children
//! are `engine`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges that still point up a layer, waiting to be broken. Each must still exist (the
/// test fails when one is gone, so the list only shrinks), and no cycle may remain without
/// them. Empty: keep it so.
const KNOWN_BACK_EDGES: &[(&str, &str)] = &[];

/// `from -> to -> [files that name it]`.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Source without comments (line, doc and block comments), so that a doc link to a higher
/// layer is not a dependency. String literals are kept: none of the engine's names a module.
fn strip_comments(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        if in_str {
            if b[i] == b'\\' && i + 1 < b.len() {
                out.push_str(&s[i..i + 2]);
                i += 2;
                continue;
            }
            if b[i] == b'"' {
                in_str = false;
            }
            out.push(b[i] as char);
            i += 1;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            in_str = true;
            out.push('"');
            i += 1;
        } else if s[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if s[i..].starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if s[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if s[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else {
            let ch = s[i..].chars().next().expect("a char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The first segment of each item of a `{...}` group starting at `s[0] == '{'`.
fn group_heads(s: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = Some(1);
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                continue;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                continue;
            }
            ',' if depth == 1 => {
                item_start = Some(i + 1);
                continue;
            }
            _ => {}
        }
        if depth == 1
            && let Some(start) = item_start
            && !c.is_whitespace()
        {
            if let Some(id) = ident_at(&s[start.max(i)..]) {
                heads.push(id);
            }
            item_start = None;
        }
    }
    heads
}

/// The names that follow `crate::` in `src`: a module, or a name the root re-exports.
fn crate_refs(src: &str) -> Vec<&str> {
    let mut refs = Vec::new();
    let mut from = 0;
    while let Some(at) = src[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        let before = src[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &src[from..];
        if rest.starts_with('{') {
            refs.extend(group_heads(rest));
        } else if let Some(id) = ident_at(rest) {
            refs.push(id);
        }
    }
    refs
}

/// `name -> module` for the root's `pub use module::...::{Name, ...}` and
/// `pub use module::...::Name;` (a module re-exported under its own name included).
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some(module) = ident_at(path) else {
            continue;
        };
        let names: Vec<&str> = match path.find('{') {
            Some(open) => group_heads(&path[open..]),
            None => path
                .rsplit("::")
                .next()
                .and_then(ident_at)
                .into_iter()
                .collect(),
        };
        for name in names {
            map.insert(name.to_owned(), module.to_owned());
        }
    }
    map
}

fn module_graph(src_dir: &Path) -> Graph {
    let mut files = Vec::new();
    rs_files(src_dir, &mut files);
    let rel = |p: &Path| p.strip_prefix(src_dir).expect("under src").to_path_buf();
    // Top-level module of each file, then files pulled into another with `#[path]`.
    let mut owner: BTreeMap<PathBuf, String> = BTreeMap::new();
    for f in &files {
        let r = rel(f);
        let first = r.components().next().expect("a component");
        let name = first.as_os_str().to_string_lossy();
        owner.insert(r.clone(), name.trim_end_matches(".rs").to_owned());
    }
    let sources: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read source");
            (rel(f), strip_comments(&text))
        })
        .collect();
    for (file, text) in &sources {
        let dir = file.parent().unwrap_or(Path::new(""));
        for (at, _) in text.match_indices("#[path = \"") {
            let rest = &text[at + "#[path = \"".len()..];
            let target = dir.join(&rest[..rest.find('"').expect("closing quote")]);
            let module = owner[file].clone();
            owner.insert(target, module);
        }
    }
    let lib = sources.get(Path::new("lib.rs")).expect("src/lib.rs");
    let reexports = root_reexports(lib);
    let modules: BTreeSet<String> = owner.values().filter(|m| *m != "lib").cloned().collect();
    let mut graph = Graph::new();
    for m in &modules {
        graph.entry(m.clone()).or_default();
    }
    for (file, text) in &sources {
        let from = &owner[file];
        if from == "lib" {
            continue;
        }
        for name in crate_refs(text) {
            let to = if modules.contains(name) {
                name.to_owned()
            } else if let Some(m) = reexports.get(name) {
                m.clone()
            } else {
                continue;
            };
            if &to != from {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(file.display().to_string());
            }
        }
    }
    graph
}

/// A cycle of the graph, as the modules along it (first repeated at the end), if any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|m| m == next).expect("on the stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(graph, next, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node)
            && let Some(c) = visit(graph, node, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

fn describe(graph: &Graph, cycle: &[String]) -> String {
    cycle
        .windows(2)
        .map(|w| {
            let files: Vec<_> = graph[&w[0]][&w[1]].iter().cloned().collect();
            format!("{} -> {} (named in {})", w[0], w[1], files.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn engine_modules_form_layers_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = module_graph(&src);
    assert!(
        graph.len() > 10 && graph.contains_key("engine") && graph.contains_key("event"),
        "the module graph looks wrong: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    for (from, to) in KNOWN_BACK_EDGES {
        let removed = graph.get_mut(*from).and_then(|e| e.remove(*to));
        assert!(
            removed.is_some(),
            "{from} -> {to} is gone: remove it from KNOWN_BACK_EDGES"
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "engine/src has an import cycle:\n  {}",
            describe(&graph, &cycle)
        );
    }
}

/// The checker itself: it finds a cycle where there is one, and parses the forms of paths
/// the engine uses.
#[test]
fn the_checker_finds_cycles_and_reads_paths() {
    let mut graph = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .insert(format!("{a}.rs"));
    };
    edge(&mut graph, "a", "b");
    edge(&mut graph, "b", "c");
    assert_eq!(find_cycle(&graph), None);
    edge(&mut graph, "c", "a");
    let cycle = find_cycle(&graph).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");

    let src = strip_comments(
        "use crate::{a::X, b, c::{D, E}};\n/// [`crate::doc`]\nfn f() { crate::g::h(); \
         $crate::m::n!(); foo_crate::z(); /* crate::blocked */ }",
    );
    assert_eq!(crate_refs(&src), ["a", "b", "c", "g", "m"]);
    let lib = "pub use engine::{Engine, HoldRequest};\npub use engine::replies;\npub use x::y::Z;";
    let map = root_reexports(lib);
    assert_eq!(map["Engine"], "engine");
    assert_eq!(map["replies"], "engine");
    assert_eq!(map["Z"], "x");
}
