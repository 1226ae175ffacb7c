//! Where a field path is in a YAML document: line and column for errors, so a person finds the
//! mistake in a long catalog without counting list items.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One step of a field path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    /// A key of a map (struct fields included).
    Key(String),
    /// An index into a list.
    Index(usize),
}

/// A field path as errors write it: `proxies.web.listeners[0].port`.
pub(crate) fn display(steps: &[Step]) -> String {
    let mut out = String::new();
    for s in steps {
        match s {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A YAML document's shape with the position of every key and item.
#[derive(Debug)]
pub(crate) enum Tree {
    /// A mapping: each key (where it is) and its value.
    Map(Vec<(Spanned<Key>, Spanned<Tree>)>),
    /// A sequence.
    Seq(Vec<Spanned<Tree>>),
    /// A scalar or null.
    Leaf,
}

/// A mapping key of any scalar kind, as text.
#[derive(Debug)]
pub(crate) struct Key(String);

impl Tree {
    /// Reads the positions of a YAML document; `None` when it is not YAML the catalog reads.
    pub(crate) fn of(text: &str) -> Option<Spanned<Tree>> {
        serde_saphyr::from_str(text).ok()
    }

    /// `(line, column)` of the deepest part of `path` the document has: the key of the last
    /// field found (an unknown field, a bad value), or the item of a list.
    pub(crate) fn position(root: &Spanned<Tree>, path: &[Step]) -> Option<(u64, u64)> {
        let mut at = root;
        let mut found = None;
        for step in path {
            let next = match (&at.value, step) {
                (Tree::Map(entries), Step::Key(k)) => entries
                    .iter()
                    .find(|(key, _)| key.value.0 == *k)
                    .map(|(key, value)| (&key.referenced, value)),
                (Tree::Seq(items), Step::Index(i)) => {
                    items.get(*i).map(|item| (&item.referenced, item))
                }
                _ => None,
            };
            let Some((where_, value)) = next else { break };
            found = Some((where_.line(), where_.column()));
            at = value;
        }
        found.filter(|(line, _)| *line > 0)
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

macro_rules! leaf {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<E: de::Error>(self, _: $t) -> Result<Tree, E> {
            Ok(Tree::Leaf)
        }
    )*};
}

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    leaf!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128, visit_u128: u128,
          visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);

    fn visit_unit<E: de::Error>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_none<E: de::Error>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            entries.push((key, map.next_value::<Spanned<Tree>>()?));
        }
        Ok(Tree::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".into()))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

/// Splits an error's field path (`a.b[0].c`) into steps, for [`Tree::position`]. Keys that
/// contain dots are found when the document has them: the longest key present wins.
pub(crate) fn steps_in(root: &Spanned<Tree>, path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut at = Some(root);
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let Some((n, tail)) = after.split_once(']') else {
                break;
            };
            let Ok(i) = n.parse() else { break };
            steps.push(Step::Index(i));
            at = match at.map(|t| &t.value) {
                Some(Tree::Seq(items)) => items.get(i),
                _ => None,
            };
            rest = tail.strip_prefix('.').unwrap_or(tail);
            continue;
        }
        // The longest key of this map that the path starts with, else up to the next . or [.
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let known = match at.map(|t| &t.value) {
            Some(Tree::Map(entries)) => entries
                .iter()
                .map(|(k, v)| (k.value.0.as_str(), v))
                .filter(|(k, _)| {
                    rest.starts_with(k)
                        && matches!(rest.as_bytes().get(k.len()), None | Some(b'.' | b'['))
                })
                .max_by_key(|(k, _)| k.len()),
            _ => None,
        };
        let (key, next) = match known {
            Some((k, v)) => (k.to_string(), Some(v)),
            None => (rest[..end].to_string(), None),
        };
        rest = &rest[key.len()..];
        rest = rest.strip_prefix('.').unwrap_or(rest);
        steps.push(Step::Key(key));
        at = next;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
version: 1
proxies:
  connector.prism:
    listeners:
      - name: a
        port: 80
      - name: b
        protocl: http
upstreams:
  blue: { protocol: http1, port: 8080 }
ports: { 18332: bitcoind }
";

    fn at(path: &str) -> Option<(u64, u64)> {
        let tree = Tree::of(DOC).unwrap();
        Tree::position(&tree, &steps_in(&tree, path))
    }

    #[test]
    fn a_field_path_is_found_where_the_document_has_it() {
        assert_eq!(
            at("proxies.connector.prism.listeners[1].protocl"),
            Some((8, 9))
        );
        assert_eq!(at("proxies.connector.prism.listeners[0]"), Some((5, 9)));
        assert_eq!(at("upstreams.blue.port"), Some((10, 28)));
        assert_eq!(at("ports.18332"), Some((11, 10)));
        // A field the document lacks: where its parent is.
        assert_eq!(at("upstreams.blue.endpoints"), Some((10, 3)));
        assert_eq!(at(""), None);
    }

    #[test]
    fn paths_split_into_steps() {
        let tree = Tree::of(DOC).unwrap();
        assert_eq!(
            steps_in(&tree, "proxies.connector.prism.listeners[1].protocl"),
            [
                Step::Key("proxies".into()),
                Step::Key("connector.prism".into()),
                Step::Key("listeners".into()),
                Step::Index(1),
                Step::Key("protocl".into()),
            ]
        );
        assert_eq!(
            display(&steps_in(&tree, "a.b[2].c")),
            "a.b[2].c",
            "unknown to the document: split at dots"
        );
    }
}
