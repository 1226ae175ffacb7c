//! Problems that last: a poller that fails the same way every pass logs it when it starts, when
//! it changes and when it ends, not on every pass (a log line a second says nothing new and
//! buries what does).

use std::collections::BTreeMap;

/// What became of one problem since the previous pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A problem that was not there before.
    Started {
        /// What the problem is about (an object key, an operation).
        key: String,
        /// The problem in words.
        message: String,
    },
    /// The same subject, another problem.
    Changed {
        /// What the problem is about.
        key: String,
        /// The problem now.
        message: String,
    },
    /// A problem that is gone.
    Ended {
        /// What the problem was about.
        key: String,
        /// The problem it was.
        message: String,
    },
}

/// The problems of the last pass, by subject.
#[derive(Debug, Clone, Default)]
pub struct Problems {
    current: BTreeMap<String, String>,
}

impl Problems {
    /// Records the problems of a pass (subject → message; a subject that is absent has none)
    /// and returns what started, changed and ended since the previous one, by subject.
    pub fn update(&mut self, now: BTreeMap<String, String>) -> Vec<Change> {
        let mut changes = Vec::new();
        for (key, message) in &self.current {
            if !now.contains_key(key) {
                changes.push(Change::Ended {
                    key: key.clone(),
                    message: message.clone(),
                });
            }
        }
        for (key, message) in &now {
            match self.current.get(key) {
                None => changes.push(Change::Started {
                    key: key.clone(),
                    message: message.clone(),
                }),
                Some(before) if before != message => changes.push(Change::Changed {
                    key: key.clone(),
                    message: message.clone(),
                }),
                Some(_) => {}
            }
        }
        self.current = now;
        changes
    }

    /// Whether no problem is going on.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_problem_is_reported_when_it_starts_changes_and_ends_only() {
        let mut p = Problems::default();
        let started = p.update(pass(&[("a", "down")]));
        assert_eq!(
            started,
            [Change::Started {
                key: "a".into(),
                message: "down".into()
            }]
        );
        assert!(p.update(pass(&[("a", "down")])).is_empty(), "repeated");
        assert_eq!(
            p.update(pass(&[("a", "denied"), ("b", "x")])),
            [
                Change::Changed {
                    key: "a".into(),
                    message: "denied".into()
                },
                Change::Started {
                    key: "b".into(),
                    message: "x".into()
                }
            ]
        );
        assert_eq!(
            p.update(pass(&[("b", "x")])),
            [Change::Ended {
                key: "a".into(),
                message: "denied".into()
            }]
        );
        assert!(!p.is_empty());
        p.update(BTreeMap::new());
        assert!(p.is_empty());
    }
}
