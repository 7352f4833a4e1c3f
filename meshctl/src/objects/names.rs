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

pub(super) fn is_label_word(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

pub(super) fn check_label_key(key: &str) -> Result<(), String> {
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

pub(super) fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_word(value) {
        Ok(())
    } else {
        Err("a valid label must be an empty string or 63 characters or less, alphanumeric, '-', '_' or '.', and start and end with an alphanumeric character".into())
    }
}
