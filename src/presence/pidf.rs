//! PIDF bodies (RFC 3863, `application/pidf+xml`): the document a NOTIFY
//! carries, written by hand with XML escaping, and the little a PUBLISH
//! body is read for — the first tuple's `basic` status and the first
//! `note` — by a bounded scan that takes element names with or without a
//! namespace prefix. Anything else in a published document is ignored.

/// The content type of a PIDF document.
pub const CONTENT_TYPE: &str = "application/pidf+xml";
/// A published document is refused beyond this many bytes (413).
pub const MAX_BODY: usize = 8 * 1024;
/// A note is kept to this many characters.
pub const MAX_NOTE: usize = 256;

/// What a presentity's document says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub open: bool,
    pub note: Option<String>,
}

/// The PIDF document for `entity` (`user@domain`).
pub fn document(entity: &str, status: &Status) -> String {
    let basic = if status.open { "open" } else { "closed" };
    let mut xml = String::with_capacity(320);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n");
    xml.push_str("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"pres:");
    xml.push_str(&escape(entity));
    xml.push_str("\">\r\n <tuple id=\"p2psip\">\r\n  <status><basic>");
    xml.push_str(basic);
    xml.push_str("</basic></status>\r\n");
    if let Some(note) = &status.note {
        xml.push_str("  <note>");
        xml.push_str(&escape(note));
        xml.push_str("</note>\r\n");
    }
    xml.push_str(" </tuple>\r\n</presence>\r\n");
    xml
}

/// Why a published document was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooLarge,
    Malformed(&'static str),
}

/// Reads a published document: its `basic` status and first `note`.
pub fn parse(body: &[u8]) -> Result<Status, Refused> {
    if body.len() > MAX_BODY {
        return Err(Refused::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| Refused::Malformed("not UTF-8"))?;
    element_text(text, "presence").ok_or(Refused::Malformed("no presence element"))?;
    let basic = element_text(text, "basic").ok_or(Refused::Malformed("no basic status"))?;
    let open = match basic.trim() {
        "open" => true,
        "closed" => false,
        _ => return Err(Refused::Malformed("basic is neither open nor closed")),
    };
    let note = element_text(text, "note")
        .map(|n| unescape(n.trim()))
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().take(MAX_NOTE).collect());
    Ok(Status { open, note })
}

/// The text inside the first element whose local name is `name`
/// (`<name>`, `<p:name>`, with or without attributes); for an element
/// without a closing tag of its own, what follows its start tag.
fn element_text<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let end = after.find('>')?;
        let tag = &after[..end];
        rest = &after[end + 1..];
        if tag.starts_with(['/', '?', '!']) {
            continue;
        }
        let qualified = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let local = qualified.rsplit(':').next().unwrap_or("");
        if local != name {
            continue;
        }
        if tag.ends_with('/') {
            return Some("");
        }
        let close = format!("</{qualified}>");
        return Some(match rest.find(&close) {
            Some(at) => &rest[..at],
            None => rest,
        });
    }
    None
}

/// XML character data and attribute values: `& < > " '` escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// The five predefined entities back to characters (others left as they are).
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_says_its_status_and_escapes_the_note() {
        let status = Status {
            open: true,
            note: Some("<b>away</b> & \"back\" soon".into()),
        };
        let xml = document("bob@example.test", &status);
        assert!(xml.contains("<basic>open</basic>"), "{xml}");
        assert!(xml.contains("&lt;b&gt;away&lt;/b&gt; &amp; &quot;back&quot;"));
        assert_eq!(parse(xml.as_bytes()), Ok(status));
        let closed = document(
            "bob@example.test",
            &Status {
                open: false,
                note: None,
            },
        );
        assert!(closed.contains("<basic>closed</basic>") && !closed.contains("<note>"));
    }

    #[test]
    fn published_documents_are_read_with_prefixes_and_refused_when_bad() {
        let baresip = "<?xml version=\"1.0\"?><p:presence xmlns:p=\"urn:ietf:params:xml:ns:pidf\" \
            entity=\"sip:bob@example.test\"><p:tuple id=\"1\"><p:status><p:basic>closed</p:basic>\
            </p:status></p:tuple><dm:person><rpid:activities><rpid:away/></rpid:activities>\
            </dm:person><p:note xml:lang=\"en\">Gone fishing</p:note></p:presence>";
        let status = parse(baresip.as_bytes()).expect("parses");
        assert!(!status.open);
        assert_eq!(status.note.as_deref(), Some("Gone fishing"));
        assert_eq!(
            parse(b"<presence><tuple><status><basic>maybe</basic></status></tuple></presence>"),
            Err(Refused::Malformed("basic is neither open nor closed"))
        );
        assert!(matches!(parse(b"<presence/>"), Err(Refused::Malformed(_))));
        assert!(matches!(parse(b"<basic>open"), Err(Refused::Malformed(_))));
        assert!(matches!(parse(&[0xff, 0xfe]), Err(Refused::Malformed(_))));
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(parse(&big), Err(Refused::TooLarge));
        let long = format!(
            "<presence><tuple><status><basic>open</basic></status></tuple><note>{}</note></presence>",
            "x".repeat(1000)
        );
        assert_eq!(
            parse(long.as_bytes())
                .expect("parses")
                .note
                .map(|n| n.len()),
            Some(MAX_NOTE)
        );
    }
}
