//! The request target as policy and routing see it, made canonical before either looks: the
//! path normalized as RFC 3986 says (percent-encoded unreserved characters decoded, the other
//! escapes upper-cased, `.` and `..` segments removed; Istio's default `BASE` normalization), so
//! `/public/../admin` or `/%61dmin` cannot slip past a rule on `/admin`; and an absolute-form
//! request's `Host` replaced by its URI's authority (RFC 9112: the authority wins), so the host a
//! policy checks is the host the app sees. The normalized request is what goes upstream.

use http::uri::{PathAndQuery, Uri};
use http::HeaderValue;

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes escapes of unreserved characters and upper-cases the rest.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = h * 16 + l;
                if unreserved(v) {
                    out.push(v as char);
                } else {
                    out.push('%');
                    out.push(b[i + 1].to_ascii_uppercase() as char);
                    out.push(b[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4, on a path that starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The canonical form of a path (unchanged when it does not start with `/`, e.g. `*`).
pub fn normalize_path(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    remove_dot_segments(&decode_unreserved(path))
}

/// Normalizes the request's path and `Host` in place.
pub fn normalize<B>(req: &mut http::Request<B>) {
    if let Some(authority) = req.uri().authority() {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let path = req.uri().path();
    let normal = normalize_path(path);
    if normal != path {
        let pq = match req.uri().query() {
            Some(q) => format!("{normal}?{q}"),
            None => normal,
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = pq.parse::<PathAndQuery>().ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_canonical_before_policy_sees_them() {
        for (raw, want) in [
            ("/public/../admin/x", "/admin/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/a/./b/../../c", "/c"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a/%2fb", "/a/%2Fb"),
            ("/a%", "/a%"),
            ("/a%zz", "/a%zz"),
            ("/", "/"),
            ("*", "*"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
    }

    #[test]
    fn an_absolute_form_authority_wins_over_host() {
        let mut req = http::Request::builder()
            .uri("http://ok.example/x/../admin?q=1")
            .header("host", "admin.example")
            .body(())
            .unwrap();
        normalize(&mut req);
        assert_eq!(req.headers()["host"], "ok.example");
        assert_eq!(req.uri().path(), "/admin");
        assert_eq!(req.uri().query(), Some("q=1"));
        assert_eq!(req.uri().authority().unwrap().as_str(), "ok.example");
    }
}
