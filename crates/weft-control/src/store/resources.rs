//! What `weft apply` and `weft delete` write, decided the same way for both sources: a document
//! goes where its key (kind, namespace, name) is defined now — replaced inside that text, the
//! text's other documents untouched ([`super::edit`]) — or into a text of its own. Before
//! anything is written, the changed text is validated with every other text of the store by the
//! rule the store itself applies ([`documents::in_force`]), so a write never makes a document
//! fall back to its last good version; the errors are the ones the store would report.

use super::{edit, Applied, Core, StoreError, Write};
use crate::documents::{self, DocKey, Located};

/// A document's own text name: `<kind-lowercase>SEP<namespace>SEP<name>` (no namespace for a
/// cluster-scoped kind).
pub(super) fn text_name(key: &DocKey, sep: &str) -> String {
    let kind = key.kind.to_ascii_lowercase();
    if key.namespace.is_empty() {
        [kind.as_str(), &key.name].join(sep)
    } else {
        [kind.as_str(), &key.namespace, &key.name].join(sep)
    }
}

impl Core {
    /// The name of the text that defines `key` now (validly or not), else of the text its
    /// version in force came from.
    pub(super) fn holder(&self, key: &DocKey) -> Option<String> {
        self.texts
            .iter()
            .find(|(_, _, p)| {
                p.docs.iter().any(|d| d.key() == *key)
                    || p.bad.iter().any(|b| b.key.as_ref() == Some(key))
            })
            .map(|(name, _, _)| name.clone())
            .or_else(|| self.in_force.get(key).map(|d| d.file.clone()))
    }

    pub(super) fn is_in_force(&self, key: &DocKey) -> bool {
        self.in_force.contains_key(key)
    }

    /// What to write to apply `doc` (`text`: the document as written): `holder` is the text
    /// defining its key now (name, content); `new` the name and content (if it exists) of the
    /// text a document not defined anywhere goes to. `None`: nothing to write (unchanged).
    pub(super) fn plan_apply(
        &self,
        doc: &Located,
        text: &str,
        holder: Option<(String, String)>,
        new: (String, Option<String>),
    ) -> Result<(Option<Write>, Applied), StoreError> {
        let key = doc.key();
        let pending = self
            .texts
            .iter()
            .any(|(_, _, p)| p.bad.iter().any(|b| b.key.as_ref() == Some(&key)));
        let current = self.in_force.get(&key);
        if !pending && current.is_some_and(|d| d.source == doc.source) {
            return Ok((None, Applied::Unchanged));
        }
        let applied = match current {
            Some(_) => Applied::Configured,
            None => Applied::Created,
        };
        let (name, changed) = match holder {
            Some((name, old)) => match edit::replace(&old, &key, text, &self.defaults) {
                Ok(changed) => (name, changed),
                Err(message) => return Err(StoreError::Uneditable { name, message }),
            },
            None => {
                let (name, old) = new;
                let changed = edit::append(old.as_deref().unwrap_or(""), text);
                (name, changed)
            }
        };
        self.check(&name, &changed, &key, Some(doc))?;
        let write = Write {
            name,
            text: Some(changed),
        };
        Ok((Some(write), applied))
    }

    /// What to write to delete `key` from `holder` (name, content): the text without it, or
    /// no text when nothing else is in it.
    pub(super) fn plan_delete(
        &self,
        key: &DocKey,
        (name, old): (String, String),
    ) -> Result<Write, StoreError> {
        let changed = match edit::remove(&old, key, &self.defaults) {
            Ok(changed) => changed,
            Err(message) => return Err(StoreError::Uneditable { name, message }),
        };
        self.check(&name, &changed, key, None)?;
        let (_, parsed) = self.parse(&name, &changed);
        let empty = parsed.docs.is_empty() && parsed.bad.is_empty();
        Ok(Write {
            name,
            text: (!empty).then_some(changed),
        })
    }

    /// Validates the store with text `name` changed to `text`: `want` must then be in force
    /// as `key` without an error of its own (or, with `None`, `key` must be gone).
    fn check(
        &self,
        name: &str,
        text: &str,
        key: &DocKey,
        want: Option<&Located>,
    ) -> Result<(), StoreError> {
        let (_, parsed) = self.parse(name, text);
        let mut texts: Vec<(&str, &documents::ParsedFile)> = self
            .texts
            .iter()
            .filter(|(n, _, _)| n != name)
            .map(|(n, _, p)| (n.as_str(), &**p))
            .collect();
        texts.push((name, &parsed));
        texts.sort_by(|a, b| a.0.cmp(b.0));
        let (in_force, errors) = documents::in_force(&texts, &self.in_force);
        let Some(want) = want else {
            if in_force.contains_key(key) {
                return Err(StoreError::Uneditable {
                    name: name.to_string(),
                    message: format!("{key} would stay in force (another document defines it)"),
                });
            }
            return Ok(());
        };
        let index = parsed
            .docs
            .iter()
            .find(|d| d.key() == *key)
            .map(|d| d.index)
            .or_else(|| {
                let bad = parsed.bad.iter().find(|b| b.key.as_ref() == Some(key));
                bad.map(|b| b.index)
            });
        let place = index.map(|i| format!("{name}: document {i}:"));
        let own: Vec<String> = errors
            .into_iter()
            .filter(|e| place.as_ref().is_some_and(|p| e.starts_with(p.as_str())))
            .collect();
        if !own.is_empty() {
            return Err(StoreError::Rejected(own));
        }
        if in_force.get(key).map(|d| &d.resource) != Some(&want.resource) {
            return Err(StoreError::Rejected(vec![format!(
                "{name}: {key} would not be in force as applied"
            )]));
        }
        Ok(())
    }

    /// After the write was loaded: `want` is in force as `key` (or, with `None`, `key` is gone).
    pub(super) fn confirm(&self, key: &DocKey, want: Option<&Located>) -> Result<(), StoreError> {
        let now = self.in_force.get(key).map(|d| &d.resource);
        if now == want.map(|w| &w.resource) {
            return Ok(());
        }
        let errors: Vec<String> = self.status_tx.borrow().errors.clone();
        Err(StoreError::Rejected(if errors.is_empty() {
            vec![format!("{key}: the store changed meanwhile; try again")]
        } else {
            errors
        }))
    }
}
