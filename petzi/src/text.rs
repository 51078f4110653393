//! How a value that came from a sender is shown in an error message: short,
//! escaped, with its length, whatever its size.

/// How much of a client's value an error message quotes.
pub const QUOTED_CHARS: usize = 64;

/// A client's value as an error message quotes it: Rust-escaped (a NUL shows
/// as `\0`), and past [`QUOTED_CHARS`] characters cut short with its length,
/// so no error grows with its input (a gRPC status travels in an HTTP/2
/// header, whose budget a long echo would overflow).
pub fn quoted(value: &str) -> String {
    let chars = value.chars().count();
    if chars <= QUOTED_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(QUOTED_CHARS).collect();
    format!("{head:?}… ({chars} characters)")
}

/// An error text that may hold a client's value (serde's "invalid type:
/// string \"…\"" does), cut to a few lines' worth with its length.
pub fn clipped(text: &str) -> String {
    const KEPT: usize = 4 * QUOTED_CHARS;
    let chars = text.chars().count();
    if chars <= KEPT {
        return text.to_owned();
    }
    let head: String = text.chars().take(KEPT).collect();
    format!("{head}… ({chars} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_quoted_short_with_its_length() {
        assert_eq!(quoted("CHF"), "\"CHF\"");
        assert_eq!(quoted("a\0b"), "\"a\\0b\"");
        let long = "é".repeat(7_000);
        let shown = quoted(&long);
        assert_eq!(shown, format!("{:?}… (7000 characters)", "é".repeat(QUOTED_CHARS)));
        assert!(shown.len() < 200);
    }

    #[test]
    fn a_long_error_text_is_clipped_with_its_length() {
        assert_eq!(clipped("short"), "short");
        let long = "x".repeat(70_000);
        let shown = clipped(&long);
        assert!(shown.ends_with("… (70000 characters)") && shown.len() < 300, "{}", shown.len());
    }
}
