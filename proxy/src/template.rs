//! Path templates: turn a concrete request path into a low-cardinality
//! template such as `/api/users/{id}`.
//!
//! Pure string logic; depends on nothing else in the crate.

/// The placeholder that replaces identifier-like segments.
pub const ID: &str = "{id}";
/// At most this many segments are kept; the rest become `/...`.
pub const MAX_SEGMENTS: usize = 16;
/// Templates are cut to at most this many bytes.
pub const MAX_LEN: usize = 256;

/// Returns the template of `path`: the query is dropped and every segment that
/// looks like an identifier becomes `{id}`.
pub fn template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() || path == "/" {
        return "/".to_string();
    }
    let mut out = String::with_capacity(path.len().min(MAX_LEN));
    let mut segments = path.trim_start_matches('/').split('/');
    for (index, segment) in segments.by_ref().enumerate() {
        if index == MAX_SEGMENTS {
            out.push_str("/...");
            break;
        }
        out.push('/');
        if is_identifier(segment) {
            out.push_str(ID);
        } else {
            out.push_str(segment);
        }
        if out.len() > MAX_LEN {
            break;
        }
    }
    truncate(out)
}

fn truncate(mut out: String) -> String {
    if out.len() > MAX_LEN {
        let mut cut = MAX_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// True when a segment names one resource rather than a route.
fn is_identifier(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let bytes = segment.as_bytes();
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    let all_digits = bytes.iter().all(u8::is_ascii_digit);
    let all_hex = bytes.iter().all(u8::is_ascii_hexdigit);
    let alnum = bytes.iter().all(u8::is_ascii_alphanumeric);
    let has_alpha = bytes.iter().any(u8::is_ascii_alphabetic);
    all_digits
        || is_uuid(segment)
        || (all_hex && has_digit && bytes.len() >= 8)
        || (alnum && has_alpha && has_digit && bytes.len() >= 16)
}

fn is_uuid(segment: &str) -> bool {
    let groups: Vec<&str> = segment.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == lens.len()
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            ("/health", "/health"),
            (
                "/api/users/8412/files/a1b2c3d4e5",
                "/api/users/{id}/files/{id}",
            ),
            ("/api/users/8412?x=1", "/api/users/{id}"),
            (
                "/v1/items/550e8400-e29b-41d4-a716-446655440000",
                "/v1/items/{id}",
            ),
            ("/blob/deadbeef", "/blob/deadbeef"), // hex but no digit
            ("/blob/deadbee1", "/blob/{id}"),
            ("/blob/abc1", "/blob/abc1"), // too short for hex rule
            ("/t/AbCdEf0123456789xyz", "/t/{id}"),
            ("/t/v2", "/t/v2"),
            ("/a//b/", "/a//b/"),
            ("/x#frag", "/x"),
        ];
        for (input, want) in cases {
            assert_eq!(template(input), want, "input {input:?}");
        }
    }

    #[test]
    fn caps_segments_and_length() {
        let many = "/a".repeat(40);
        let t = template(&many);
        assert!(t.ends_with("/..."), "{t}");
        assert_eq!(t.matches('/').count(), MAX_SEGMENTS + 1);
        let long = format!("/{}", "x".repeat(1000));
        assert!(template(&long).len() <= MAX_LEN + 3);
    }
}
