//! File names of recordings: they carry the room, session and egress ids, and nothing a
//! file system could misread.

/// `room--session--egress`, each part reduced to `[A-Za-z0-9_.-]` (other characters
/// become `-`, a leading dot `_`), so a room name can never escape the output directory.
pub fn file_stem(room: &str, session_id: Option<&str>, egress_id: &str) -> String {
    let parts = [room, session_id.unwrap_or("nosession"), egress_id];
    parts.map(clean).join("--")
}

fn clean(part: &str) -> String {
    let mut out: String = part
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_ids_and_stay_in_the_directory() {
        assert_eq!(
            file_stem("weekly sync", Some("se_01"), "eg_02"),
            "weekly-sync--se_01--eg_02"
        );
        assert_eq!(file_stem("../etc", None, "eg_1"), "_.-etc--nosession--eg_1");
        assert!(!file_stem("a/b\\c", None, "e").contains(['/', '\\']));
    }
}
