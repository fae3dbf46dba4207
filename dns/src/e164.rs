//! E.164 numbers as both the ENUM resolver and the gateway's routing read them.

/// `"+1 (212) 555-1234"`, `"tel:+1-212-555-1234;phone-context=…"` →
/// `"+12125551234"`. Visual separators (space, `-`, `.`, `(`, `)`) are
/// removed; the number must start with `+` and have 1 to 15 digits.
pub fn normalize_e164(text: &str) -> Option<String> {
    let mut s = text.trim();
    if s.len() >= 4 && s[..4].eq_ignore_ascii_case("tel:") {
        s = &s[4..];
    }
    let s = s.split(';').next().unwrap_or("").trim();
    let rest = s.strip_prefix('+')?;
    let digits: String = rest
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if digits.is_empty() || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_normalisation() {
        assert_eq!(
            normalize_e164("+1 (212) 555-1234").as_deref(),
            Some("+12125551234")
        );
        assert_eq!(
            normalize_e164("tel:+12125551234;phone-context=example.com").as_deref(),
            Some("+12125551234")
        );
        assert_eq!(
            normalize_e164("TEL:+44.20.7946.0000").as_deref(),
            Some("+442079460000")
        );
        assert_eq!(normalize_e164(" +1 ").as_deref(), Some("+1"));
        assert_eq!(
            normalize_e164("+123456789012345").as_deref(),
            Some("+123456789012345")
        );
        assert_eq!(normalize_e164("+1234567890123456"), None); // 16 digits
        assert_eq!(normalize_e164("2125551234"), None);
        assert_eq!(normalize_e164("+"), None);
        assert_eq!(normalize_e164("++1"), None);
        assert_eq!(normalize_e164("+1-212-CALL"), None);
        assert_eq!(normalize_e164("+1/212"), None);
    }
}
