//! One YAML document into a `serde_json::Value`, within fixed resource limits.
//!
//! yaml-rust2 scans and parses (safe Rust, pull-based: we stop at the first event over a limit); this module builds
//! the value and gives scalars their types the way Kubernetes' YAML reader (go-yaml v2) does, so a manifest means
//! here what it means to `kubectl apply`:
//!
//! - plain `true`/`false`, and YAML 1.1's `yes`/`no`/`on`/`off`/`y`/`n` (any of their usual casings), are booleans;
//!   `~`, `null` and nothing are null; decimal, `0x`, `0o`, `0b` and leading-zero octal integers, `_` separators and
//!   decimal floats are numbers; anything else, and every quoted or block scalar, is a string;
//! - `!!str`, `!!int`, `!!float`, `!!bool` and `!!null` force a type; other tags are ignored;
//! - anchors, aliases and merge keys (`<<: *base`) work; a key given twice in one mapping is an error, as in
//!   Kubernetes' strict decoding;
//! - mapping keys are strings (`80: x` has the key `"80"`); a mapping or sequence as a key is an error.
//!
//! Limits, counted with every copy an alias makes: 250,000 values, 64 MiB of scalar text, 64 levels of nesting.
//! They stop alias bombs ("billion laughs") and runaway nesting in milliseconds, far above any real manifest.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The limits one document is parsed within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Values (scalars, mappings, sequences), each alias copy counted again.
    pub max_values: usize,
    /// Bytes of scalar text, each alias copy counted again.
    pub max_text_bytes: usize,
    /// Mappings and sequences nested in each other.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_values: 250_000, max_text_bytes: 64 << 20, max_depth: 64 }
    }
}

/// Why a document could not be read, and where (line 1 is the first line of the text parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub message: String,
    pub line: usize,
    pub column: usize,
    /// The document went over one of the [`Limits`].
    pub over_limit: bool,
    /// The flow collection (`[` or `{`, line, column) still open where the error is, likely left unclosed.
    pub inside: Option<(char, usize, usize)>,
}

impl YamlError {
    fn at(mark: Marker, message: impl Into<String>) -> Self {
        Self { message: message.into(), line: mark.line(), column: mark.col() + 1, over_limit: false, inside: None }
    }

    fn over_limit(mark: Marker, what: String) -> Self {
        Self { over_limit: true, ..Self::at(mark, format!("document too large to read safely ({what})")) }
    }
}

impl YamlError {
    /// The message with its positions, lines counted from `first_line` (the line of the file the text starts on).
    pub fn render(&self, first_line: usize) -> String {
        let line = |l: usize| l + first_line.saturating_sub(1);
        let mut out = format!("{} at line {}, column {}", self.message, line(self.line), self.column);
        if let Some((c, l, col)) = self.inside {
            out.push_str(&format!(" (inside the `{c}` opened at line {}, column {col}: is it closed?)", line(l)));
        }
        out
    }
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(1))
    }
}

/// Parses the first document of `text` (an empty text is `null`); a second document is an error.
pub fn parse(text: &str, limits: Limits) -> Result<Value, YamlError> {
    // The scanner would read a NUL as the end of the text and drop what follows; YAML forbids control characters.
    if let Some((at, c)) = text.char_indices().find(|&(_, c)| !printable(c)) {
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let message = format!("the control character U+{:04X} is not allowed in YAML", u32::from(c));
        return Err(YamlError { message, line, column, over_limit: false, inside: None });
    }
    let mut parser = Parser::new_from_str(text);
    let mut b = Build { limits, stack: Vec::new(), anchors: HashMap::new(), values: 0, text_bytes: 0, root: None };
    let mut documents = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| syntax_error(text, &b.stack, *e.marker(), e.info()))?;
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError::at(mark, "a second document in one; separate documents with `---`"));
                }
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::Alias(id) => b.alias(id, mark)?,
            Event::Scalar(text, style, anchor, tag) => b.scalar(text, style, anchor, tag.as_ref(), mark)?,
            Event::SequenceStart(anchor, _) => b.open(Open::Sequence(Vec::new()), anchor, mark)?,
            Event::MappingStart(anchor, _) => {
                b.open(Open::Mapping { map: Map::new(), key: None, merges: Vec::new() }, anchor, mark)?
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(mark)?,
        }
    }
    Ok(b.root.unwrap_or(Value::Null))
}

/// YAML 1.2's printable characters (§5.1).
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// The parser's message, made specific where it is vague: a document that ends inside a `[...]` or `{...}` names the
/// bracket left open, and an unclosed quote says so.
fn syntax_error(text: &str, stack: &[Frame], mark: Marker, info: &str) -> YamlError {
    if info == "while scanning a quoted scalar, found unexpected end of stream" {
        return YamlError::at(
            mark,
            "unclosed quote: the quoted string that starts here runs to the end of the document",
        );
    }
    let at_end = mark.index() >= text.trim_end().chars().count();
    let open_bracket = stack.iter().rev().find_map(|f| {
        let line = text.lines().nth(f.start.line().checked_sub(1)?)?;
        let c = line.chars().nth(f.start.col())?;
        matches!(c, '[' | '{').then_some((c, f.start))
    });
    match open_bracket {
        Some((c, start)) if at_end => {
            YamlError::at(start, format!("unclosed bracket `{c}`: the document ends before it is closed"))
        }
        Some((c, start)) if mark.line() > start.line() => {
            YamlError { inside: Some((c, start.line(), start.col() + 1)), ..YamlError::at(mark, info) }
        }
        _ => YamlError::at(mark, info),
    }
}

struct Build {
    limits: Limits,
    stack: Vec<Frame>,
    /// Anchored values with what they cost to copy: (value, values, text bytes).
    anchors: HashMap<usize, (Value, usize, usize)>,
    values: usize,
    text_bytes: usize,
    root: Option<Value>,
}

/// A mapping or sequence being read, and what was counted before it started (to price its anchor).
struct Frame {
    open: Open,
    anchor: usize,
    /// Where it starts: its `[` or `{` in flow style.
    start: Marker,
    values_before: usize,
    bytes_before: usize,
}

enum Open {
    Sequence(Vec<Value>),
    Mapping {
        map: Map<String, Value>,
        /// The key whose value comes next; `None` when a key comes next.
        key: Option<Key>,
        /// Mappings merged in by `<<`, earliest first; their keys yield to the mapping's own.
        merges: Vec<Map<String, Value>>,
    },
}

enum Key {
    Named(String),
    Merge,
}

impl Build {
    fn count(&mut self, values: usize, text_bytes: usize, mark: Marker) -> Result<(), YamlError> {
        self.values = self.values.saturating_add(values);
        self.text_bytes = self.text_bytes.saturating_add(text_bytes);
        if self.values > self.limits.max_values {
            let what = format!("more than {} values, counting each copy an alias makes", self.limits.max_values);
            return Err(YamlError::over_limit(mark, what));
        }
        if self.text_bytes > self.limits.max_text_bytes {
            let mib = self.limits.max_text_bytes >> 20;
            return Err(YamlError::over_limit(
                mark,
                format!("more than {mib} MiB of text, counting each copy an alias makes"),
            ));
        }
        Ok(())
    }

    /// True when the next node is a mapping key.
    fn wants_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame { open: Open::Mapping { key: None, .. }, .. }))
    }

    fn scalar(
        &mut self,
        text: String,
        style: TScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        mark: Marker,
    ) -> Result<(), YamlError> {
        self.count(1, text.len(), mark)?;
        if self.wants_key() {
            let key = if style == TScalarStyle::Plain && text == "<<" { Key::Merge } else { Key::Named(text.clone()) };
            if anchor != 0 {
                let bytes = text.len();
                self.anchors.insert(anchor, (Value::String(text), 1, bytes));
            }
            return self.key(key, mark);
        }
        let value = typed(text, style, tag).map_err(|m| YamlError::at(mark, m))?;
        if anchor != 0 {
            let bytes = value.as_str().map_or(0, str::len);
            self.anchors.insert(anchor, (value.clone(), 1, bytes));
        }
        self.value(value, mark)
    }

    fn alias(&mut self, id: usize, mark: Marker) -> Result<(), YamlError> {
        let Some((value, values, bytes)) = self.anchors.get(&id) else {
            return Err(YamlError::at(mark, "an alias (*name) to an anchor (&name) not defined before it"));
        };
        let (value, values, bytes) = (value.clone(), *values, *bytes);
        self.count(values, bytes, mark)?;
        if self.wants_key() {
            return match value {
                Value::String(s) => self.key(Key::Named(s), mark),
                _ => Err(YamlError::at(mark, "a mapping key must be a plain value, not a mapping or sequence")),
            };
        }
        self.value(value, mark)
    }

    fn key(&mut self, key: Key, mark: Marker) -> Result<(), YamlError> {
        if let Some(Frame { open: Open::Mapping { map, key: slot, .. }, .. }) = self.stack.last_mut() {
            if let Key::Named(name) = &key
                && map.contains_key(name)
            {
                return Err(YamlError::at(mark, format!("key `{name}` appears twice in one mapping")));
            }
            *slot = Some(key);
        }
        Ok(())
    }

    fn open(&mut self, open: Open, anchor: usize, mark: Marker) -> Result<(), YamlError> {
        if self.wants_key() {
            return Err(YamlError::at(mark, "a mapping key must be a plain value, not a mapping or sequence"));
        }
        if self.stack.len() >= self.limits.max_depth {
            let what = format!("nested more than {} levels deep", self.limits.max_depth);
            return Err(YamlError::over_limit(mark, what));
        }
        let (values_before, bytes_before) = (self.values, self.text_bytes);
        self.count(1, 0, mark)?;
        self.stack.push(Frame { open, anchor, start: mark, values_before, bytes_before });
        Ok(())
    }

    fn close(&mut self, mark: Marker) -> Result<(), YamlError> {
        let Some(frame) = self.stack.pop() else { return Ok(()) };
        let value = match frame.open {
            Open::Sequence(items) => Value::Array(items),
            Open::Mapping { mut map, merges, .. } => {
                for merged in merges {
                    for (k, v) in merged {
                        map.entry(k).or_insert(v);
                    }
                }
                Value::Object(map)
            }
        };
        if frame.anchor != 0 {
            let cost = (self.values - frame.values_before, self.text_bytes - frame.bytes_before);
            self.anchors.insert(frame.anchor, (value.clone(), cost.0, cost.1));
        }
        self.value(value, mark)
    }

    /// A complete value: an item of the open sequence, the value of the open mapping's key, or the document.
    fn value(&mut self, value: Value, mark: Marker) -> Result<(), YamlError> {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(value);
            return Ok(());
        };
        match &mut frame.open {
            Open::Sequence(items) => items.push(value),
            Open::Mapping { map, key, merges } => match key.take() {
                Some(Key::Named(name)) => {
                    map.insert(name, value);
                }
                Some(Key::Merge) => merge_sources(value, merges).map_err(|m| YamlError::at(mark, m))?,
                // A key is always read before its value; nothing else reaches here.
                None => {}
            },
        }
        Ok(())
    }
}

/// `<<: *base` or `<<: [*a, *b]`: the mappings to merge; anything else is an error.
fn merge_sources(value: Value, merges: &mut Vec<Map<String, Value>>) -> Result<(), String> {
    let not_a_mapping = || "`<<` (merge) takes a mapping or a list of mappings".to_string();
    match value {
        Value::Object(map) => merges.push(map),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map) => merges.push(map),
                    _ => return Err(not_a_mapping()),
                }
            }
        }
        _ => return Err(not_a_mapping()),
    }
    Ok(())
}

const CORE: &str = "tag:yaml.org,2002:";

/// The value of a scalar, typed by its style, its tag, and for plain scalars its text.
fn typed(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let forced = tag.filter(|t| t.handle == CORE).map(|t| t.suffix.as_str());
    match forced {
        Some("str") => return Ok(Value::String(text)),
        Some(want @ ("int" | "float" | "bool" | "null")) => {
            let v = plain(&text).unwrap_or_else(|| Value::String(String::new()));
            let ok = match want {
                "int" => v.is_i64() || v.is_u64(),
                "float" => v.is_number(),
                "bool" => v.is_boolean(),
                _ => v.is_null(),
            };
            return if ok { Ok(v) } else { Err(format!("`{text}` is not a valid !!{want}")) };
        }
        _ => {}
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text));
    }
    if matches!(text.as_str(), ".inf" | ".Inf" | ".INF" | "+.inf" | "-.inf" | ".nan" | ".NaN" | ".NAN") {
        return Err(format!("`{text}` is not a number JSON can carry; quote it if it is text"));
    }
    Ok(plain(&text).unwrap_or(Value::String(text)))
}

/// A plain scalar that is not a string: null, a boolean or a number.
fn plain(text: &str) -> Option<Value> {
    Some(match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => Value::Bool(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => Value::Bool(false),
        _ => return number(text).map(Value::Number),
    })
}

fn number(text: &str) -> Option<Number> {
    let first = *text.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return None;
    }
    let cleaned;
    let text = if text.contains('_') {
        cleaned = text.replace('_', "");
        cleaned.as_str()
    } else {
        text
    };
    let (negative, digits) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let radix = |prefix: &str, radix: u32| {
        digits.strip_prefix(prefix).filter(|d| !d.is_empty()).and_then(|d| u64::from_str_radix(d, radix).ok())
    };
    let magnitude = radix("0x", 16)
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
        .or_else(|| {
            (digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| u64::from_str_radix(&digits[1..], 8).ok())
                .flatten()
        })
        .or_else(|| {
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().ok())
                .flatten()
        });
    if let Some(m) = magnitude {
        return if negative {
            // -0 is 0; below i64::MIN it is a float, as in go-yaml.
            i64::try_from(m).map(|m| Number::from(-m)).ok().or_else(|| Number::from_f64(-(m as f64)))
        } else {
            Some(Number::from(m))
        };
    }
    is_decimal_float(digits).then(|| text.parse::<f64>().ok()).flatten().and_then(Number::from_f64)
}

/// `1.5`, `.5`, `1.`, `1e3`, `2.5E-3`: YAML's decimal float syntax (after the sign).
fn is_decimal_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// `value` as block-style YAML, the way `kubectl get -o yaml` prints objects. Strings that [`parse`] would read as
/// anything but that same string are double-quoted, so `parse(&to_string(v)) == v` for every `v`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => block_mapping(map, 0, false, &mut out),
        Value::Array(items) if !items.is_empty() => block_sequence(items, 0, false, &mut out),
        v => {
            inline(v, &mut out);
            out.push('\n');
        }
    }
    out
}

/// A mapping's entries at `indent`; with `inline_first`, the first entry continues the current line (after `- `).
fn block_mapping(map: &Map<String, Value>, indent: usize, mut inline_first: bool, out: &mut String) {
    for (key, value) in map {
        if !inline_first {
            out.extend(std::iter::repeat_n(' ', indent));
        }
        inline_first = false;
        string(key, out);
        out.push(':');
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                block_mapping(m, indent + 2, false, out);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                block_sequence(items, indent, false, out);
            }
            v => {
                out.push(' ');
                inline(v, out);
                out.push('\n');
            }
        }
    }
}

fn block_sequence(items: &[Value], indent: usize, mut inline_first: bool, out: &mut String) {
    for item in items {
        if !inline_first {
            out.extend(std::iter::repeat_n(' ', indent));
        }
        inline_first = false;
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => block_mapping(m, indent + 2, true, out),
            Value::Array(inner) if !inner.is_empty() => block_sequence(inner, indent + 2, true, out),
            v => {
                inline(v, out);
                out.push('\n');
            }
        }
    }
}

/// A scalar, or an empty mapping or sequence.
fn inline(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => string(s, out),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

/// Plain when that reads back as the same string, else double-quoted with YAML's escapes.
fn string(s: &str, out: &mut String) {
    let safe_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-' | '|' | '+' | '=' | ' ');
    let plain_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '/' || c == '_')
        && !s.ends_with(' ')
        && s.chars().all(safe_char)
        && plain(s).is_none();
    if plain_ok {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c => out.push_str(&format!("\\u{:04X}", u32::from(c))),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn json(text: &str) -> String {
        match parse(text, Limits::default()) {
            Ok(v) => v.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn scalars_are_typed_as_kubernetes_reads_them() {
        let cases = [
            ("a: 80", r#"{"a":80}"#),
            ("a: '80'", r#"{"a":"80"}"#),
            ("a: \"true\"", r#"{"a":"true"}"#),
            ("a: yes", r#"{"a":true}"#),
            ("a: Off", r#"{"a":false}"#),
            ("a: y", r#"{"a":true}"#),
            ("a: ~", r#"{"a":null}"#),
            ("a:", r#"{"a":null}"#),
            ("a: 0x1F", r#"{"a":31}"#),
            ("a: 0o17", r#"{"a":15}"#),
            ("a: 0777", r#"{"a":511}"#),
            ("a: 0b101", r#"{"a":5}"#),
            ("a: 1_000", r#"{"a":1000}"#),
            ("a: -0", r#"{"a":0}"#),
            ("a: +12", r#"{"a":12}"#),
            ("a: -12", r#"{"a":-12}"#),
            ("a: 12345678901234567890", r#"{"a":12345678901234567890}"#),
            ("a: 1.5", r#"{"a":1.5}"#),
            ("a: .5", r#"{"a":0.5}"#),
            ("a: 1e3", r#"{"a":1000.0}"#),
            ("a: 10.1.2.3", r#"{"a":"10.1.2.3"}"#),
            ("a: 1.2.3", r#"{"a":"1.2.3"}"#),
            ("a: 2001-12-14", r#"{"a":"2001-12-14"}"#),
            ("a: inf", r#"{"a":"inf"}"#),
            ("a: nan", r#"{"a":"nan"}"#),
            ("a: 0x", r#"{"a":"0x"}"#),
            ("a: 1e", r#"{"a":"1e"}"#),
            ("a: 08", r#"{"a":8}"#),
            ("a: !!str 80", r#"{"a":"80"}"#),
            ("a: !!int '80'", r#"{"a":80}"#),
            ("a: !custom 80", r#"{"a":80}"#),
            ("a: |\n  x\n  y\n", r#"{"a":"x\ny\n"}"#),
            ("80: x", r#"{"80":"x"}"#),
            ("[1, {x: y}]", r#"[1,{"x":true}]"#),
            ("", "null"),
            ("---\n", "null"),
            ("# only a comment\n", "null"),
        ];
        for (text, want) in cases {
            assert_eq!(json(text), want, "{text:?}");
        }
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        assert_eq!(json("a: &x {b: 1}\nc: *x"), r#"{"a":{"b":1},"c":{"b":1}}"#);
        assert_eq!(json("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  c: 3"), r#"{"a":{"b":1,"c":2},"d":{"b":1,"c":3}}"#);
        // Own keys win whatever their position; among merged mappings, the earlier one wins.
        assert_eq!(
            json("a: &x {k: 1}\nb: &y {k: 2, l: 2}\nc: {k: 0, <<: [*x, *y]}"),
            json("{a: {k: 1}, b: {k: 2, l: 2}, c: {k: 0, l: 2}}")
        );
        assert_eq!(json("a: &x {k: 1}\nb: &y {k: 2}\nc: {<<: [*x, *y]}"), json("{a: {k: 1}, b: {k: 2}, c: {k: 1}}"));
        assert_eq!(json("a: &k name\n*k : 1"), r#"{"a":"name","name":1}"#);
        assert_eq!(json("'<<': 1"), r#"{"<<":1}"#);
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases = [
            ("a: 1\nb: 2\na: 3\n", "key `a` appears twice in one mapping at line 3, column 1"),
            ("a:\n  b: 1\n    c: 2\n", "mapping values are not allowed in this context at line 3, column 6"),
            ("a: *nope\n", "while parsing node, found unknown anchor at line 1, column 4"),
            ("? [a]\n: 1\n", "a mapping key must be a plain value, not a mapping or sequence at line 1, column 3"),
            ("a: 1\n<<: 2\n", "`<<` (merge) takes a mapping or a list of mappings at line 2, column 5"),
            ("a: .inf\n", "`.inf` is not a number JSON can carry; quote it if it is text at line 1, column 4"),
            (
                "a: [1, 2\nb: 3\n",
                "illegal placement of ':' indicator at line 2, column 2 (inside the `[` opened at line 1, column 4: is it closed?)",
            ),
            ("a: [1, 2\n", "unclosed bracket `[`: the document ends before it is closed at line 1, column 4"),
            ("a: {b: [1]\n", "unclosed bracket `{`: the document ends before it is closed at line 1, column 4"),
            ("a: {b: c: d}\n", "while parsing a flow mapping, did not find expected ',' or '}' at line 1, column 9"),
            (
                "a: 'x\n",
                "unclosed quote: the quoted string that starts here runs to the end of the document at line 1, column 4",
            ),
            ("a: 1\nb: x\0y\n", "the control character U+0000 is not allowed in YAML at line 2, column 5"),
            ("a: 1\u{7}\n", "the control character U+0007 is not allowed in YAML at line 1, column 5"),
            ("a: !!int x\n", "`x` is not a valid !!int at line 1, column 10"),
            ("a: 1\n---\nb: 2\n", "a second document in one; separate documents with `---` at line 2, column 1"),
        ];
        for (text, want) in cases {
            assert_eq!(json(text), format!("error: {want}"), "{text:?}");
        }
    }

    #[test]
    fn what_to_string_prints_reads_back() {
        let v: Value = serde_json::from_str(
            r##"{"a": {"b": [1, "two", {"c": null, "d": [true, []], "e": {}}], "f": "yes"},
               "g": [[1, 2], [{"h": "0777"}]], "i": "", "j": " x", "k": "a: b", "l": "*.example.com",
               "m": "outbound|80||web.shop.svc.cluster.local", "n": "10.1.2.3", "o": "1_000", "p": 1.5,
               "q": "line\nbreak", "r": -3, "s": "~", "t": "#x", "u": "-"}"##,
        )
        .unwrap();
        let text = to_string(&v);
        assert_eq!(parse(&text, Limits::default()), Ok(v), "{text}");
        assert!(text.starts_with("a:\n  b:\n  - 1\n  - two\n  - c: null\n    d:\n    - true\n    - []\n"), "{text}");
        for scalar in [Value::Null, Value::from(1), Value::from("x"), serde_json::json!([]), serde_json::json!({})] {
            assert_eq!(parse(&to_string(&scalar), Limits::default()), Ok(scalar));
        }
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = prop_oneof![
            "[ -~]{0,12}",
            "(yes|no|on|off|y|n|true|null|~|0x1F|0777|1_000|1e3|.5|-|- x|a: b|#c|<<|&a|\\*a|!x|%|@|`)",
            any::<String>(),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            text.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((text.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn to_string_then_parse_is_the_identity(v in any_value()) {
            let text = to_string(&v);
            proptest::prop_assert_eq!(parse(&text, Limits::default()), Ok(v), "{}", text);
        }
    }

    #[test]
    fn limits_stop_bombs_and_nesting() {
        let limits = Limits { max_values: 100, max_text_bytes: 1000, max_depth: 4 };
        let e = parse("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]", limits)
            .unwrap_err();
        assert!(e.over_limit && e.message.contains("more than 100 values"), "{e}");
        let e = parse(&format!("a: &a {}\nb: [*a, *a]", "x".repeat(400)), limits).unwrap_err();
        assert!(e.over_limit && e.message.contains("of text"), "{e}");
        let e = parse("a: [[[[1]]]]", limits).unwrap_err();
        // The mapping is the first level; the fourth `[` (column 7) opens the fifth.
        assert_eq!(
            e.to_string(),
            "document too large to read safely (nested more than 4 levels deep) at line 1, column 7"
        );
        assert!(parse("a: [[[1]]]", limits).is_ok());
    }
}
