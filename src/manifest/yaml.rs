//! YAML documents as trees in which every node remembers where it stands in the file.
//!
//! serde_yaml reports the position of the enclosing mapping rather than the field
//! that is wrong, so wharf parses the events itself (saphyr-parser) and keeps a
//! [`Mark`] on each node. [`super::de`] deserializes the spec types from this tree.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Documents nested deeper than this are refused: no manifest needs it, and it keeps
/// every walk over the tree (including drop) far from the stack limit.
const MAX_DEPTH: usize = 64;
/// What anchors and aliases may copy in one file (all its documents together): an
/// alias repeats its anchor's whole value, so a few bytes of aliases can stand for
/// gigabytes ("billion laughs"). Copies count by nodes and by scalar bytes; the
/// file's own text is bounded by the loader's size limit.
///
/// The byte budget is fixed rather than a multiple of the file's size, so the same
/// aliases are accepted or refused whatever else the file holds. 16 MiB is 16 times
/// the largest manifest file and far more than sharing blocks of settings between
/// services needs, while bounding what one file can make wharf hold in memory.
const MAX_COPIED_NODES: usize = 100_000;
const MAX_COPIED_BYTES: usize = 16 << 20;

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<&Span> for Mark {
    fn from(span: &Span) -> Self {
        Mark {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub mark: Mark,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

/// A scalar with its YAML 1.2 core-schema type already resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The text as written (after unquoting).
    pub text: String,
    pub resolved: Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64, or a float.
    Float(f64),
    String,
}

impl Node {
    /// Mark of the node at `path` below this one, or of the deepest node on the way
    /// there when the path does not exist (a missing field points at its parent).
    pub fn locate(&self, path: &[PathSegment]) -> Mark {
        let mut node = self;
        for segment in path {
            match node.child(segment) {
                Some(next) => node = next,
                None => break,
            }
        }
        node.mark
    }

    fn child(&self, segment: &PathSegment) -> Option<&Node> {
        match (&self.value, segment) {
            (Value::Mapping(entries), PathSegment::Key(key)) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key.as_str()))
                .map(|(_, v)| v),
            (Value::Sequence(items), PathSegment::Index(index)) => items.get(*index),
            _ => None,
        }
    }

    fn get_mut(&mut self, path: &[PathSegment]) -> Option<&mut Node> {
        let mut node = self;
        for segment in path {
            node = match (&mut node.value, segment) {
                (Value::Mapping(entries), PathSegment::Key(key)) => entries
                    .iter_mut()
                    .find(|(k, _)| k.as_str() == Some(key.as_str()))
                    .map(|(_, v)| v)?,
                (Value::Sequence(items), PathSegment::Index(index)) => items.get_mut(*index)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Sets the node at `path` to a string scalar, adding the entry when the last
    /// step is a missing mapping key. Returns whether the tree changed.
    pub fn set(&mut self, path: &[PathSegment], text: &str) -> bool {
        let scalar = |mark| Node {
            mark,
            value: Value::Scalar(Scalar {
                text: text.to_owned(),
                resolved: Resolved::String,
            }),
        };
        if let Some(node) = self.get_mut(path) {
            let changed = node.as_str() != Some(text);
            *node = scalar(node.mark);
            return changed;
        }
        let Some((PathSegment::Key(key), parent_path)) = path.split_last() else {
            return false;
        };
        let Some(parent) = self.get_mut(parent_path) else {
            return false;
        };
        let mark = parent.mark;
        let Value::Mapping(entries) = &mut parent.value else {
            return false;
        };
        let key_node = Node {
            mark,
            value: Value::Scalar(Scalar {
                text: key.clone(),
                resolved: Resolved::String,
            }),
        };
        entries.push((key_node, scalar(mark)));
        true
    }

    /// Removes the mapping entry at `path`, or the nearest mapping entry above it when
    /// the path ends in a list index. Returns the path of what was removed.
    pub fn remove(&mut self, path: &[PathSegment]) -> Option<Vec<PathSegment>> {
        let last_key = path
            .iter()
            .rposition(|segment| matches!(segment, PathSegment::Key(_)))?;
        let PathSegment::Key(key) = &path[last_key] else {
            return None;
        };
        let Value::Mapping(entries) = &mut self.get_mut(&path[..last_key])?.value else {
            return None;
        };
        let position = entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(key.as_str()))?;
        entries.remove(position);
        Some(path[..=last_key].to_vec())
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(scalar) => Some(&scalar.text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(
            &self.value,
            Value::Scalar(Scalar {
                resolved: Resolved::Null,
                ..
            })
        )
    }

    /// What a copy of this subtree costs, for the alias expansion bounds.
    fn footprint(&self) -> Footprint {
        let node = Footprint { nodes: 1, bytes: 0 };
        match &self.value {
            Value::Scalar(scalar) => Footprint {
                nodes: 1,
                bytes: scalar.text.len(),
            },
            Value::Sequence(items) => items
                .iter()
                .fold(node, |sum, item| sum.plus(item.footprint())),
            Value::Mapping(entries) => entries.iter().fold(node, |sum, (key, value)| {
                sum.plus(key.footprint()).plus(value.footprint())
            }),
        }
    }
}

/// Nodes and scalar bytes: the size of a subtree, or of all copies made so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Footprint {
    nodes: usize,
    bytes: usize,
}

impl Footprint {
    fn plus(self, other: Footprint) -> Footprint {
        Footprint {
            nodes: self.nodes.saturating_add(other.nodes),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// One step of a field path such as `volumes[2].target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// Renders a path the way users write it: `resources.memory`, `volumes[2].target`.
pub fn display_path(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            PathSegment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            PathSegment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// A YAML syntax error, or a document wharf refuses to expand.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub mark: Mark,
    pub message: String,
}

/// Parses every document of a YAML stream. Empty documents (nothing, or only comments)
/// are left out: they define nothing.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = TreeBuilder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|err| SyntaxError {
            mark: Mark {
                line: err.marker().line(),
                column: err.marker().col() + 1,
            },
            message: format!("YAML syntax error: {}", err.info()),
        })?;
        builder.push(event, &span)?;
    }
    Ok(builder
        .documents
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect())
}

enum Open {
    Sequence(Node),
    Mapping(Node, Option<Node>),
}

#[derive(Default)]
struct TreeBuilder {
    documents: Vec<Node>,
    open: Vec<(Open, usize)>,
    /// Anchored values of the current document, with what a copy of each costs.
    anchors: HashMap<usize, (Node, Footprint)>,
    /// Copies made for anchors and aliases in the whole stream: not reset per
    /// document, or many small documents would add up to the same bomb.
    copied: Footprint,
}

impl TreeBuilder {
    fn push(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxError> {
        let mark = Mark::from(span);
        match event {
            Event::DocumentStart(_) => self.anchors.clear(),
            Event::Scalar(text, style, anchor, tag) => {
                let resolved = resolve_scalar(&text, style, tag.as_deref(), mark)?;
                let node = Node {
                    mark,
                    value: Value::Scalar(Scalar {
                        text: text.into_owned(),
                        resolved,
                    }),
                };
                self.finish(node, anchor)?;
            }
            Event::SequenceStart(anchor, _) => self.open(
                Open::Sequence(Node {
                    mark,
                    value: Value::Sequence(Vec::new()),
                }),
                anchor,
            )?,
            Event::MappingStart(anchor, _) => self.open(
                Open::Mapping(
                    Node {
                        mark,
                        value: Value::Mapping(Vec::new()),
                    },
                    None,
                ),
                anchor,
            )?,
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((open, anchor)) = self.open.pop() {
                    let node = match open {
                        Open::Sequence(node) | Open::Mapping(node, _) => node,
                    };
                    self.finish(node, anchor)?;
                }
            }
            Event::Alias(anchor) => {
                let footprint = self
                    .anchors
                    .get(&anchor)
                    .map(|(_, footprint)| *footprint)
                    .ok_or(SyntaxError {
                        mark,
                        message: "alias refers to an unknown anchor".into(),
                    })?;
                // Counted before copying, so a refused copy is never made.
                self.count_copy(footprint, mark)?;
                let copy = self.anchors.get(&anchor).map(|(node, _)| Node {
                    mark,
                    ..node.clone()
                });
                if let Some(node) = copy {
                    self.attach(node);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn open(&mut self, open: Open, anchor: usize) -> Result<(), SyntaxError> {
        let mark = match &open {
            Open::Sequence(node) | Open::Mapping(node, _) => node.mark,
        };
        if self.open.len() >= MAX_DEPTH {
            return Err(SyntaxError {
                mark,
                message: format!("nested deeper than {MAX_DEPTH} levels"),
            });
        }
        self.open.push((open, anchor));
        Ok(())
    }

    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            // The anchor keeps a copy until the document ends: it counts too, or
            // anchors nested around expanded aliases would multiply them unbounded.
            let footprint = node.footprint();
            self.count_copy(footprint, node.mark)?;
            self.anchors.insert(anchor, (node.clone(), footprint));
        }
        self.attach(node);
        Ok(())
    }

    /// Adds a copy of `footprint` to the stream's total, refusing it (at `mark`) when
    /// that goes over either bound.
    fn count_copy(&mut self, footprint: Footprint, mark: Mark) -> Result<(), SyntaxError> {
        self.copied = self.copied.plus(footprint);
        let over = if self.copied.bytes > MAX_COPIED_BYTES {
            format!("{} MiB of text", MAX_COPIED_BYTES >> 20)
        } else if self.copied.nodes > MAX_COPIED_NODES {
            format!("{MAX_COPIED_NODES} nodes")
        } else {
            return Ok(());
        };
        Err(SyntaxError {
            mark,
            message: format!(
                "aliases in this file expand to more than {over} (each alias repeats its \
                 anchor's whole value; the limit guards against alias bombs): use fewer \
                 aliases or anchor smaller values"
            ),
        })
    }

    fn attach(&mut self, node: Node) {
        match self.open.last_mut() {
            None => self.documents.push(node),
            Some((Open::Sequence(seq), _)) => {
                if let Value::Sequence(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some((Open::Mapping(map, pending_key), _)) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if let Value::Mapping(entries) = &mut map.value {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

/// YAML 1.2 core schema: plain scalars may be null, booleans or numbers; quoted and
/// block scalars are always strings. `!!str` forces a string; other tags are refused.
fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&saphyr_parser::Tag>,
    mark: Mark,
) -> Result<Resolved, SyntaxError> {
    if let Some(tag) = tag {
        return match (tag.handle.as_str(), tag.suffix.as_str()) {
            ("tag:yaml.org,2002:", "str") | ("!!", "str") => Ok(Resolved::String),
            _ => Err(SyntaxError {
                mark,
                message: format!(
                    "YAML tag {}{} is not supported here; remove it",
                    tag.handle, tag.suffix
                ),
            }),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Resolved::String);
    }
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Resolved::Null,
        "true" | "True" | "TRUE" => Resolved::Bool(true),
        "false" | "False" | "FALSE" => Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Resolved::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Resolved::Float(f64::NAN),
        _ => resolve_number(text).unwrap_or(Resolved::String),
    })
}

fn resolve_number(text: &str) -> Option<Resolved> {
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(Resolved::Int);
    }
    if let Some(octal) = text.strip_prefix("0o") {
        return i64::from_str_radix(octal, 8).ok().map(Resolved::Int);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(match text.parse::<i64>() {
            Ok(int) => Resolved::Int(int),
            Err(_) => Resolved::Float(text.parse().ok()?),
        });
    }
    let looks_like_float = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_like_float {
        return text.parse::<f64>().ok().map(Resolved::Float);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        let mut docs = parse_documents(text).expect("valid YAML");
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    #[test]
    fn nodes_carry_line_and_column() {
        let root = doc("name: web\nresources:\n  memory: 12Q\n");
        let path = [
            PathSegment::Key("resources".into()),
            PathSegment::Key("memory".into()),
        ];
        assert_eq!(
            root.locate(&path),
            Mark {
                line: 3,
                column: 11
            }
        );
    }

    #[test]
    fn missing_paths_point_at_the_deepest_existing_node() {
        let root = doc("resources:\n  cpus: 1\n");
        let path = [
            PathSegment::Key("resources".into()),
            PathSegment::Key("memory".into()),
        ];
        assert_eq!(root.locate(&path), Mark { line: 2, column: 3 });
    }

    #[test]
    fn plain_scalars_resolve_by_the_core_schema() {
        let root = doc("[~, true, 12, -3, 0x1f, 1.5, '12', abc, 1e3]");
        let Value::Sequence(items) = root.value else {
            panic!("expected a sequence")
        };
        let resolved: Vec<Resolved> = items
            .iter()
            .map(|n| match &n.value {
                Value::Scalar(s) => s.resolved,
                _ => panic!("expected scalars"),
            })
            .collect();
        assert_eq!(
            resolved,
            [
                Resolved::Null,
                Resolved::Bool(true),
                Resolved::Int(12),
                Resolved::Int(-3),
                Resolved::Int(31),
                Resolved::Float(1.5),
                Resolved::String,
                Resolved::String,
                Resolved::Float(1000.0),
            ]
        );
    }

    #[test]
    fn empty_and_comment_only_documents_define_nothing() {
        assert!(parse_documents("").expect("empty is valid").is_empty());
        assert!(parse_documents("# only a comment\n---\n# another\n")
            .expect("comments are valid")
            .is_empty());
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..8 {
            let prev = (b'a' + level - 1) as char;
            let name = (b'a' + level) as char;
            bomb.push_str(&format!(
                "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let err = parse_documents(&bomb).expect_err("bomb must be refused");
        assert!(err.message.contains("aliases"), "{}", err.message);

        let deep = "[".repeat(200) + &"]".repeat(200);
        let err = parse_documents(&deep).expect_err("deep nesting must be refused");
        assert!(err.message.contains("nested deeper"), "{}", err.message);
    }

    #[test]
    fn aliases_are_refused_by_the_bytes_they_expand_to() {
        // Few nodes, many bytes: 20 aliases of a 1 MiB string.
        let big = "x".repeat(1 << 20);
        let text = format!("big: &big '{big}'\nlist:\n{}", "- *big\n".repeat(20));
        let err = parse_documents(&text).expect_err("expansion beyond 16 MiB");
        // The anchor's own copy and 15 aliases make 16 MiB; the 16th alias is refused.
        assert_eq!(
            err.mark,
            Mark {
                line: 18,
                column: 3
            }
        );
        assert!(
            err.message.contains("expand to more than 16 MiB of text"),
            "{}",
            err.message
        );

        // The budget is the file's, not each document's.
        let document = format!("a: &a '{big}'\nb: [*a, *a, *a, *a, *a]\n");
        let err = parse_documents(&[document.as_str(); 3].join("---\n"))
            .expect_err("three documents of 6 MiB");
        assert_eq!(err.mark.line, 8, "{err:?}");

        // Sharing settings the usual way is far below the limits.
        let shared = "x: &env {A: '1', B: '2'}\ny: *env\nz: *env\n";
        assert_eq!(parse_documents(shared).expect("valid").len(), 1);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse_documents("name: web\n  image: [x\n").expect_err("invalid YAML");
        assert!(err.mark.line >= 2, "{err:?}");
        assert!(err.message.starts_with("YAML syntax error"));
    }
}
