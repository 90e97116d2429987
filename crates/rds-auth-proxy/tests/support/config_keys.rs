//! Compares a binary's configuration keys with a table section of docs/configuration.md.
//!
//! Shared by the client's and the server's `config_reference` tests and by the deployment
//! manifests' test, which include this file by path. Three facts are checked:
//!
//! - every key the binary prints (its effective configuration as JSON) has a row in the doc;
//! - every key the doc lists is accepted by the binary: a file setting only that key must not
//!   fail with serde's "unknown field" (the settings deny unknown fields, so this is exact);
//! - the env var and default columns agree with the key and with what the binary prints.
//!
//! Maps are walked through one entry named `<name>`, exactly the placeholder the doc writes,
//! and lists of tables through one element, written `[]` as in `targets[].endpoint`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// One row of a key table.
#[derive(Debug, Clone)]
pub(crate) struct DocRow {
    /// The keys of the row, relative shorthands (`.external_id`) expanded.
    pub(crate) keys: Vec<String>,
    pub(crate) env: Option<String>,
    pub(crate) ty: String,
    pub(crate) default: String,
    /// The line in docs/configuration.md, 1-based.
    pub(crate) line: usize,
}

impl DocRow {
    /// A table-typed key documents everything below it (`resolve`, `upstreams.<name>.tunnel`).
    fn covers_children(&self) -> bool {
        self.ty.contains("table")
    }
}

/// What the check needs to know about one binary.
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    /// The binary's name, for messages.
    pub(crate) binary: &'a str,
    /// The start of the `##` heading of the binary's section in the doc.
    pub(crate) section: &'a str,
    /// The environment prefix, `RDS_AUTH_PROXY_` or `RDS_AUTH_SERVER_`.
    pub(crate) env_prefix: &'a str,
    /// `(key, TOML value)` pairs that make a valid configuration with one entry in every map
    /// and list of tables, so the printed configuration shows the keys inside them.
    pub(crate) fixture: Vec<(&'a str, String)>,
    /// A key that does not exist, to prove that probing tells unknown keys apart.
    pub(crate) bogus_key: &'a str,
}

/// docs/configuration.md from a crate's manifest directory.
pub(crate) fn doc_path(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../../docs/configuration.md")
}

/// Runs every check and panics with one message that lists exactly what to change.
/// `run` executes the binary's print-the-configuration command on a TOML text.
pub(crate) fn check(spec: &Spec<'_>, doc: &str, run: &dyn Fn(&str) -> Output) {
    let rows = doc_rows(doc, spec.section);
    assert!(
        !rows.is_empty(),
        "found no key table under a heading starting with {:?} in docs/configuration.md",
        spec.section
    );
    let documented: BTreeMap<&str, &DocRow> =
        rows.iter().flat_map(|row| row.keys.iter().map(move |key| (key.as_str(), row))).collect();

    let output = run(&render(&spec.fixture));
    assert!(
        output.status.success(),
        "{} rejected the test fixture; update the fixture in this test:\n{}",
        spec.binary,
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("{} did not print JSON ({e}):\n{}", spec.binary, String::from_utf8_lossy(&output.stdout))
    });
    let accepted = json_keys(&printed);

    let mut report = String::new();

    // 1. Printed keys the doc does not list.
    let mut missing = Vec::new();
    for (key, printed) in &accepted {
        if is_documented(key, printed, &rows, &documented) {
            continue;
        }
        missing.push(suggest_row(spec, key, printed));
    }
    if !missing.is_empty() {
        let _ = writeln!(
            report,
            "\nKeys {} accepts that docs/configuration.md does not list. Add a row for each to the \
             table under \"{}\" (the meaning is yours to write):",
            spec.binary, spec.section
        );
        for row in &missing {
            let _ = writeln!(report, "  {row}");
        }
    }

    // 2. Documented keys the binary refuses. Probing is checked on a bogus key first.
    let bogus = run(&render(&[(spec.bogus_key, "{}".to_owned())]));
    assert!(
        is_unknown_field(&bogus, last_segment(spec.bogus_key)),
        "probing is broken: {} did not refuse the bogus key {}; stderr:\n{}",
        spec.binary,
        spec.bogus_key,
        String::from_utf8_lossy(&bogus.stderr)
    );
    let mut refused = Vec::new();
    for row in &rows {
        for key in &row.keys {
            let probe = run(&render(&[(key.as_str(), "{}".to_owned())]));
            if is_unknown_field(&probe, last_segment(key)) {
                refused.push(format!("`{key}` (docs/configuration.md line {})", row.line));
            }
        }
    }
    if !refused.is_empty() {
        let _ = writeln!(
            report,
            "\nKeys docs/configuration.md lists that {} refuses as unknown. Remove or rename these rows:",
            spec.binary
        );
        for key in &refused {
            let _ = writeln!(report, "  {key}");
        }
    }

    // 3. The env var column.
    let mut env_problems = Vec::new();
    for row in &rows {
        let (Some(env), Some(key)) = (&row.env, row.keys.first()) else { continue };
        if key.contains('<') || key.contains("[]") {
            env_problems.push(format!(
                "line {}: `{key}` is inside a map or list; leave its env var column empty",
                row.line
            ));
            continue;
        }
        let expected = env_name(spec.env_prefix, key);
        if *env != expected {
            env_problems.push(format!("line {}: `{key}` is set by `{expected}`, not `{env}`", row.line));
        }
    }
    if !env_problems.is_empty() {
        let _ = writeln!(report, "\nEnv var column mistakes:");
        for problem in &env_problems {
            let _ = writeln!(report, "  {problem}");
        }
    }

    // 4. The default column, where it is a single literal per key.
    let set_by_fixture: BTreeSet<&str> = spec.fixture.iter().map(|(key, _)| *key).collect();
    let mut default_problems = Vec::new();
    for row in &rows {
        let literals = backticked(&row.default);
        let parts: Vec<&str> = row.default.split(", ").collect();
        let whole_cell_is_literals = !literals.is_empty()
            && parts.len() == literals.len()
            && parts.iter().all(|part| part.starts_with('`') && part.ends_with('`'));
        if !whole_cell_is_literals || literals.len() != row.keys.len() {
            continue;
        }
        for (key, literal) in row.keys.iter().zip(&literals) {
            if set_by_fixture.contains(key.as_str()) {
                continue;
            }
            let Some(Printed { value, .. }) = accepted.get(key) else { continue };
            if !same_value(value, literal) {
                default_problems.push(format!(
                    "line {}: `{key}` defaults to `{}`, the doc says `{literal}`",
                    row.line,
                    display(value)
                ));
            }
        }
    }
    if !default_problems.is_empty() {
        let _ = writeln!(report, "\nDefault column mistakes:");
        for problem in &default_problems {
            let _ = writeln!(report, "  {problem}");
        }
    }

    assert!(
        report.is_empty(),
        "docs/configuration.md is out of step with {}.{report}\nEvery key needs a row, and every row \
         a key; see crates/rds-auth-proxy/tests/support/config_keys.rs for how keys are compared.",
        spec.binary
    );
}

/// The env var that sets `key`: the prefix, then the key in upper case with `__` between levels.
pub(crate) fn env_name(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", key.replace('.', "__").to_ascii_uppercase())
}

/// The rows of every key table in the `##` section whose heading starts with `section`.
pub(crate) fn doc_rows(doc: &str, section: &str) -> Vec<DocRow> {
    let mut rows = Vec::new();
    let mut in_section = false;
    let mut columns: Option<Vec<String>> = None;
    for (index, line) in doc.lines().enumerate() {
        if let Some(heading) = line.strip_prefix("## ") {
            in_section = heading.starts_with(section);
            columns = None;
            continue;
        }
        if !in_section {
            continue;
        }
        if !line.starts_with('|') {
            columns = None;
            continue;
        }
        let cells = split_row(line);
        let Some(names) = &columns else {
            if cells.first().is_some_and(|c| c == "Key") {
                columns = Some(cells);
            }
            continue;
        };
        if cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) {
            continue;
        }
        let cell = |name: &str| {
            names.iter().position(|n| n == name).and_then(|i| cells.get(i)).cloned().unwrap_or_default()
        };
        let mut keys: Vec<String> = Vec::new();
        for key in backticked(&cell("Key")) {
            let key = match key.strip_prefix('.') {
                Some(relative) => match keys.last().and_then(|previous| previous.rsplit_once('.')) {
                    Some((parent, _)) => format!("{parent}.{relative}"),
                    None => relative.to_owned(),
                },
                None => key,
            };
            keys.push(key);
        }
        let env = backticked(&cell("Env var")).into_iter().next();
        rows.push(DocRow { keys, env, ty: cell("Type"), default: cell("Default"), line: index + 1 });
    }
    rows
}

/// A table row's cells, trimmed; `\|` stays inside a cell.
fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek() == Some(&'|') => {
                if let Some(cell) = cells.last_mut() {
                    cell.push('|');
                }
                chars.next();
            }
            '|' => cells.push(String::new()),
            other => {
                if let Some(cell) = cells.last_mut() {
                    cell.push(other);
                }
            }
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The `code spans` of a cell, in order.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// What the binary printed at a key.
#[derive(Debug, Clone)]
pub(crate) struct Printed {
    pub(crate) value: Value,
    /// An empty map or list: the keys inside it cannot be seen.
    pub(crate) empty_collection: bool,
}

/// Every key path of a printed configuration: scalars, lists of scalars and empty collections
/// are leaves; objects are walked; a list of tables is walked through its first element.
pub(crate) fn json_keys(value: &Value) -> BTreeMap<String, Printed> {
    let mut keys = BTreeMap::new();
    walk(value, String::new(), &mut keys);
    keys
}

fn walk(value: &Value, path: String, keys: &mut BTreeMap<String, Printed>) {
    let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                walk(child, join(key), keys);
            }
        }
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            if let Some(first) = items.first() {
                walk(first, format!("{path}[]"), keys);
            }
        }
        other => {
            let empty_collection = match other {
                Value::Object(map) => map.is_empty(),
                Value::Array(items) => items.is_empty(),
                _ => false,
            };
            keys.insert(path, Printed { value: other.clone(), empty_collection });
        }
    }
}

/// Whether `key` of a configuration has a row in `rows`, itself or through a table-typed
/// ancestor (for the deployment examples' configuration files).
#[allow(dead_code, reason = "the config_reference tests check whole configurations instead")]
pub(crate) fn is_documented_in(rows: &[DocRow], key: &str, printed: &Printed) -> bool {
    let documented: BTreeMap<&str, &DocRow> =
        rows.iter().flat_map(|row| row.keys.iter().map(move |key| (key.as_str(), row))).collect();
    is_documented(key, printed, rows, &documented)
}

fn is_documented(
    key: &str,
    printed: &Printed,
    rows: &[DocRow],
    documented: &BTreeMap<&str, &DocRow>,
) -> bool {
    if documented.contains_key(key) {
        return true;
    }
    // An ancestor documented as a table covers it.
    let mut ancestor = key;
    while let Some((parent, _)) = ancestor.rsplit_once('.') {
        let parent_key = parent.trim_end_matches("[]");
        if documented.get(parent_key).is_some_and(|row| row.covers_children()) {
            return true;
        }
        ancestor = parent;
    }
    // An empty map or list is documented through its entries.
    printed.empty_collection
        && rows.iter().flat_map(|row| &row.keys).any(|doc_key| {
            doc_key.strip_prefix(key).is_some_and(|rest| rest.starts_with('.') || rest.starts_with("[]"))
        })
}

fn suggest_row(spec: &Spec<'_>, key: &str, printed: &Printed) -> String {
    let env = if key.contains('<') || key.contains("[]") || printed.empty_collection {
        String::new()
    } else {
        format!("`{}`", env_name(spec.env_prefix, key))
    };
    let default = match &printed.value {
        Value::Null => "none".to_owned(),
        Value::Array(items) if items.is_empty() => "empty".to_owned(),
        Value::Object(map) if map.is_empty() => "empty".to_owned(),
        other => format!("`{}`", display(other)),
    };
    let ty = type_of(&printed.value);
    let mut row = format!("| `{key}` | {env} | | {ty} | {default} | … |").replace("|  |", "| |");
    if printed.empty_collection {
        row.push_str(
            "   <- printed empty: if it holds tables, document their keys (`key[].field` or \
             `key.<name>.field`) and give this test's fixture an entry so they are checked too",
        );
    }
    row
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "bool",
        Value::Number(_) => "integer",
        Value::String(s) if parse_duration(s).is_some() => "duration",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "table",
        Value::Null => "?",
    }
}

/// A value as the doc writes defaults: strings bare, everything else as compact JSON.
fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a printed value equals a documented literal; durations compare by length of time
/// (`60s` and `1m` are the same).
fn same_value(value: &Value, literal: &str) -> bool {
    match value {
        Value::String(s) => {
            s == literal || parse_duration(s).is_some_and(|a| parse_duration(literal) == Some(a))
        }
        Value::Array(_) => {
            let compact: String = literal.chars().filter(|c| !c.is_whitespace()).collect();
            *value == serde_json::from_str::<Value>(&compact).unwrap_or(Value::Null)
        }
        other => serde_json::from_str::<Value>(literal).is_ok_and(|parsed| parsed == *other),
    }
}

/// A humantime duration such as `90s`, `1m` or `1h 30m`, in milliseconds; only the units the
/// configuration uses, so this file needs no crate beyond serde_json.
pub(crate) fn parse_duration(text: &str) -> Option<u128> {
    let mut total = 0u128;
    let mut seen = false;
    for part in text.split_whitespace() {
        let split = part.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = part.split_at(split);
        let number: u128 = number.parse().ok()?;
        let scale = match unit {
            "ms" => 1,
            "s" | "sec" | "secs" => 1_000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hr" | "hrs" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => return None,
        };
        total += number * scale;
        seen = true;
    }
    seen.then_some(total)
}

fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key).trim_end_matches("[]")
}

/// serde's refusal of a field, as figment reports it: "unknown field: found `name`".
fn is_unknown_field(output: &Output, field: &str) -> bool {
    !output.status.success()
        && String::from_utf8_lossy(&output.stderr).contains(&format!("unknown field: found `{field}`"))
}

/// A TOML document setting `(key, value)` pairs, one top-level line per first segment with
/// everything below it as inline tables: `<name>` becomes a quoted map key and `list[]` a list
/// holding one table.
pub(crate) fn render(pairs: &[(&str, String)]) -> String {
    let mut root = Node::Table(BTreeMap::new());
    for (key, value) in pairs {
        root.insert(&key.split('.').collect::<Vec<_>>(), value);
    }
    let Node::Table(top) = root else { unreachable!("the root is a table") };
    top.iter().map(|(key, node)| format!("{} = {}\n", toml_key(key), node.inline())).collect()
}

#[derive(Debug)]
enum Node {
    Table(BTreeMap<String, Node>),
    /// A list holding one table.
    List(Box<Node>),
    Value(String),
}

impl Node {
    fn insert(&mut self, segments: &[&str], value: &str) {
        let Node::Table(map) = self else { panic!("a key sets a value and a table at the same place") };
        let Some((first, rest)) = segments.split_first() else { return };
        let (name, is_list) = match first.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*first, false),
        };
        if rest.is_empty() && !is_list {
            map.insert(name.to_owned(), Node::Value(value.to_owned()));
            return;
        }
        let entry = map.entry(name.to_owned()).or_insert_with(|| {
            if is_list {
                Node::List(Box::new(Node::Table(BTreeMap::new())))
            } else {
                Node::Table(BTreeMap::new())
            }
        });
        let table = match entry {
            Node::List(table) => table.as_mut(),
            other => other,
        };
        table.insert(rest, value);
    }

    fn inline(&self) -> String {
        match self {
            Node::Value(value) => value.clone(),
            Node::List(table) => format!("[{}]", table.inline()),
            Node::Table(map) => {
                let entries: Vec<String> =
                    map.iter().map(|(key, node)| format!("{} = {}", toml_key(key), node.inline())).collect();
                if entries.is_empty() { "{}".to_owned() } else { format!("{{ {} }}", entries.join(", ")) }
            }
        }
    }
}

fn toml_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_owned()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[test]
fn rows_expand_relative_keys() {
    let doc = "## Server proxy\n\n| Key | Env var | Flag | Type | Default | Meaning |\n| --- | --- | --- | --- | --- | --- |\n\
               | `a.<name>.b`, `.c` | | | string | none | x |\n| `d.e` | `P_D__E` | | duration | `5s` | y |\n\n## Other\n| Key |\n| --- |\n| `z` |\n";
    let rows = doc_rows(doc, "Server proxy");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].keys, ["a.<name>.b", "a.<name>.c"]);
    assert_eq!(rows[1].env.as_deref(), Some("P_D__E"));
    assert_eq!(rows[1].line, 6);
}

#[test]
fn render_nests_maps_and_lists() {
    let text = render(&[
        ("targets[].endpoint", "\"db:5432\"".to_owned()),
        ("targets[].auth", "[\"iam\"]".to_owned()),
        ("upstreams.<name>.ca", "\"/ca\"".to_owned()),
        ("log.level", "\"info\"".to_owned()),
    ]);
    assert_eq!(
        text,
        "log = { level = \"info\" }\ntargets = [{ auth = [\"iam\"], endpoint = \"db:5432\" }]\n\
         upstreams = { \"<name>\" = { ca = \"/ca\" } }\n"
    );
}

#[test]
fn durations_compare_by_length() {
    assert_eq!(parse_duration("1m"), parse_duration("60s"));
    assert_eq!(parse_duration("1h 30m"), Some(5_400_000));
    assert_eq!(parse_duration("0.0.0.0:5432"), None);
    assert_eq!(parse_duration("info"), None);
    assert!(same_value(&Value::String("1m".into()), "60s"));
    assert!(!same_value(&Value::String("1m".into()), "61s"));
}

#[test]
fn json_keys_walk_maps_and_lists() {
    let value = serde_json::json!({
        "a": { "<name>": { "b": 1 } },
        "t": [{ "endpoint": "x" }],
        "empty": [],
        "scalars": ["x"],
    });
    let keys: Vec<String> = json_keys(&value).into_keys().collect();
    assert_eq!(keys, ["a.<name>.b", "empty", "scalars", "t[].endpoint"]);
}
