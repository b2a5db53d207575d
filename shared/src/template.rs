//! Message templates: `Hello {{first_name}}` rendered with a recipient's variables.
//!
//! A template that names a variable the recipient lacks is an error, never a blank.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template refers to variable `{0}`, which the recipient does not have")]
    MissingVariable(String),
    #[error("template has an unclosed `{{{{` at byte {0}")]
    Unclosed(usize),
    #[error("template has an empty or invalid variable name at byte {0}")]
    BadName(usize),
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

/// Renders `template` with `vars` (a JSON object; strings are inserted as is, other values
/// in their JSON form).
pub fn render(template: &str, vars: &Map<String, Value>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 16);
    walk(template, |piece| {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name) => match vars.get(name) {
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Null) | None => {
                    return Err(TemplateError::MissingVariable(name.to_owned()));
                }
                Some(other) => out.push_str(&other.to_string()),
            },
        }
        Ok(())
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

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
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
    fn malformed_templates_are_rejected() {
        assert_eq!(variables("Hi {{name"), Err(TemplateError::Unclosed(3)));
        assert_eq!(variables("Hi {{}}"), Err(TemplateError::BadName(3)));
        assert_eq!(variables("Hi {{a b}}"), Err(TemplateError::BadName(3)));
        assert_eq!(variables("{{a}} {{b}} {{a}}").unwrap(), vec!["a", "b"]);
    }
}
