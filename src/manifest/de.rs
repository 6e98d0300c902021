//! A serde deserializer over [`yaml::Node`](super::yaml::Node) trees.
//!
//! Every error it returns carries the field path and the mark of the node that is
//! wrong. Unknown and duplicate fields do not stop deserialization: they are
//! collected, so a manifest with three typos reports three errors at once.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use super::yaml::{display_path, Mark, Node, PathSegment, Resolved, Scalar, Value};

/// One thing wrong with a document, at a field path and position.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: Vec<PathSegment>,
    pub mark: Mark,
    pub message: String,
}

/// The newtype name by which a value asks for scalars as written (`visit_str` with
/// the text, whatever YAML would resolve it to) and anything else as it is: an env
/// value that is text or `{secret: NAME}`, an octal file mode.
pub const AS_WRITTEN: &str = "$wharf::as_written";

/// Upper bound on deserialization attempts per document (see [`from_node`]).
const MAX_ATTEMPTS: usize = 32;

/// Deserializes `T` from a document and returns every problem found.
///
/// serde stops at the first error that is not an unknown or duplicate field. To
/// report the others too, the failing field is patched in a copy of the tree and
/// deserialization runs again: it is set to a stand-in (the first allowed value of
/// an enum, else an empty string; a missing field is added so), and if stand-ins
/// fail too it is removed. The value is returned when it could be built; it is only
/// the user's spec when there are no problems.
pub fn from_node<T: DeserializeOwned>(root: &Node) -> (Option<T>, Vec<Problem>) {
    let mut tree = root.clone();
    let mut problems: Vec<Problem> = Vec::new();
    let mut patched: Vec<Vec<PathSegment>> = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        let collected = RefCell::new(Vec::new());
        let deserializer = NodeDeserializer {
            node: &tree,
            path: Vec::new(),
            collected: &collected,
        };
        let result = T::deserialize(deserializer);
        for problem in collected.into_inner() {
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
        let (problem, stand_in) = match result {
            Ok(value) => {
                problems.sort_by_key(|p| p.mark);
                return (Some(value), problems);
            }
            Err(error) => error.into_problem(&[], tree.mark),
        };
        let path = problem.path.clone();
        let tries = patched.iter().filter(|p| **p == path).count();
        if tries == 0 {
            problems.push(problem);
        }
        let applied = match tries {
            0 => tree.set(&path, stand_in),
            1 if !stand_in.is_empty() => tree.set(&path, stand_in),
            1 | 2 => tree.remove(&path).is_some(),
            _ => false,
        };
        if !applied {
            break;
        }
        patched.push(path);
    }
    problems.sort_by_key(|p| p.mark);
    (None, problems)
}

#[derive(Debug)]
pub struct Error {
    message: String,
    /// Set for serde's "missing field" so the path can name the field itself.
    missing_field: Option<&'static str>,
    /// A value that would have been accepted, used to carry on after the error.
    stand_in: Option<&'static str>,
    /// Set by the innermost node that saw the error.
    at: Option<(Vec<PathSegment>, Mark)>,
}

impl Error {
    fn locate(mut self, path: &[PathSegment], mark: Mark) -> Self {
        if self.at.is_none() {
            let mut path = path.to_vec();
            path.extend(self.missing_field.map(|f| PathSegment::Key(f.to_owned())));
            self.at = Some((path, mark));
        }
        self
    }

    fn into_problem(self, path: &[PathSegment], mark: Mark) -> (Problem, &'static str) {
        let located = self.locate(path, mark);
        let (path, mark) = located.at.unwrap_or_default();
        let problem = Problem {
            path,
            mark,
            message: located.message,
        };
        (problem, located.stand_in.unwrap_or_default())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some((path, mark)) => write!(f, "{mark}: {}: {}", display_path(path), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            missing_field: None,
            stand_in: None,
            at: None,
        }
    }

    fn invalid_type(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "expected {}, found {}",
            plain_expected(expected),
            plain_unexpected(unexpected)
        ))
    }

    fn invalid_value(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "expected {}, found {}",
            plain_expected(expected),
            plain_unexpected(unexpected)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Error {
            stand_in: expected.first().copied(),
            ..Self::custom(format_args!(
                "\"{variant}\" is not one of: {}",
                expected.join(", ")
            ))
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Error {
            missing_field: Some(field),
            ..Self::custom("required field is missing")
        }
    }
}

/// serde names Rust types ("u32", "f64"); users read YAML.
fn plain_expected(expected: &dyn de::Expected) -> String {
    let text = expected.to_string();
    match text.as_str() {
        // A bound users can act on: "0 or more" says nothing to someone who wrote 70000.
        "u8" => "a whole number, 0 to 255".into(),
        "u16" => "a whole number, 0 to 65535".into(),
        "u32" | "u64" | "usize" => "a whole number, 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        _ => text,
    }
}

fn plain_unexpected(unexpected: de::Unexpected<'_>) -> String {
    match unexpected {
        de::Unexpected::Unit => "null (nothing)".into(),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Map => "a mapping".into(),
        de::Unexpected::Str(text) => format!("the string \"{text}\""),
        de::Unexpected::Signed(n) => n.to_string(),
        de::Unexpected::Unsigned(n) => n.to_string(),
        de::Unexpected::Float(n) => n.to_string(),
        de::Unexpected::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

struct NodeDeserializer<'a> {
    node: &'a Node,
    path: Vec<PathSegment>,
    collected: &'a RefCell<Vec<Problem>>,
}

impl<'a> NodeDeserializer<'a> {
    fn child(&self, node: &'a Node, segment: PathSegment) -> NodeDeserializer<'a> {
        let mut path = self.path.clone();
        path.push(segment);
        NodeDeserializer {
            node,
            path,
            collected: self.collected,
        }
    }

    /// Records a problem with the entry `key` of this mapping (or with the mapping
    /// itself when `key` is None) and carries on.
    fn report(&self, key: Option<&str>, mark: Mark, message: String) {
        let mut path = self.path.clone();
        path.extend(key.map(|key| PathSegment::Key(key.to_owned())));
        self.collected.borrow_mut().push(Problem {
            path,
            mark,
            message,
        });
    }

    /// The entries of a mapping, reporting (and skipping) duplicate keys and keys
    /// that are not in `known` fields.
    fn entries(&self, entries: &'a [(Node, Node)], known: Option<&[&str]>) -> Vec<Entry<'a>> {
        let mut kept: Vec<Entry<'a>> = Vec::with_capacity(entries.len());
        for (key_node, value) in entries {
            let key = match &key_node.value {
                Value::Scalar(Scalar { text, .. }) => text.as_str(),
                _ => {
                    self.report(None, key_node.mark, "keys must be plain strings".into());
                    continue;
                }
            };
            if let Some(first) = kept.iter().find(|entry| entry.key == key) {
                self.report(
                    Some(key),
                    key_node.mark,
                    format!(
                        "given twice (first at line {}); keep one",
                        first.key_mark.line
                    ),
                );
                continue;
            }
            if let Some(known) = known {
                if !known.contains(&key) {
                    self.report(Some(key), key_node.mark, unknown_field_message(key, known));
                    continue;
                }
            }
            kept.push(Entry {
                key,
                key_mark: key_node.mark,
                value,
            });
        }
        kept
    }

    fn visit_mapping<V: Visitor<'a>>(
        self,
        entries: &'a [(Node, Node)],
        known: Option<&[&str]>,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let access = MapAccess {
            entries: self.entries(entries, known).into_iter(),
            pending: None,
            parent: &self,
        };
        visitor
            .visit_map(access)
            .map_err(|e| e.locate(&self.path, self.node.mark))
    }
}

fn unknown_field_message(key: &str, known: &[&str]) -> String {
    let suggestion = known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default();
    format!(
        "unknown field{suggestion}; expected one of: {}",
        known.join(", ")
    )
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

struct Entry<'a> {
    key: &'a str,
    key_mark: Mark,
    value: &'a Node,
}

struct MapAccess<'a, 'p> {
    entries: std::vec::IntoIter<Entry<'a>>,
    pending: Option<Entry<'a>>,
    parent: &'p NodeDeserializer<'a>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        let key = seed
            .deserialize(entry.key.into_deserializer())
            .map_err(|e: Error| e.locate(&self.parent.path, entry.key_mark))?;
        self.pending = Some(entry);
        Ok(Some(key))
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let entry = self
            .pending
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("value requested before its key"))?;
        let child = self
            .parent
            .child(entry.value, PathSegment::Key(entry.key.to_owned()));
        let (path, mark) = (child.path.clone(), entry.value.mark);
        seed.deserialize(child).map_err(|e| e.locate(&path, mark))
    }
}

struct SeqAccess<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    parent: &'p NodeDeserializer<'a>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((index, node)) = self.items.next() else {
            return Ok(None);
        };
        let child = self.parent.child(node, PathSegment::Index(index));
        let path = child.path.clone();
        seed.deserialize(child)
            .map(Some)
            .map_err(|e| e.locate(&path, node.mark))
    }
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (path, mark) = (self.path.clone(), self.node.mark);
        let result = match &self.node.value {
            Value::Scalar(scalar) => match scalar.resolved {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => visitor.visit_i64(i),
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::String => visitor.visit_str(&scalar.text),
            },
            Value::Sequence(items) => {
                let access = SeqAccess {
                    items: items.iter().enumerate(),
                    parent: &self,
                };
                visitor.visit_seq(access)
            }
            Value::Mapping(entries) => return self.visit_mapping(entries, None, visitor),
        };
        result.map_err(|e| e.locate(&path, mark))
    }

    /// Strings are read leniently: `tag: 1.10` or `PORT: 8080` keep the text as written.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Scalar(scalar) if scalar.resolved != Resolved::Null => visitor
                .visit_str(&scalar.text)
                .map_err(|e: Error| e.locate(&self.path, self.node.mark)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Scalar(scalar) if name == AS_WRITTEN && scalar.resolved != Resolved::Null => {
                visitor
                    .visit_str(&scalar.text)
                    .map_err(|e: Error| e.locate(&self.path, self.node.mark))
            }
            _ if name == AS_WRITTEN => self.deserialize_any(visitor),
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Mapping(entries) => self.visit_mapping(entries, Some(fields), visitor),
            // Not deserialize_any: serde would accept a list as a struct's fields in order.
            Value::Sequence(_) => Err(de::Error::invalid_type(de::Unexpected::Seq, &visitor)),
            Value::Scalar(_) => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Scalar(scalar) if scalar.resolved != Resolved::Null => {
                let access: de::value::StrDeserializer<'_, Error> =
                    scalar.text.as_str().into_deserializer();
                visitor
                    .visit_enum(access)
                    .map_err(|e| e.locate(&self.path, self.node.mark))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::parse_documents;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        #[serde(default)]
        replicas: u32,
        #[serde(default)]
        limits: Option<Limits>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limits {
        pids: u32,
    }

    fn problems(text: &str) -> Vec<String> {
        let docs = parse_documents(text).expect("valid YAML");
        let (_, problems) = from_node::<Sample>(&docs[0]);
        problems
            .into_iter()
            .map(|p| format!("{}: {}: {}", p.mark, display_path(&p.path), p.message))
            .collect()
    }

    #[test]
    fn every_unknown_field_is_reported_with_a_suggestion() {
        assert_eq!(
            problems("name: a\nreplica: 2\nlimts: {pids: 1}\n"),
            [
                "2:1: replica: unknown field (did you mean `replicas`?); expected one of: name, replicas, limits",
                "3:1: limts: unknown field (did you mean `limits`?); expected one of: name, replicas, limits",
            ]
        );
    }

    #[test]
    fn type_errors_point_at_the_value_in_plain_words() {
        assert_eq!(
            problems("name: a\nlimits:\n  pids: -4\n"),
            ["3:9: limits.pids: expected a whole number, 0 or more, found -4"]
        );
    }

    #[test]
    fn errors_after_the_first_are_reported_too() {
        assert_eq!(
            problems("name: [a]\nreplicas: x\nlimits: {pids: -1}\nextra: 1\n"),
            [
                "1:7: name: expected a string, found a list",
                "2:11: replicas: expected a whole number, 0 or more, found the string \"x\"",
                "3:16: limits.pids: expected a whole number, 0 or more, found -1",
                "4:1: extra: unknown field; expected one of: name, replicas, limits",
            ]
        );
    }

    #[test]
    fn missing_and_duplicate_fields_are_located() {
        assert_eq!(
            problems("replicas: 1\nreplicas: 2\n"),
            [
                "1:1: name: required field is missing",
                "2:1: replicas: given twice (first at line 1); keep one",
            ]
        );
    }
}
