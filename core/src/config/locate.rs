//! Finds where a node of a YAML document sits (line and column), by its path as serde
//! reports it (`sinks[0].format`). serde_yaml loses positions inside tagged enums, so
//! the loader asks here instead.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Position of every node and every mapping key, by path.
#[derive(Debug, Default)]
pub struct Locations {
    /// `path` → (line, column) of the node's value, 1-based.
    values: HashMap<String, (usize, usize)>,
    /// `path` → (line, column) of the key that introduces it.
    keys: HashMap<String, (usize, usize)>,
    /// Every scalar, in document order: (path, text, position).
    scalars: Vec<(String, String, (usize, usize))>,
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<(String, (usize, usize))>,
        seen_key: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Builder {
    locations: Locations,
    stack: Vec<Frame>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// The path of the node that starts now, and whether it is a mapping key.
    fn next_path(&mut self) -> (String, bool) {
        match self.stack.last_mut() {
            None => (String::new(), false),
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                (format!("{path}[{}]", *next - 1), false)
            }
            Some(Frame::Map {
                path, pending_key, ..
            }) => match pending_key.take() {
                Some((key, _)) => (join(path, &key), false),
                None => (path.clone(), true),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(text, ..) => {
                let (path, is_key) = self.next_path();
                if is_key {
                    let key_path = join(&path, &text);
                    self.locations.keys.insert(key_path, pos);
                    if let Some(Frame::Map {
                        pending_key,
                        seen_key,
                        ..
                    }) = self.stack.last_mut()
                    {
                        // A mapping is best shown at its first key: the parser's mark
                        // for a block mapping's start is not where a reader looks.
                        if !std::mem::replace(seen_key, true) {
                            self.locations.values.insert(path.clone(), pos);
                        }
                        *pending_key = Some((text, pos));
                    }
                } else {
                    self.locations.values.insert(path.clone(), pos);
                    self.locations.scalars.push((path, text, pos));
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let (path, _) = self.next_path();
                self.locations.values.insert(path.clone(), pos);
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        path,
                        pending_key: None,
                        seen_key: false,
                    }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Locations {
    /// Indexes `text`; a document that does not parse yields no locations.
    pub fn of(text: &str) -> Locations {
        let mut builder = Builder {
            locations: Locations::default(),
            stack: Vec::new(),
        };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Locations::default();
        }
        builder.locations
    }

    /// Best position for an error at `path` whose message is `message`: the offending
    /// key of an unknown field, the offending scalar of a bad value, else the node.
    pub fn find(&self, path: &str, message: &str) -> Option<(usize, usize)> {
        self.find_node(path, message).map(|(_, pos)| pos)
    }

    /// Like [`find`](Self::find), also returning the path of the node found, which can be
    /// deeper than `path` (serde cannot see inside tagged enums).
    pub fn find_node(&self, path: &str, message: &str) -> Option<(String, (usize, usize))> {
        let path = if path == "." { "" } else { path };
        if let Some(field) = between(message, "unknown field `", "`") {
            let under =
                |p: &&String| p.as_str() == join(path, field) || p.ends_with(&format!(".{field}"));
            if let Some(pos) = self.keys.get(&join(path, field)) {
                return Some((path.to_owned(), *pos));
            }
            if let Some((p, pos)) = self
                .keys
                .iter()
                .filter(|(p, _)| p.starts_with(path))
                .find(|(p, _)| under(p))
            {
                let parent = p.rsplit_once('.').map_or("", |(parent, _)| parent);
                return Some((parent.to_owned(), *pos));
            }
        }
        let bad_value = between(message, "unknown variant `", "`")
            .or_else(|| between(message, "\"", "\""))
            .or_else(|| between(message, "`", "`"));
        if let Some(value) = bad_value {
            let hit = self
                .scalars
                .iter()
                .find(|(p, text, _)| p.starts_with(path) && text == value);
            if let Some((p, _, pos)) = hit {
                return Some((p.clone(), *pos));
            }
        }
        let mut at = path;
        loop {
            if let Some(pos) = self.keys.get(at).or_else(|| self.values.get(at)) {
                return Some((at.to_owned(), *pos));
            }
            at = &at[..at.rfind(['.', '['])?];
        }
    }
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "source:\n  type: binlog\n  follow: maybe\nsinks:\n  - type: file\n    path: x\n    extra: 1\n";

    #[test]
    fn finds_keys_values_and_offending_scalars() {
        let loc = Locations::of(DOC);
        assert_eq!(
            loc.find("sinks[0]", "unknown field `extra`, expected `path`"),
            Some((7, 5))
        );
        assert_eq!(
            loc.find(
                "source",
                "invalid type: string \"maybe\", expected a boolean"
            ),
            Some((3, 11))
        );
        assert_eq!(loc.find("sinks[0].path", "whatever"), Some((6, 5)));
        assert_eq!(loc.find("source.nothing", "missing field"), Some((1, 1)));
        assert_eq!(loc.find("sinks[0]", "missing field `format`"), Some((5, 5)));
    }
}
