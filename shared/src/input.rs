//! The checks every request string gets at the edge, whatever the service (docs/contract.md,
//! "Bounds"): NUL (U+0000) is refused in any string field, since PostgreSQL cannot store it in
//! text or JSON and it would otherwise surface as INTERNAL; names, emails and ids refuse every
//! control character. Each answer names the field, so the caller knows what to fix; the
//! services wrap it in their own INVALID_ARGUMENT.

/// Refuses a NUL in a free-text field (a reason, a password, a metadata value).
pub fn no_nul(field: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("{field} must not contain NUL (U+0000)"));
    }
    Ok(())
}

/// Refuses a control character (NUL, newlines, escapes, …) in a name, an email or an id.
pub fn no_control(field: &str, value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

/// The most characters of a value [`shown`] echoes.
pub const SHOWN_CHARS: usize = 64;

/// A value from outside as an answer or a log line may quote it: escaped like `{:?}`, and cut
/// after [`SHOWN_CHARS`] characters, so a huge value never makes a huge message.
pub fn shown(raw: &str) -> String {
    match raw.char_indices().nth(SHOWN_CHARS) {
        None => format!("{raw:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &raw[..cut], raw.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_values_are_escaped_and_cut() {
        assert_eq!(shown("a\0b"), "\"a\\0b\"");
        let huge = "x".repeat(1 << 20);
        let text = shown(&huge);
        assert!(text.len() < 100, "{text}");
        assert!(text.ends_with("… (1048576 bytes)"), "{text}");
    }

    #[test]
    fn nul_is_refused_everywhere_and_named() {
        let error = no_nul("reason", "a\0b").unwrap_err();
        assert!(error.starts_with("reason "), "{error}");
        assert!(no_nul("reason", "two\nlines are fine").is_ok());
        assert!(no_control("product_id", "a\0b").is_err());
    }

    #[test]
    fn ids_refuse_every_control_character() {
        for bad in ["a\nb", "a\tb", "\u{1b}[31m", "a\u{7f}", "a\u{85}"] {
            let error = no_control("product_id", bad).unwrap_err();
            assert!(error.contains("product_id"), "{error}");
        }
        assert!(no_control("product_id", "sku-42 (blue)").is_ok());
    }
}
