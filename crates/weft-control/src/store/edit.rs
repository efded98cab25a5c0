//! Editing one document of a multi-document YAML text (a store file or key) in place: the
//! documents around it keep their bytes, comments and formatting, as a user who wrote the file
//! by hand expects after `weft apply` or `weft delete` touched one of its documents.
//!
//! A document is the text between two `---` marker lines (or the text's start or end). Each
//! piece is identified by parsing it on its own, so a piece is only ever edited when it is, by
//! itself, the document named by the key; the caller re-validates the whole result.

use crate::documents::{parse_yaml_documents, DocKey};
use crate::resource::Defaults;
use std::ops::Range;

/// The byte ranges of the pieces of `text` between `---` marker lines (markers excluded). The
/// text before the first marker is a piece too, possibly empty.
pub fn split(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut pos) = (0, 0);
    for line in text.split_inclusive('\n') {
        if is_marker(line) {
            out.push(start..pos);
            start = pos + line.len();
        }
        pos += line.len();
    }
    out.push(start..text.len());
    out
}

/// `---` alone on its line, or followed by a comment.
fn is_marker(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']).trim_end();
    line == "---" || line.starts_with("--- #")
}

/// The identity of a piece that holds exactly one document (valid or not), else `None`.
pub fn identify(piece: &str, defaults: &Defaults) -> Option<DocKey> {
    let parsed = parse_yaml_documents("piece", piece, defaults);
    match (parsed.docs.as_slice(), parsed.bad.as_slice()) {
        ([doc], []) => Some(doc.key()),
        ([], [bad]) => bad.key.clone(),
        _ => None,
    }
}

/// The one piece of `text` that is the document `key`.
fn find(
    text: &str,
    key: &DocKey,
    defaults: &Defaults,
) -> Result<(usize, Vec<Range<usize>>), String> {
    let pieces = split(text);
    let found: Vec<usize> = (0..pieces.len())
        .filter(|i| identify(&text[pieces[*i].clone()], defaults).as_ref() == Some(key))
        .collect();
    match found.as_slice() {
        [i] => Ok((*i, pieces)),
        [] => Err(format!(
            "{key} is not a document of its own between `---` lines there (fix the text by hand)"
        )),
        _ => Err(format!("{key} is defined more than once there")),
    }
}

/// The text of `key` inside `text`, if one piece is that document.
pub fn piece_of<'t>(text: &'t str, key: &DocKey, defaults: &Defaults) -> Option<&'t str> {
    find(text, key, defaults)
        .ok()
        .map(|(i, pieces)| &text[pieces[i].clone()])
}

/// `text` with the document `key` replaced by `doc`; every other byte stays.
pub fn replace(text: &str, key: &DocKey, doc: &str, defaults: &Defaults) -> Result<String, String> {
    let (i, pieces) = find(text, key, defaults)?;
    let r = &pieces[i];
    Ok(format!(
        "{}{}{}",
        &text[..r.start],
        with_newline(doc),
        &text[r.end..]
    ))
}

/// `text` without the document `key` (and without the marker line that separated it).
pub fn remove(text: &str, key: &DocKey, defaults: &Defaults) -> Result<String, String> {
    let (i, pieces) = find(text, key, defaults)?;
    let cut = match (i, pieces.get(i + 1)) {
        // From the marker line before it: that marker ends where the previous piece ends.
        (i, _) if i > 0 => pieces[i - 1].end..pieces[i].end,
        // The first piece: up to the next piece, taking the marker after it.
        (_, Some(next)) => pieces[i].start..next.start,
        (_, None) => pieces[i].clone(),
    };
    Ok(format!("{}{}", &text[..cut.start], &text[cut.end..]))
}

/// `text` with `doc` added as its last document.
pub fn append(text: &str, doc: &str) -> String {
    if text.trim().is_empty() {
        return with_newline(doc).to_string();
    }
    format!("{}---\n{}", with_newline(text), with_newline(doc))
}

fn with_newline(s: &str) -> std::borrow::Cow<'_, str> {
    if s.ends_with('\n') || s.is_empty() {
        s.into()
    } else {
        format!("{s}\n").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &'static str, name: &str) -> DocKey {
        DocKey {
            kind,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn svc(name: &str, port: u32) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
             spec: {{ports: [{{port: {port}}}]}}\n"
        )
    }

    const HEAD: &str = "# shared services, by hand\n";

    fn file() -> String {
        format!(
            "{HEAD}{}---   \n{}--- # the last one\n# about c\n{}",
            svc("a", 80),
            svc("b", 81),
            svc("c", 82)
        )
    }

    #[test]
    fn replacing_one_document_keeps_every_other_byte() {
        let d = Defaults::default();
        let out = replace(&file(), &key("Service", "b"), &svc("b", 9090), &d).unwrap();
        let want = format!(
            "{HEAD}{}---   \n{}--- # the last one\n# about c\n{}",
            svc("a", 80),
            svc("b", 9090),
            svc("c", 82)
        );
        assert_eq!(out, want);
        // The first piece holds the leading comment: it goes with the document it precedes.
        let out = replace(&file(), &key("Service", "a"), &svc("a", 1), &d).unwrap();
        assert!(out.ends_with(&format!(
            "{}--- # the last one\n# about c\n{}",
            svc("b", 81),
            svc("c", 82)
        )));
        assert!(out.starts_with(&svc("a", 1)));
    }

    #[test]
    fn removing_takes_the_marker_with_it() {
        let d = Defaults::default();
        let out = remove(&file(), &key("Service", "b"), &d).unwrap();
        assert_eq!(
            out,
            format!(
                "{HEAD}{}--- # the last one\n# about c\n{}",
                svc("a", 80),
                svc("c", 82)
            )
        );
        let out = remove(&file(), &key("Service", "a"), &d).unwrap();
        assert_eq!(
            out,
            format!(
                "{}--- # the last one\n# about c\n{}",
                svc("b", 81),
                svc("c", 82)
            )
        );
        let out = remove(&svc("a", 80), &key("Service", "a"), &d).unwrap();
        assert_eq!(out, "");
    }

    #[test]
    fn a_document_not_alone_in_its_piece_is_not_edited() {
        let d = Defaults::default();
        let err = replace(&file(), &key("Service", "x"), &svc("x", 1), &d).unwrap_err();
        assert!(err.contains("Service default/x is not a document"), "{err}");
        let twice = format!("{}---\n{}", svc("a", 80), svc("a", 81));
        let err = remove(&twice, &key("Service", "a"), &d).unwrap_err();
        assert!(err.contains("more than once"), "{err}");
        // An invalid version still has its identity, and can be replaced by a valid one.
        let bad = format!("{}---\n{}", svc("a", 80), svc("b", 70000));
        let out = replace(&bad, &key("Service", "b"), &svc("b", 81), &d).unwrap();
        assert_eq!(out, format!("{}---\n{}", svc("a", 80), svc("b", 81)));
    }

    #[test]
    fn appending_separates_with_a_marker() {
        assert_eq!(append("a: 1", "b: 2"), "a: 1\n---\nb: 2\n");
        assert_eq!(append("\n", "b: 2\n"), "b: 2\n");
    }
}
