//! Message templates: `Hello {{first_name}}` rendered with a recipient's variables.
//!
//! A template that names a variable the recipient lacks is an error, never a blank.

use serde_json::{Map, Value};

/// The most characters a rendered text may have: the longest any provider takes
/// (WhatsApp's 4,096; an SMS stops at 1,600). Rendering stops there, so a short template
/// that repeats a long variable cannot build a huge string: 800 placeholders of a 4 KiB
/// variable would be 3 MB a recipient, in the admin's request or the scheduler's batch.
pub const MAX_TEXT_CHARS: usize = 4_096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template refers to variable `{0}`, which the recipient does not have")]
    MissingVariable(String),
    #[error("template has an unclosed `{{{{` at byte {0}")]
    Unclosed(usize),
    #[error("template has an empty or invalid variable name at byte {0}")]
    BadName(usize),
    #[error("the text is longer than {0} characters once rendered")]
    TooLong(usize),
}

/// The variable names a template refers to, in order of first use.
pub fn variables(template: &str) -> Result<Vec<String>, TemplateError> {
    let mut names = Vec::new();
    walk(template, |piece| {
        if let Piece::Var(name) = piece
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
        Ok(())
    })?;
    Ok(names)
}

/// A template's shape, for judging its rendered length without rendering it: the characters
/// of its fixed text, and how many times it uses each variable (in order of first use).
pub fn shape(template: &str) -> Result<(usize, Vec<(String, usize)>), TemplateError> {
    let mut fixed = 0;
    let mut uses: Vec<(String, usize)> = Vec::new();
    walk(template, |piece| {
        match piece {
            Piece::Text(text) => fixed += text.chars().count(),
            Piece::Var(name) => match uses.iter_mut().find(|(n, _)| n == name) {
                Some((_, count)) => *count += 1,
                None => uses.push((name.to_owned(), 1)),
            },
        }
        Ok(())
    })?;
    Ok((fixed, uses))
}

/// Whether a variable's value is blank (null, or only whitespace): a template that uses it
/// would send "Hi !", so the admin refuses such a value where the template uses it.
pub fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The characters Rust's `str::trim` takes for whitespace (Unicode's `White_Space`), as
/// ranges: [`blank_pattern`] is made from them, so PostgreSQL judges a blank value as
/// [`is_blank`] does.
const WHITESPACE: &[(char, char)] = &[
    ('\u{9}', '\u{d}'),
    ('\u{20}', '\u{20}'),
    ('\u{85}', '\u{85}'),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// A PostgreSQL regular expression matching the text of a blank string value, as
/// [`is_blank`] judges one (`[[:space:]]` depends on the server's locale, and in the C
/// locale a no-break space is no space: "Hi\u{a0}!" went out).
pub fn blank_pattern() -> String {
    let class: String = WHITESPACE
        .iter()
        .map(|&(from, to)| {
            let escape = |c: char| format!("\\u{:04x}", u32::from(c));
            if from == to {
                escape(from)
            } else {
                format!("{}-{}", escape(from), escape(to))
            }
        })
        .collect();
    format!("^[{class}]*$")
}

/// Renders `template` with `vars` (a JSON object; strings are inserted as is, other values
/// in their JSON form), up to [`MAX_TEXT_CHARS`].
pub fn render(template: &str, vars: &Map<String, Value>) -> Result<String, TemplateError> {
    render_within(template, vars, MAX_TEXT_CHARS)
}

/// [`render`], giving up with [`TemplateError::TooLong`] as soon as the text passes
/// `max_chars`.
pub fn render_within(
    template: &str,
    vars: &Map<String, Value>,
    max_chars: usize,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len().min(max_chars) + 16);
    let mut chars = 0;
    let mut push = |out: &mut String, text: &str| {
        chars += text.chars().count();
        if chars > max_chars {
            return Err(TemplateError::TooLong(max_chars));
        }
        out.push_str(text);
        Ok(())
    };
    walk(template, |piece| match piece {
        Piece::Text(text) => push(&mut out, text),
        Piece::Var(name) => match vars.get(name) {
            Some(Value::String(s)) => push(&mut out, s),
            Some(Value::Null) | None => Err(TemplateError::MissingVariable(name.to_owned())),
            Some(other) => push(&mut out, &other.to_string()),
        },
    })?;
    Ok(out)
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn walk<'a>(
    template: &'a str,
    mut visit: impl FnMut(Piece<'a>) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        visit(Piece::Text(&rest[..open]))?;
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or(TemplateError::Unclosed(offset + open))?;
        let name = after[..close].trim();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid {
            return Err(TemplateError::BadName(offset + open));
        }
        visit(Piece::Var(name))?;
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    visit(Piece::Text(rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_sql_blank_pattern_holds_what_trim_takes_for_whitespace() {
        let listed = |c: char| {
            WHITESPACE
                .iter()
                .any(|&(from, to)| (from..=to).contains(&c))
        };
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(listed(c), c.is_whitespace(), "U+{:04X}", u32::from(c));
        }
        let pattern = blank_pattern();
        assert!(pattern.starts_with("^[\\u0009-\\u000d\\u0020"), "{pattern}");
        assert!(
            pattern.contains("\\u00a0") && pattern.ends_with("\\u3000]*$"),
            "{pattern}"
        );
    }

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_shape_counts_fixed_text_and_each_variables_uses() {
        assert_eq!(
            shape("Hi {{ name }}, {{name}} and {{x}}!").unwrap(),
            (11, vec![("name".to_owned(), 2), ("x".to_owned(), 1)])
        );
        let v = vars(json!({"name": "Ada", "x": 7}));
        let rendered = render("Hi {{ name }}, {{name}} and {{x}}!", &v).unwrap();
        assert_eq!(rendered.chars().count(), 11 + 2 * 3 + 1);
    }

    #[test]
    fn renders_variables_and_keeps_text() {
        let v = vars(json!({"first_name": "Ada", "points": 42}));
        assert_eq!(
            render("Hi {{ first_name }}, you have {{points}} points.", &v).unwrap(),
            "Hi Ada, you have 42 points."
        );
        assert_eq!(render("no variables", &v).unwrap(), "no variables");
    }

    #[test]
    fn a_missing_variable_is_an_error_not_a_blank() {
        let v = vars(json!({"first_name": "Ada"}));
        assert_eq!(
            render("Hi {{last_name}}", &v),
            Err(TemplateError::MissingVariable("last_name".into()))
        );
        assert_eq!(
            render("Hi {{first_name}}", &vars(json!({"first_name": null}))),
            Err(TemplateError::MissingVariable("first_name".into()))
        );
    }

    #[test]
    fn rendering_stops_once_the_text_passes_its_limit() {
        let long = "x".repeat(4 * 1024);
        let v = vars(json!({"a": long, "n": 12345}));
        let repeated = "{{a}}".repeat(800);
        assert_eq!(
            render(&repeated, &v),
            Err(TemplateError::TooLong(MAX_TEXT_CHARS))
        );
        assert_eq!(render("{{a}}", &v).map(|t| t.len()), Ok(4 * 1024));
        assert_eq!(render_within("ab{{n}}", &v, 7).as_deref(), Ok("ab12345"));
        assert_eq!(
            render_within("ab{{n}}", &v, 6),
            Err(TemplateError::TooLong(6))
        );
        // Characters, not bytes: é is two bytes.
        assert_eq!(render_within("éé", &v, 2).as_deref(), Ok("éé"));
        assert_eq!(
            render_within(&"t".repeat(10), &v, 9),
            Err(TemplateError::TooLong(9))
        );
    }

    #[test]
    fn malformed_templates_are_rejected() {
        assert_eq!(variables("Hi {{name"), Err(TemplateError::Unclosed(3)));
        assert_eq!(variables("Hi {{}}"), Err(TemplateError::BadName(3)));
        assert_eq!(variables("Hi {{a b}}"), Err(TemplateError::BadName(3)));
        assert_eq!(variables("{{a}} {{b}} {{a}}").unwrap(), vec!["a", "b"]);
    }
}
