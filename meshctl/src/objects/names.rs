//! Name checks, as the API server makes them: object names (RFC 1123 subdomains, so also safe
//! file names), namespace names (RFC 1123 labels), label keys and values, and `label`'s
//! `key=value` / `key-` changes.

/// An RFC 1123 subdomain, the rule for object names (so it is also a safe file name).
pub(super) fn is_object_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 253
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// An RFC 1123 label, the rule for namespace names.
pub(super) fn is_dns_label(name: &str) -> bool {
    is_object_name(name) && name.len() <= 63 && !name.contains('.')
}

/// Parses `k=v` (set) and `k-` (remove), checking keys and values as the API server does.
pub(super) fn parse_label_changes(
    changes: &[String],
) -> Result<Vec<(String, Option<String>)>, String> {
    if changes.is_empty() {
        return Err("at least one label update is required".into());
    }
    let mut parsed: Vec<(String, Option<String>)> = Vec::new();
    for change in changes {
        let (key, value) = match change.split_once('=') {
            Some((k, v)) => {
                check_label_value(v).map_err(|e| format!("invalid label value: {change:?}: {e}"))?;
                (k, Some(v.to_string()))
            }
            None => match change.strip_suffix('-') {
                Some(k) => (k, None),
                None => {
                    return Err(format!(
                        "invalid label spec: {change:?}: use key=value to set a label, key- to remove it"
                    ))
                }
            },
        };
        check_label_key(key).map_err(|e| format!("invalid label key {key:?}: {e}"))?;
        if let Some((_, other)) = parsed.iter().find(|(k, _)| k == key) {
            if other.is_some() != value.is_some() {
                return Err(format!(
                    "can not both modify and remove label {key:?} in the same command"
                ));
            }
        }
        parsed.push((key.to_string(), value));
    }
    Ok(parsed)
}

fn is_label_word(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_object_name(prefix) {
            return Err(
                "the prefix must be a DNS subdomain (lower case letters, digits, '-' and '.')"
                    .into(),
            );
        }
    }
    if !is_label_word(name) {
        return Err("the name must be 63 characters or less, alphanumeric, '-', '_' or '.', and start and end with an alphanumeric character".into());
    }
    Ok(())
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_word(value) {
        Ok(())
    } else {
        Err("a valid label must be an empty string or 63 characters or less, alphanumeric, '-', '_' or '.', and start and end with an alphanumeric character".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_and_namespace_names_follow_rfc_1123() {
        assert!(is_object_name("web-0.v1"));
        let long = "a".repeat(254);
        for bad in ["", "Web", "-a", "a-", "../x", "a/b", long.as_str()] {
            assert!(!is_object_name(bad), "{bad:?}");
        }
        assert!(is_dns_label("demo"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }

    #[test]
    fn label_changes_set_remove_and_refuse_what_the_api_server_refuses() {
        let changes =
            |c: &[&str]| parse_label_changes(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            changes(&["a=1", "example.com/b-", "c="]).unwrap(),
            [
                ("a".to_string(), Some("1".to_string())),
                ("example.com/b".to_string(), None),
                ("c".to_string(), Some(String::new())),
            ]
        );
        assert!(changes(&[]).is_err());
        let refused = |c: &[&str]| changes(c).unwrap_err();
        assert!(refused(&["novalue"]).contains("invalid label spec"));
        assert!(refused(&["a=1", "a-"]).contains("can not both"));
        assert!(refused(&["Bad_Prefix/a=1"]).contains("prefix"));
        assert!(refused(&["a=-x"]).contains("invalid label value"));
    }
}
