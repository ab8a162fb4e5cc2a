//! Host paths out of what tenants read. A worker's error can name a path
//! under `worker.data_root` (an I/O error on `SERVERS/42/apps`); it is
//! stored as the job's `error` and the server's `last_error`, which admins
//! need whole and tenants must not see: the layout of the host is not theirs.

use std::borrow::Cow;

/// What an absolute path becomes.
pub const PLACEHOLDER: &str = "<path>";

/// `text` with every absolute path replaced by [`PLACEHOLDER`]. A path is a
/// `/` at the start of the text or after a space, quote, bracket, `=`,
/// `:` or `,`, followed by anything up to the next space, quote, bracket,
/// comma, or a `:` that ends the path (`/a/b: denied`). `1/2`, `a/b` and
/// URLs are left alone.
pub fn paths(text: &str) -> Cow<'_, str> {
    if !text.contains('/') {
        return Cow::Borrowed(text);
    }
    let starts_after = |c: char| c.is_whitespace() || "\"'`([{<=:,".contains(c);
    let ends_at = |c: char, next: Option<char>| {
        c.is_whitespace() || "\"'`)]}>,;".contains(c) || (c == ':' && next.is_none_or(char::is_whitespace))
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut i = 0;
    while i < chars.len() {
        let (c, previous, next) = (chars[i], i.checked_sub(1).map(|p| chars[p]), chars.get(i + 1).copied());
        // "://" in a URL is not a path.
        let url = previous == Some(':') && next == Some('/');
        if c == '/' && previous.is_none_or(starts_after) && !url {
            i += 1;
            while i < chars.len() && !ends_at(chars[i], chars.get(i + 1).copied()) {
                i += 1;
            }
            out.push_str(PLACEHOLDER);
            changed = true;
            continue;
        }
        out.push(c);
        i += 1;
    }
    if changed { Cow::Owned(out) } else { Cow::Borrowed(text) }
}

/// [`paths`] on an optional message.
pub fn optional(text: &mut Option<String>) {
    if let Some(t) = text.as_mut()
        && let Cow::Owned(clean) = paths(t)
    {
        *t = clean;
    }
}

/// [`paths`] on every string in a JSON value (a job's `result`: the
/// system stack's error names files on the host).
pub fn json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            if let Cow::Owned(clean) = paths(text) {
                *text = clean;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(json),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_a_json_value_are_replaced_at_any_depth() {
        let mut v = serde_json::json!({"system_stack": {"error": "reading /srv/SERVERS/42/apps: denied", "n": 1}, "w": ["/x y"]});
        json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"system_stack": {"error": "reading <path>: denied", "n": 1}, "w": ["<path> y"]})
        );
    }

    #[test]
    fn absolute_paths_are_replaced_and_nothing_else() {
        assert_eq!(
            paths("creating /var/lib/vsfleet/SERVERS/42/apps: Permission denied (os error 13)"),
            "creating <path>: Permission denied (os error 13)"
        );
        assert_eq!(paths("/srv/x failed"), "<path> failed");
        assert_eq!(paths(r#"moving "/a/b" to "/a/c""#), r#"moving "<path>" to "<path>""#);
        assert_eq!(paths("path=/tmp/x, retry"), "path=<path>, retry");
        assert_eq!(paths("(/data/1)"), "(<path>)");
        assert_eq!(paths("open /a:b/c: gone"), "open <path>: gone");
        for kept in ["gave up after 5 attempts", "1/2 done", "a/b", "see http://example.test/x"] {
            assert!(matches!(paths(kept), Cow::Borrowed(_)), "{kept:?} was changed");
        }
    }
}
