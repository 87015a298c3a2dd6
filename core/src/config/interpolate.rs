//! `${VAR}` interpolation from the environment, done on the text before parsing so that
//! line numbers stay those of the file. `$${` writes a literal `${`.

/// An unset variable, with its 1-based line and column in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsetVar {
    pub name: String,
    pub line: usize,
    pub column: usize,
}

pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, UnsetVar> {
    let mut out = String::with_capacity(text.len());
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    out.push_str(tail);
                    rest = "";
                    break;
                };
                let name = &body[..end];
                let column = line.len() - tail.len() + 1;
                let value = lookup(name).ok_or_else(|| UnsetVar {
                    name: name.to_owned(),
                    line: line_no + 1,
                    column,
                })?;
                out.push_str(&value);
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PASS").then(|| "s3cret".to_owned())
    }

    #[test]
    fn substitutes_escapes_and_names_unset_variables() {
        assert_eq!(
            interpolate("url: redis://:${PASS}@h\n", env).unwrap(),
            "url: redis://:s3cret@h\n"
        );
        assert_eq!(
            interpolate("a: $${PASS} $5\n", env).unwrap(),
            "a: ${PASS} $5\n"
        );
        let unset = interpolate("a: 1\nb: x${NOPE}\n", env).unwrap_err();
        assert_eq!(
            (unset.name.as_str(), unset.line, unset.column),
            ("NOPE", 2, 5)
        );
    }
}
