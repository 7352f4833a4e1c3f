//! Reading `-f` inputs: files, directories (the cluster directory's walk, recursive with `-R`)
//! and standard input, split into documents (`kind: List` expanded) with where each came from.

use std::io::Read;
use std::path::Path;

use mesh_core::cluster_dir::{self, Depth};
use serde_json::Value;

/// A document of an input, with where it came from.
pub(super) struct Document {
    pub(super) value: Value,
    pub(super) location: String,
}

/// One `-f` input: its name (the path, or `-`) and text.
pub(super) struct Input {
    pub(super) name: String,
    pub(super) text: String,
}

/// Expands `-f` arguments into inputs; any path that does not exist fails them all, as kubectl
/// checks every path before it applies anything.
pub(super) fn read_sources(
    sources: &[String],
    recursive: bool,
    stdin: &mut dyn Read,
) -> Result<Vec<Input>, String> {
    let mut files = Vec::new();
    let mut inputs = Vec::new();
    for source in sources {
        if source.starts_with("http://") || source.starts_with("https://") {
            return Err(format!(
                "meshctl reads files, directories and - (standard input), not URLs; try: curl -sL {source} | meshctl apply -f -"
            ));
        }
        if source == "-" {
            files.push(None);
            continue;
        }
        let path = Path::new(source);
        if path.is_dir() {
            let depth = if recursive {
                Depth::Recursive
            } else {
                Depth::Flat
            };
            let found = cluster_dir::walk(path, depth).map_err(|e| e.to_string())?;
            files.extend(found.into_iter().map(Some));
        } else if path.exists() {
            files.push(Some(path.to_path_buf()));
        } else {
            return Err(format!("the path {source:?} does not exist"));
        }
    }
    for file in files {
        match file {
            None => {
                let mut text = String::new();
                stdin
                    .take(cluster_dir::MAX_FILE_BYTES + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                if text.len() as u64 > cluster_dir::MAX_FILE_BYTES {
                    return Err(format!(
                        "standard input holds more than the {} bytes one input may",
                        cluster_dir::MAX_FILE_BYTES
                    ));
                }
                inputs.push(Input {
                    name: "-".into(),
                    text,
                });
            }
            Some(path) => {
                let bytes = cluster_dir::read(&path).map_err(|e| e.to_string())?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
                inputs.push(Input {
                    name: path.display().to_string(),
                    text,
                });
            }
        }
    }
    Ok(inputs)
}

/// The documents of an input in order (`kind: List` expanded), and the YAML syntax error that
/// ended it early, if one did: documents before it still count, as they do for istiod-lite.
pub(super) fn split_documents(input: &Input) -> (Vec<Document>, Option<String>) {
    let source = if input.name == "-" {
        "stdin"
    } else {
        input.name.as_str()
    };
    let mut documents = Vec::new();
    for (i, doc) in cluster_dir::yaml_documents(&input.text).enumerate() {
        let value = match doc {
            Ok(v) => v,
            Err(e) => return (documents, Some(e)),
        };
        let location = format!("{source}, document {}", i + 1);
        let is_list = value.get("kind").and_then(Value::as_str) == Some("List")
            && value.get("apiVersion").and_then(Value::as_str) == Some("v1");
        match value {
            Value::Null => {}
            Value::Object(mut map) if is_list => {
                let items = match map.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                for (j, item) in items.into_iter().enumerate() {
                    documents.push(Document {
                        value: item,
                        location: format!("{location}, item {}", j + 1),
                    });
                }
            }
            value => documents.push(Document { value, location }),
        }
    }
    (documents, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_expanded_and_a_syntax_error_ends_the_input() {
        let input = Input {
            name: "-".into(),
            text: "apiVersion: v1\nkind: List\nitems:\n- {kind: A}\n- {kind: B}\n---\n---\n\
                   {kind: C}\n---\nkind: [unclosed\n"
                .into(),
        };
        let (documents, syntax_error) = split_documents(&input);
        let locations: Vec<&str> = documents.iter().map(|d| d.location.as_str()).collect();
        assert_eq!(
            locations,
            [
                "stdin, document 1, item 1",
                "stdin, document 1, item 2",
                "stdin, document 3"
            ]
        );
        assert!(syntax_error.is_some());
    }

    #[test]
    fn urls_are_refused_with_a_way_to_apply_them() {
        let Err(e) = read_sources(
            &["https://example.com/a.yaml".to_string()],
            false,
            &mut std::io::empty(),
        ) else {
            panic!("a URL was read");
        };
        assert!(
            e.contains("curl -sL https://example.com/a.yaml | meshctl apply -f -"),
            "{e}"
        );
    }
}
