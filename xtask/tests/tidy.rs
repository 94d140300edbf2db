//! Repository invariants as plain tests (as rust-analyzer's `tidy`), so `cargo test
//! --workspace` keeps the house tidy: `//!` headers, file-size ceilings, `unsafe` fenced in
//! `engine/transport/src/sys/`, the crate dependency rules of ARCHITECTURE.md, SQL only in
//! store modules, status/reason words spelled only by their enum's module, and `nft` run only
//! by the lab's nftables module.
//!
//! ARCHITECTURE.md ("Enforced rules") names each rule next to the invariant it protects.
//! The allow-lists below may only shrink: a test fails when a listed file no longer needs its
//! entry, and its message prints the corrected list to paste here.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Line ceiling of a `.rs` file under a `src/` folder.
const SRC_CEILING: usize = 600;
/// Line ceiling of a `.rs` file under `xtask/src/`.
const XTASK_CEILING: usize = 800;

/// Files allowed over their ceiling until they are cut by job. May only shrink: the test
/// fails when a listed file is back under its ceiling (delete its line then).
const OVERSIZED: &[&str] = &[];

/// The only folder whose files may contain `unsafe`.
const UNSAFE_DIR: &str = "engine/transport/src/sys/";

/// The only file that may run `nft` (always through `ip netns exec` into a lab namespace).
const NFT_MODULE: &str = "xtask/src/lab/nft.rs";

/// The store: the only folder whose non-test code may call `sqlx::query*`.
const STORE_DIR: &str = "control-api/src/store/";

/// A closed set of words that an enum serialises as text.
struct Vocabulary {
    /// What the words are, for messages.
    what: &'static str,
    /// The enums' modules: the only files whose non-test code may spell the words.
    owners: &'static [&'static str],
    /// The enum's text forms.
    words: &'static [&'static str],
}

/// Status and reason vocabularies. A string literal equal to one of these words in the
/// non-test code of a product crate (`engine/*/src`, `control-api/src`) outside the owner
/// is a status or reason kept as loose text instead of its enum.
const VOCABULARIES: &[Vocabulary] = &[
    Vocabulary {
        what: "port state, core::results::PortState",
        owners: &["engine/core/src/results.rs"],
        words: &["open", "closed", "filtered"],
    },
    Vocabulary {
        what: "port reason, core::results::Reason",
        owners: &["engine/core/src/results.rs"],
        words: &["syn-ack", "reset", "no-response", "icmp-unreachable"],
    },
    Vocabulary {
        what: "scan status, control-api model::ScanState",
        // The protocol's fail reasons (`proto::FailReason`) share the word "cancelled" with
        // the API's scan status.
        owners: &["control-api/src/model.rs", "engine/proto/src/codes.rs"],
        words: &["queued", "running", "complete", "failed", "cancelled"],
    },
    Vocabulary {
        what: "engine reject code, proto::RejectCode",
        owners: &["engine/proto/src/codes.rs"],
        words: &["invalid", "busy"],
    },
    Vocabulary {
        what: "scan fail reason, proto::FailReason and control-api jobs::reason",
        owners: &[
            "engine/proto/src/codes.rs",
            "control-api/src/jobs/reason.rs",
        ],
        words: &[
            "engine_shutdown",
            "engine_restarted",
            "engine_error",
            "engine_unavailable",
        ],
    },
    Vocabulary {
        what: "managed alert kind and status, control-api managed::alerts",
        owners: &["control-api/src/managed/alerts.rs"],
        words: &[
            "new_open_port",
            "port_closed",
            "banner_changed",
            "acknowledged",
            "resolved",
        ],
    },
];

/// Files that still spell status/reason words as literals, with how many. May only shrink:
/// use the enum (`as_str`, serde) and lower or delete the entry.
const SCATTERED_WORDS: &[(&str, usize)] = &[
    ("control-api/src/engine/fake.rs", 1),          // "cancelled"
    ("control-api/src/http/managed/json.rs", 5),    // JSON keys "open", "filtered", "closed"
    ("control-api/src/http/managed/openapi.rs", 3), // alert status enum in the schema
    ("control-api/src/managed/alerts.rs", 1),       // AlertStatus::Open (not a port state)
    ("engine/daemon/src/metrics.rs", 4),            // scan outcome labels
];

/// What a crate may (or may never) depend on, read from its `Cargo.toml`.
enum Deps {
    /// Its `[dependencies]` and `[build-dependencies]` are only these.
    Only(&'static [&'static str]),
    /// None of its dependency tables (normal, dev, build, per-target) names these.
    Never(&'static [&'static str]),
}

/// The dependency rules of ARCHITECTURE.md: (manifest, rule, the invariant it protects).
const DEP_RULES: &[(&str, Deps, &str)] = &[
    (
        "engine/core/Cargo.toml",
        Deps::Only(&["hdrhistogram", "ipnet", "serde", "siphasher", "thiserror"]),
        "portscope-core does no I/O, reads no clock and draws no randomness",
    ),
    (
        "engine/proto/Cargo.toml",
        Deps::Only(&["portscope-core", "serde", "serde_json", "thiserror"]),
        "the engine/API protocol is pure framing, with no I/O",
    ),
    (
        "engine/transport/Cargo.toml",
        Deps::Never(&[
            "portscope-engine",
            "portscope-daemon",
            "portscope-proto",
            "portscope",
            "portscope-control-api",
        ]),
        "packet I/O sits below the engine and knows nothing above it",
    ),
    (
        "engine/runtime/Cargo.toml",
        Deps::Never(&[
            "portscope-daemon",
            "portscope-proto",
            "portscope",
            "portscope-control-api",
        ]),
        "the engine knows nothing of the daemon, its protocol, the CLI or the API",
    ),
    (
        "engine/daemon/Cargo.toml",
        Deps::Never(&["portscope", "portscope-control-api"]),
        "the engine daemon knows nothing of the CLI or the API",
    ),
    (
        "control-api/Cargo.toml",
        Deps::Never(&[
            "portscope-engine",
            "portscope-transport",
            "portscope-daemon",
            "pnet",
            "pnet_datalink",
        ]),
        "privilege is split: the API holds no capability and reaches the engine only through \
         its socket (portscope-proto)",
    ),
    (
        "control-api/input/Cargo.toml",
        Deps::Only(&[
            "portscope-core",
            "http",
            "ipnet",
            "serde",
            "thiserror",
            "url",
        ]),
        "portscope-input is pure parsing of untrusted API input (no I/O, no async): the fuzz \
         targets build it alone, not the API's async, database and HTTP stack",
    ),
];

/// One `.rs` file of the tree.
struct Source {
    /// Path from the repository root, with `/`.
    rel: String,
    /// Its text.
    text: String,
}

/// The repository root (the parent of `xtask/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// Whether a folder is skipped: build output, git, and fuzz corpora/artifacts.
fn skipped_dir(rel: &str, name: &str) -> bool {
    name == "target"
        || name.starts_with('.')
        || (rel.contains("fuzz/") && ["corpus", "artifacts", "seeds", "coverage"].contains(&name))
}

/// Every `.rs` file under the root, sorted, read once for all tests.
fn sources() -> &'static [Source] {
    static SOURCES: OnceLock<Vec<Source>> = OnceLock::new();
    SOURCES.get_or_init(|| {
        let root = root();
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read a folder of the tree") {
                let path = entry.expect("read a folder entry").path();
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if !skipped_dir(&rel, &name) {
                        stack.push(path);
                    }
                } else if name.ends_with(".rs") {
                    let text = std::fs::read_to_string(&path).expect("read a .rs file");
                    out.push(Source { rel, text });
                }
            }
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        assert!(
            out.len() > 50,
            "the tidy walk found only {} .rs files under {root:?}",
            out.len()
        );
        out
    })
}

/// Panics with every problem, one a line, when there is any.
fn report(rule: &str, problems: Vec<String>) {
    if !problems.is_empty() {
        panic!("tidy rule broken: {rule}\n  {}\n", problems.join("\n  "));
    }
}

/// The token trees of a file (comments dropped, doc comments become attributes).
fn tokens(src: &Source) -> TokenStream {
    src.text
        .parse()
        .unwrap_or_else(|e| panic!("{}: not tokenizable Rust ({e:?})", src.rel))
}

/// Whether `tts[i..]` starts with `#[cfg(test)]`.
fn is_cfg_test(tts: &[TokenTree], i: usize) -> bool {
    match (tts.get(i), tts.get(i + 1)) {
        (Some(TokenTree::Punct(p)), Some(TokenTree::Group(g)))
            if p.as_char() == '#' && g.delimiter() == Delimiter::Bracket =>
        {
            let inner: String = g
                .stream()
                .to_string()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            inner == "cfg(test)"
        }
        _ => false,
    }
}

/// Whether `tts[i..]` starts an attribute, `#[...]` or `#![...]`.
fn is_attribute(tts: &[TokenTree], i: usize) -> bool {
    let bracket = |k: usize| matches!(tts.get(k), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Bracket);
    match (tts.get(i), tts.get(i + 1)) {
        (Some(TokenTree::Punct(p)), Some(TokenTree::Punct(bang))) if p.as_char() == '#' => {
            bang.as_char() == '!' && bracket(i + 2)
        }
        (Some(TokenTree::Punct(p)), _) if p.as_char() == '#' => bracket(i + 1),
        _ => false,
    }
}

/// Visits every token of non-test code (attributes skipped): an item under `#[cfg(test)]` (attributes, then up to
/// and including its first `{...}` group or `;`) is skipped.
fn visit_non_test(stream: TokenStream, f: &mut dyn FnMut(&TokenTree, &[TokenTree], usize)) {
    let tts: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < tts.len() {
        if is_cfg_test(&tts, i) {
            i += 2;
            while i < tts.len() {
                let end = match &tts[i] {
                    TokenTree::Group(g) => g.delimiter() == Delimiter::Brace,
                    TokenTree::Punct(p) => p.as_char() == ';',
                    _ => false,
                };
                i += 1;
                if end {
                    break;
                }
            }
            continue;
        }
        if is_attribute(&tts, i) {
            // `#[...]` / `#![...]`: docs, derives and schema examples are not code.
            i += if matches!(&tts[i + 1], TokenTree::Punct(p) if p.as_char() == '!') {
                3
            } else {
                2
            };
            continue;
        }
        f(&tts[i], &tts, i);
        if let TokenTree::Group(g) = &tts[i] {
            visit_non_test(g.stream(), f);
        }
        i += 1;
    }
}

/// Visits every token, test code included.
fn visit_all(stream: TokenStream, f: &mut dyn FnMut(&TokenTree)) {
    for tt in stream {
        f(&tt);
        if let TokenTree::Group(g) = &tt {
            visit_all(g.stream(), f);
        }
    }
}

/// Line of a token (1-based).
fn line(tt: &TokenTree) -> usize {
    tt.span().start().line
}

/// The non-test code of a product crate (what the SQL and vocabulary rules look at).
fn product_code(rel: &str) -> bool {
    (rel.starts_with("engine/") || rel.starts_with("control-api/"))
        && rel.contains("/src/")
        && !rel.contains("/fuzz/")
}

/// Compares counted findings with a shrinking allow-list; returns the problems, and the
/// corrected list when it needs editing.
fn compare_counts(
    found: &BTreeMap<String, Vec<String>>,
    allowed: &[(&str, usize)],
    list_name: &str,
    fix: &str,
) -> Vec<String> {
    let allowed: BTreeMap<&str, usize> = allowed.iter().copied().collect();
    let mut problems = Vec::new();
    for (file, places) in found {
        let limit = allowed.get(file.as_str()).copied().unwrap_or(0);
        if places.len() > limit {
            problems.push(format!(
                "{file}: {} found, {limit} allowed ({}); {fix}",
                places.len(),
                places.join(", ")
            ));
        }
    }
    for (file, &limit) in &allowed {
        let n = found.get(*file).map_or(0, Vec::len);
        if n < limit {
            problems.push(format!(
                "{file}: {list_name} allows {limit} but {n} remain: good, now lower the entry \
                 in xtask/tests/tidy.rs to {n} (delete it at 0), the list only shrinks"
            ));
        }
    }
    if !problems.is_empty() {
        let mut list = format!("corrected {list_name} (if the new ones are intended):");
        for (file, places) in found {
            list.push_str(&format!("\n      (\"{file}\", {}),", places.len()));
        }
        problems.push(list);
    }
    problems
}

#[test]
fn every_rs_file_opens_with_a_module_doc_line() {
    let problems = sources()
        .iter()
        .filter(|s| !s.text.starts_with("//!"))
        .map(|s| {
            format!(
                "{}:1: add a first line `//! <what this file is for>`",
                s.rel
            )
        })
        .collect();
    report(
        "every .rs file opens with a `//!` line saying what it is for",
        problems,
    );
}

#[test]
fn files_stay_under_their_line_ceiling() {
    let mut problems = Vec::new();
    let mut oversized = Vec::new();
    for s in sources() {
        let ceiling = if s.rel.starts_with("xtask/src/") {
            XTASK_CEILING
        } else if s.rel.contains("/src/") {
            SRC_CEILING
        } else {
            continue;
        };
        let lines = s.text.lines().count();
        let listed = OVERSIZED.contains(&s.rel.as_str());
        if lines > ceiling {
            oversized.push(format!("    \"{}\", // {lines} lines", s.rel));
            if !listed {
                problems.push(format!(
                    "{}: {lines} lines, over the ceiling of {ceiling}: split it by job into \
                     modules (do not add it to OVERSIZED)",
                    s.rel
                ));
            }
        } else if listed {
            problems.push(format!(
                "{}: {lines} lines, now under the ceiling of {ceiling}: delete its line from \
                 OVERSIZED in xtask/tests/tidy.rs (the list only shrinks)",
                s.rel
            ));
        }
    }
    for listed in OVERSIZED {
        if !sources().iter().any(|s| s.rel == *listed) {
            problems.push(format!(
                "{listed}: listed in OVERSIZED but gone: delete its line"
            ));
        }
    }
    if !problems.is_empty() {
        problems.push(format!(
            "files over their ceiling now:\n{}",
            oversized.join("\n")
        ));
    }
    report(
        "files in src/ stay under 600 lines (xtask/src under 800)",
        problems,
    );
}

#[test]
fn unsafe_only_in_transport_sys() {
    let mut problems = Vec::new();
    for s in sources().iter().filter(|s| !s.rel.starts_with(UNSAFE_DIR)) {
        visit_all(tokens(s), &mut |tt| {
            if matches!(tt, TokenTree::Ident(i) if i == "unsafe") {
                problems.push(format!(
                    "{}:{}: `unsafe` outside {UNSAFE_DIR}: use a safe crate API, or move the \
                     syscall into {UNSAFE_DIR} behind a safe function with a `// SAFETY:` comment",
                    s.rel,
                    line(tt)
                ));
            }
        });
    }
    report(
        "`unsafe` exists only in engine/transport/src/sys/",
        problems,
    );
}

#[test]
fn sql_only_in_store_modules() {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in sources() {
        if !product_code(&s.rel) || s.rel.starts_with(STORE_DIR) {
            continue;
        }
        visit_non_test(tokens(s), &mut |tt, tts, i| {
            let is_sqlx = matches!(tt, TokenTree::Ident(id) if id == "sqlx");
            let path_sep = matches!(
                (tts.get(i + 1), tts.get(i + 2)),
                (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                    if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
            );
            let query = matches!(tts.get(i + 3), Some(TokenTree::Ident(q)) if q.to_string().starts_with("query"));
            if is_sqlx && path_sep && query {
                found
                    .entry(s.rel.clone())
                    .or_default()
                    .push(format!("line {}", line(tt)));
            }
        });
    }
    let problems = found
        .iter()
        .map(|(file, lines)| {
            format!(
                "{file}: `sqlx::query*` at {}: move the query into a module of {STORE_DIR} \
                 (a method on the store) and call that",
                lines.join(", ")
            )
        })
        .collect();
    report("no `sqlx::query*` outside control-api/src/store/", problems);
}

#[test]
fn status_and_reason_words_only_in_their_enum_module() {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in sources().iter().filter(|s| product_code(&s.rel)) {
        visit_non_test(tokens(s), &mut |tt, _, _| {
            let TokenTree::Literal(lit) = tt else { return };
            let text = lit.to_string();
            let Some(word) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
                return;
            };
            for v in VOCABULARIES {
                if v.words.contains(&word) && !v.owners.contains(&s.rel.as_str()) {
                    found.entry(s.rel.clone()).or_default().push(format!(
                        "line {} \"{word}\" ({})",
                        line(tt),
                        v.what
                    ));
                }
            }
        });
    }
    let problems = compare_counts(
        &found,
        SCATTERED_WORDS,
        "SCATTERED_WORDS",
        "use the enum (its `as_str()` or serde form) instead of the literal",
    );
    report(
        "status and reason words are spelled only by their enum's module (VOCABULARIES)",
        problems,
    );
}

/// The API may name `caps` only in `control-api/src/privs.rs`, and there only to clear
/// sets: it drops every capability at start and never raises one.
#[test]
fn the_api_only_drops_capabilities() {
    let mut problems = Vec::new();
    for s in sources() {
        if !s.rel.starts_with("control-api/src/") {
            continue;
        }
        let mut uses = Vec::new();
        visit_all(tokens(s), &mut |tt| {
            if matches!(tt, TokenTree::Ident(id) if id == "caps") {
                uses.push(line(tt));
            }
        });
        if s.rel != "control-api/src/privs.rs" && !uses.is_empty() {
            problems.push(format!(
                "{}: names `caps` (lines {uses:?}); capability handling of the API lives in \
                 control-api/src/privs.rs",
                s.rel
            ));
        }
        for raise in ["caps::raise", "caps::set"] {
            if s.text.contains(raise) {
                problems.push(format!(
                    "{}: calls `{raise}`: the API only clears sets",
                    s.rel
                ));
            }
        }
    }
    report(
        "the API holds no capability: `caps` only in control-api/src/privs.rs, only to clear",
        problems,
    );
}

#[test]
fn nft_runs_only_through_lab_nft() {
    let mut problems = Vec::new();
    for s in sources().iter().filter(|s| s.rel != NFT_MODULE) {
        visit_all(tokens(s), &mut |tt| {
            if matches!(tt, TokenTree::Literal(l) if l.to_string() == "\"nft\"") {
                problems.push(format!(
                    "{}:{}: runs `nft` directly: use `lab::nft::apply` (a script) or \
                     `lab::nft::query` (a listing), which run it inside a lab namespace",
                    s.rel,
                    line(tt)
                ));
            }
        });
    }
    report(
        "nftables is run only by xtask/src/lab/nft.rs, inside a lab namespace",
        problems,
    );
}

/// Dependency names of one table (`package = "..."` renames resolved).
fn dep_names(table: Option<&toml::Value>) -> BTreeSet<String> {
    let Some(toml::Value::Table(t)) = table else {
        return BTreeSet::new();
    };
    t.iter()
        .map(
            |(key, v)| match v.get("package").and_then(toml::Value::as_str) {
                Some(package) => package.to_string(),
                None => key.clone(),
            },
        )
        .collect()
}

/// A manifest parsed.
fn manifest(rel: &str) -> toml::Value {
    let text = std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: not TOML: {e}"))
}

#[test]
fn crate_dependencies_follow_the_architecture() {
    let mut problems = Vec::new();
    for (rel, rule, why) in DEP_RULES {
        let m = manifest(rel);
        let normal: BTreeSet<String> = dep_names(m.get("dependencies"))
            .into_iter()
            .chain(dep_names(m.get("build-dependencies")))
            .collect();
        let mut every = normal.clone();
        every.extend(dep_names(m.get("dev-dependencies")));
        if let Some(toml::Value::Table(targets)) = m.get("target") {
            for t in targets.values() {
                for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
                    every.extend(dep_names(t.get(table)));
                }
            }
        }
        match rule {
            Deps::Only(allowed) => {
                for dep in normal.iter().filter(|d| !allowed.contains(&d.as_str())) {
                    problems.push(format!(
                        "{rel}: depends on `{dep}`, which is not in its allowed list ({}): \
                         remove it, because {why}; if it is pure (no I/O, clock or \
                         randomness) add it to DEP_RULES in xtask/tests/tidy.rs and say why",
                        allowed.join(", ")
                    ));
                }
            }
            Deps::Never(banned) => {
                for dep in every.iter().filter(|d| banned.contains(&d.as_str())) {
                    problems.push(format!(
                        "{rel}: depends on `{dep}`: remove it, because {why}"
                    ));
                }
            }
        }
    }
    report("crate dependencies follow ARCHITECTURE.md", problems);
}

#[test]
fn every_crate_inherits_the_workspace_lints() {
    let root_manifest = manifest("Cargo.toml");
    let mut problems = Vec::new();
    let unsafe_code = root_manifest
        .get("workspace")
        .and_then(|w| w.get("lints"))
        .and_then(|l| l.get("rust"))
        .and_then(|r| r.get("unsafe_code"))
        .and_then(toml::Value::as_str);
    if unsafe_code != Some("deny") {
        problems.push(
            "Cargo.toml: [workspace.lints.rust] must keep `unsafe_code = \"deny\"`".to_string(),
        );
    }
    let members = root_manifest["workspace"]["members"]
        .as_array()
        .expect("workspace.members");
    for member in members.iter().filter_map(toml::Value::as_str) {
        let rel = format!("{member}/Cargo.toml");
        let inherits = manifest(&rel)
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(toml::Value::as_bool);
        if inherits != Some(true) {
            problems.push(format!("{rel}: add `[lints]\\nworkspace = true`"));
        }
    }
    report(
        "every workspace crate inherits [workspace.lints] (unsafe_code = deny)",
        problems,
    );
}
