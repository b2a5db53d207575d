//! The segment filter language: how a tenant picks which of its contacts a campaign goes to.
//!
//! A filter is a condition on each contact, for example
//!
//! ```text
//! lifetime_value > 10000 and last_purchase > 365 days ago
//! plan in ('gold', 'platinum') and not unsubscribed = true
//! (country = 'FR' or country = 'BE') and created_at >= date '2025-01-01'
//! ```
//!
//! # Fields
//!
//! A field is a name of letters, digits and `_`, not starting with a digit, at most 64
//! characters long. Field names are case-sensitive. Two names are built in:
//!
//! - `address`: the contact's address (text);
//! - `created_at`: when the contact was added (a time).
//!
//! Every other name is the key of one of the contact's attributes. The words `and`, `or` and
//! `not` cannot be field names.
//!
//! # Values
//!
//! | value | examples |
//! | --- | --- |
//! | number: an integer or decimal, optionally negative | `42`, `-3`, `19.99` |
//! | string: in single quotes, `''` stands for one quote | `'gold'`, `'O''Brien'` |
//! | boolean | `true`, `false` |
//! | date, or date and time (without a zone, UTC is meant) | `date '2025-01-31'`, `date '2025-01-31T10:00:00Z'`, `date '2025-01-31T12:00:00+02:00'` |
//! | time relative to now: `N minutes/hours/days/weeks ago`, N a whole number from 0 to 100000 | `30 days ago`, `1 week ago` |
//! | the current time | `now` |
//!
//! # Conditions
//!
//! | condition | meaning |
//! | --- | --- |
//! | `field = value`, `!=`, `<`, `<=`, `>`, `>=` | compares the field with the value |
//! | `field in (v1, v2, ...)` | the field equals one of 1 to 1000 strings, or 1 to 1000 numbers |
//! | `field not in (v1, v2, ...)` | the field is set and equals none of them |
//! | `field exists` | the contact has this attribute (always true for `address` and `created_at`) |
//! | `field not exists` | the contact does not have this attribute |
//!
//! Conditions combine with `not`, `and` and `or`, in that order of precedence, and parentheses:
//! `a = 1 or b = 2 and not c = 3` means `a = 1 or (b = 2 and (not c = 3))`. Keywords (`and`,
//! `in`, `true`, `date`, `days`, `ago`, ...) may be written in any case.
//!
//! How a comparison behaves depends on the type of the value it is given:
//!
//! - **number**: matches when the attribute is a JSON number and the comparison holds, exactly
//!   (decimals are not rounded). An attribute holding anything else, such as the string
//!   `"42"`, never matches. A CSV upload of contacts stores a cell as a number when JSON
//!   writes that number back the same (`42`, `19.9`): `007` and `19.90` stay strings.
//! - **string**: compares the attribute as text (alphabetically for `<` and `>`). `address`
//!   can only be compared with strings.
//! - **boolean**: only `=` and `!=`; matches an attribute that is set and is (or is not)
//!   exactly that JSON boolean.
//! - **date, relative time, `now`**: the attribute must be a string holding a date, such as
//!   `"2025-03-01"` or `"2025-03-01T10:00:00Z"`; other attributes never match. `<` means
//!   *earlier than*: `last_purchase > 30 days ago` selects purchases in the last 30 days.
//!   `created_at` can only be compared with these values. An attribute holding a date without
//!   a time or zone is read in the database session's time zone.
//!
//! A comparison with an attribute the contact does not have (or whose type does not fit) is
//! false, so `not` makes it true: `not plan = 'gold'` also matches contacts without a `plan`,
//! whereas `plan != 'gold'` only matches contacts that have one.
//!
//! # Grammar
//!
//! ```text
//! filter     = or_expr
//! or_expr    = and_expr { "or" and_expr }
//! and_expr   = unary { "and" unary }
//! unary      = "not" unary | "(" or_expr ")" | condition
//! condition  = field op value
//!            | field [ "not" ] "in" "(" value { "," value } ")"
//!            | field [ "not" ] "exists"
//! op         = "=" | "!=" | "<" | "<=" | ">" | ">="
//! value      = number | string | "true" | "false" | "now"
//!            | "date" string
//!            | integer ( "minute" | "minutes" | "hour" | "hours"
//!                      | "day" | "days" | "week" | "weeks" ) "ago"
//! field      = /[A-Za-z_][A-Za-z0-9_]{0,63}/
//! number     = /-?[0-9]+(\.[0-9]+)?/
//! string     = /'([^']|'')*'/
//! ```
//!
//! # Limits
//!
//! A filter is at most [`MAX_FILTER_LEN`] bytes long, holds at most [`MAX_COMPARISONS`]
//! conditions, and is nested at most [`MAX_DEPTH`] levels deep (each `(` and each `not` is a
//! level).
//!
//! # SQL
//!
//! [`Filter::push_sql`] compiles a filter to a predicate over the `contacts` table. Every value
//! and every attribute name written by the tenant is sent as a bind parameter: none of the
//! tenant's text ever becomes part of the SQL itself. Casts that could fail are guarded, so a
//! contact whose attribute has an unexpected type simply does not match instead of failing the
//! whole query.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

/// The longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// How deeply parentheses and `not` may nest.
pub const MAX_DEPTH: usize = 32;
/// How many conditions one filter may hold.
pub const MAX_COMPARISONS: usize = 100;
/// How many values an `in (...)` list may hold.
pub const MAX_LIST_LEN: usize = 1000;
/// The largest N in `N days ago` (and the other units).
pub const MAX_RELATIVE: i32 = 100_000;
const MAX_NAME_LEN: usize = 64;

/// A parsed and validated segment filter. Its [`Display`](fmt::Display) is a canonical
/// spelling that parses back to the same filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Expr,
}

/// Why a filter was rejected, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {position})")]
pub struct FilterError {
    /// 1-based offset of the offending character (in characters, not bytes); one past the
    /// last character when the filter ended too early.
    pub position: usize,
    pub message: String,
}

impl FilterError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        FilterError {
            position,
            message: message.into(),
        }
    }
}

impl Filter {
    /// Parses and validates.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_LEN {
            let position = text
                .char_indices()
                .position(|(at, c)| at + c.len_utf8() > MAX_FILTER_LEN)
                .map_or(1, |index| index + 1);
            return Err(FilterError::new(
                position,
                format!("filter is longer than {MAX_FILTER_LEN} bytes"),
            ));
        }
        let chars: Vec<char> = text.chars().collect();
        let tokens = lex(&chars);
        if let [only] = tokens.as_slice() {
            return match &only.tok {
                Tok::Error(error) => Err(error.clone()),
                _ => Err(FilterError::new(1, "filter is empty")),
            };
        }
        let mut parser = Parser {
            tokens,
            index: 0,
            depth: 0,
            comparisons: 0,
        };
        let root = parser.parse_or()?;
        match &parser.peek().tok {
            Tok::End => Ok(Filter { root }),
            Tok::RParen => Err(FilterError::new(
                parser.peek().pos,
                "unmatched `)`: there is no `(` for it to close",
            )),
            _ => Err(parser.expected("`and`, `or` or the end of the filter")),
        }
    }

    /// Appends the predicate, fully parenthesized, for contacts aliased `alias` (a fixed
    /// identifier chosen by the calling code, such as `c`; only `[a-z_]+` is accepted).
    ///
    /// Every value and attribute name of the filter is bound as a parameter; the predicate is
    /// true or false for every contact, never NULL and never a cast error.
    ///
    /// # Panics
    ///
    /// If `alias` is not made of `a`-`z` and `_` only: it is pushed into the SQL text as is.
    pub fn push_sql(&self, alias: &str, qb: &mut QueryBuilder<Postgres>) {
        assert!(
            !alias.is_empty() && alias.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "table alias must match [a-z_]+, got {alias:?}"
        );
        self.root.push_sql(alias, qb);
    }

    /// The attribute keys the filter refers to, sorted, each once; `address` and
    /// `created_at` are columns, not attributes, so they are not listed.
    pub fn attributes(&self) -> Vec<String> {
        let mut keys = BTreeSet::new();
        self.root.collect_attributes(&mut keys);
        keys.into_iter().map(str::to_owned).collect()
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Filter, FilterError> {
        Filter::parse(text)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt_with(f, Prec::Top)
    }
}

// ---------------------------------------------------------------------------------------------
// AST

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// Two or more alternatives; nested `or`s are flattened into one.
    Or(Vec<Expr>),
    /// Two or more conditions; nested `and`s are flattened into one.
    And(Vec<Expr>),
    Not(Box<Expr>),
    Leaf(Leaf),
}

/// A condition, already checked against the type of its field: only combinations that make
/// sense (and compile to valid SQL) can be represented.
#[derive(Debug, Clone, PartialEq)]
enum Leaf {
    /// `value` is the number as written, so that it reaches `numeric` without rounding.
    Number {
        key: String,
        op: CmpOp,
        value: String,
    },
    Text {
        column: TextColumn,
        op: CmpOp,
        value: String,
    },
    Bool {
        key: String,
        equal: bool,
        value: bool,
    },
    Time {
        column: TimeColumn,
        op: CmpOp,
        value: Time,
    },
    TextIn {
        column: TextColumn,
        negated: bool,
        values: Vec<String>,
    },
    NumberIn {
        key: String,
        negated: bool,
        values: Vec<String>,
    },
    Exists {
        field: Field,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Attribute(String),
    Address,
    CreatedAt,
}

impl Field {
    fn from_name(name: String) -> Field {
        match name.as_str() {
            "address" => Field::Address,
            "created_at" => Field::CreatedAt,
            _ => Field::Attribute(name),
        }
    }

    fn name(&self) -> &str {
        match self {
            Field::Attribute(key) => key,
            Field::Address => "address",
            Field::CreatedAt => "created_at",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TextColumn {
    Attribute(String),
    Address,
}

impl TextColumn {
    fn name(&self) -> &str {
        match self {
            TextColumn::Attribute(key) => key,
            TextColumn::Address => "address",
        }
    }

    fn push_sql(&self, alias: &str, qb: &mut QueryBuilder<Postgres>) {
        match self {
            TextColumn::Attribute(key) => push_attribute_text(alias, key, qb),
            TextColumn::Address => {
                qb.push(alias).push(".address");
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TimeColumn {
    Attribute(String),
    CreatedAt,
}

impl TimeColumn {
    fn name(&self) -> &str {
        match self {
            TimeColumn::Attribute(key) => key,
            TimeColumn::CreatedAt => "created_at",
        }
    }

    fn push_sql(&self, alias: &str, qb: &mut QueryBuilder<Postgres>) {
        match self {
            TimeColumn::Attribute(key) => {
                qb.push("herald_try_timestamptz(");
                push_attribute_text(alias, key, qb);
                qb.push(")");
            }
            TimeColumn::CreatedAt => {
                qb.push(alias).push(".created_at");
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            CmpOp::Ne => "<>",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Time {
    /// `text` is kept as written so that the filter displays the way the tenant wrote it.
    Date {
        text: String,
        at: DateTime<Utc>,
    },
    Ago {
        amount: i32,
        unit: Unit,
    },
    Now,
}

impl Time {
    fn push_sql(&self, qb: &mut QueryBuilder<Postgres>) {
        match self {
            Time::Date { at, .. } => {
                qb.push_bind(*at).push("::timestamptz");
            }
            // Computed by the database so that a stored segment always means "relative to
            // when it runs", with the database's clock.
            Time::Ago { amount, unit } => {
                qb.push("(now() - make_interval(")
                    .push(unit.sql_argument())
                    .push(" => ")
                    .push_bind(*amount)
                    .push("))");
            }
            Time::Now => {
                qb.push("now()");
            }
        }
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Time::Date { text, .. } => write!(f, "date {}", Quoted(text)),
            Time::Ago { amount, unit } => {
                let name = if *amount == 1 {
                    unit.singular()
                } else {
                    unit.plural()
                };
                write!(f, "{amount} {name} ago")
            }
            Time::Now => f.write_str("now"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl Unit {
    const ALL: [Unit; 4] = [Unit::Minutes, Unit::Hours, Unit::Days, Unit::Weeks];

    fn from_word(word: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|unit| {
            word.eq_ignore_ascii_case(unit.singular()) || word.eq_ignore_ascii_case(unit.plural())
        })
    }

    fn singular(self) -> &'static str {
        match self {
            Unit::Minutes => "minute",
            Unit::Hours => "hour",
            Unit::Days => "day",
            Unit::Weeks => "week",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Unit::Minutes => "minutes",
            Unit::Hours => "hours",
            Unit::Days => "days",
            Unit::Weeks => "weeks",
        }
    }

    /// The parameter name of PostgreSQL's `make_interval`.
    fn sql_argument(self) -> &'static str {
        match self {
            Unit::Minutes => "mins",
            Unit::Hours => "hours",
            Unit::Days => "days",
            Unit::Weeks => "weeks",
        }
    }
}

/// A value as written, before it is matched with the type of its field.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(String),
    Text(String),
    Bool(bool),
    Time(Time),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Number(_) => "a number",
            Value::Text(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Time(Time::Date { .. }) => "a date",
            Value::Time(Time::Ago { .. }) => "a relative time",
            Value::Time(Time::Now) => "`now`",
        }
    }
}

/// Displays a string literal in filter syntax.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.0.replace('\'', "''"))
    }
}

/// Binding precedence of the context an expression is displayed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Prec {
    Top,
    Or,
    And,
    Not,
}

impl Expr {
    fn or(items: Vec<Expr>) -> Expr {
        Expr::flatten(items, Expr::Or, |expr| match expr {
            Expr::Or(inner) => Ok(inner),
            other => Err(other),
        })
    }

    fn and(items: Vec<Expr>) -> Expr {
        Expr::flatten(items, Expr::And, |expr| match expr {
            Expr::And(inner) => Ok(inner),
            other => Err(other),
        })
    }

    fn flatten(
        items: Vec<Expr>,
        build: fn(Vec<Expr>) -> Expr,
        same: fn(Expr) -> Result<Vec<Expr>, Expr>,
    ) -> Expr {
        let mut flat = Vec::with_capacity(items.len());
        for item in items {
            match same(item) {
                Ok(inner) => flat.extend(inner),
                Err(other) => flat.push(other),
            }
        }
        if flat.len() == 1
            && let Some(only) = flat.pop()
        {
            return only;
        }
        build(flat)
    }

    fn fmt_with(&self, f: &mut fmt::Formatter<'_>, outer: Prec) -> fmt::Result {
        let (own, items, separator) = match self {
            Expr::Leaf(leaf) => return write!(f, "{leaf}"),
            Expr::Not(inner) => {
                f.write_str("not ")?;
                return inner.fmt_with(f, Prec::Not);
            }
            Expr::Or(items) => (Prec::Or, items, " or "),
            Expr::And(items) => (Prec::And, items, " and "),
        };
        let parenthesize = outer > own;
        if parenthesize {
            f.write_str("(")?;
        }
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                f.write_str(separator)?;
            }
            item.fmt_with(f, own)?;
        }
        if parenthesize {
            f.write_str(")")?;
        }
        Ok(())
    }

    fn collect_attributes<'a>(&'a self, keys: &mut BTreeSet<&'a str>) {
        match self {
            Expr::Or(items) | Expr::And(items) => {
                for item in items {
                    item.collect_attributes(keys);
                }
            }
            Expr::Not(inner) => inner.collect_attributes(keys),
            Expr::Leaf(leaf) => {
                if let Some(key) = leaf.attribute() {
                    keys.insert(key);
                }
            }
        }
    }

    fn push_sql(&self, alias: &str, qb: &mut QueryBuilder<Postgres>) {
        let (items, separator) = match self {
            // Three-valued logic would make `not` of a comparison with a missing attribute
            // NULL, so the contact would match neither `x` nor `not x`: each condition is made
            // two-valued first.
            Expr::Leaf(leaf) => {
                qb.push("coalesce(");
                leaf.push_sql(alias, qb);
                qb.push(", false)");
                return;
            }
            Expr::Not(inner) => {
                qb.push("(NOT ");
                inner.push_sql(alias, qb);
                qb.push(")");
                return;
            }
            Expr::Or(items) => (items, " OR "),
            Expr::And(items) => (items, " AND "),
        };
        qb.push("(");
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                qb.push(separator);
            }
            item.push_sql(alias, qb);
        }
        qb.push(")");
    }
}

impl Leaf {
    fn attribute(&self) -> Option<&str> {
        match self {
            Leaf::Number { key, .. } | Leaf::Bool { key, .. } | Leaf::NumberIn { key, .. } => {
                Some(key)
            }
            Leaf::Text {
                column: TextColumn::Attribute(key),
                ..
            }
            | Leaf::TextIn {
                column: TextColumn::Attribute(key),
                ..
            }
            | Leaf::Time {
                column: TimeColumn::Attribute(key),
                ..
            }
            | Leaf::Exists {
                field: Field::Attribute(key),
                ..
            } => Some(key),
            Leaf::Text { .. } | Leaf::TextIn { .. } | Leaf::Time { .. } | Leaf::Exists { .. } => {
                None
            }
        }
    }

    fn push_sql(&self, alias: &str, qb: &mut QueryBuilder<Postgres>) {
        match self {
            Leaf::Number { key, op, value } => {
                push_number_guard(alias, key, "", qb);
                qb.push("::numeric ")
                    .push(op.sql())
                    .push(" ")
                    .push_bind(value.as_str())
                    .push("::numeric ELSE false END)");
            }
            Leaf::Text { column, op, value } => {
                qb.push("(");
                column.push_sql(alias, qb);
                qb.push(" ")
                    .push(op.sql())
                    .push(" ")
                    .push_bind(value.as_str())
                    .push(")");
            }
            Leaf::Bool { key, equal, value } => {
                qb.push("((");
                push_attribute_json(alias, key, qb);
                qb.push(if *equal { ") = " } else { ") <> " })
                    .push("to_jsonb(")
                    .push_bind(*value)
                    .push("::boolean))");
            }
            Leaf::Time { column, op, value } => {
                qb.push("(");
                column.push_sql(alias, qb);
                qb.push(" ").push(op.sql()).push(" ");
                value.push_sql(qb);
                qb.push(")");
            }
            // A missing attribute makes `->>` NULL, so `not in` stays NULL (no match) for it.
            Leaf::TextIn {
                column,
                negated,
                values,
            } => {
                qb.push(if *negated { "(NOT (" } else { "(" });
                column.push_sql(alias, qb);
                qb.push(" = ANY(")
                    .push_bind(values.as_slice())
                    .push("::text[]))");
                if *negated {
                    qb.push(")");
                }
            }
            Leaf::NumberIn {
                key,
                negated,
                values,
            } => {
                push_number_guard(alias, key, if *negated { "NOT (" } else { "" }, qb);
                qb.push("::numeric = ANY(")
                    .push_bind(values.as_slice())
                    .push("::numeric[])");
                if *negated {
                    qb.push(")");
                }
                qb.push(" ELSE false END)");
            }
            Leaf::Exists { field, negated } => match field {
                Field::Attribute(key) => {
                    qb.push(if *negated { "(NOT (" } else { "(" })
                        .push(alias)
                        .push(".attributes ? ")
                        .push_bind(key.as_str())
                        .push(")");
                    if *negated {
                        qb.push(")");
                    }
                }
                Field::Address | Field::CreatedAt => {
                    qb.push(if *negated { "false" } else { "true" });
                }
            },
        }
    }
}

/// `alias.attributes -> $key`: the attribute as JSON.
fn push_attribute_json(alias: &str, key: &str, qb: &mut QueryBuilder<Postgres>) {
    qb.push(alias).push(".attributes -> ").push_bind(key);
}

/// `(alias.attributes ->> $key)`: the attribute as text, NULL when absent.
fn push_attribute_text(alias: &str, key: &str, qb: &mut QueryBuilder<Postgres>) {
    qb.push("(")
        .push(alias)
        .push(".attributes ->> ")
        .push_bind(key)
        .push(")");
}

/// Opens `(CASE WHEN <attribute is a JSON number> THEN <then_prefix>(<attribute as text>)`,
/// leaving the `::numeric` cast and the rest to the caller: the cast only runs on numbers, so
/// text such as `"n/a"` never reaches it and fails the query.
fn push_number_guard(
    alias: &str,
    key: &str,
    then_prefix: &'static str,
    qb: &mut QueryBuilder<Postgres>,
) {
    qb.push("(CASE WHEN jsonb_typeof(");
    push_attribute_json(alias, key, qb);
    qb.push(") = 'number' THEN ").push(then_prefix);
    push_attribute_text(alias, key, qb);
}

impl fmt::Display for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leaf::Number { key, op, value } => write!(f, "{key} {op} {value}"),
            Leaf::Text { column, op, value } => {
                write!(f, "{} {op} {}", column.name(), Quoted(value))
            }
            Leaf::Bool { key, equal, value } => {
                let op = if *equal { CmpOp::Eq } else { CmpOp::Ne };
                write!(f, "{key} {op} {value}")
            }
            Leaf::Time { column, op, value } => write!(f, "{} {op} {value}", column.name()),
            Leaf::TextIn {
                column,
                negated,
                values,
            } => {
                write_in(f, column.name(), *negated)?;
                write_list(f, values.iter().map(|value| Quoted(value)))
            }
            Leaf::NumberIn {
                key,
                negated,
                values,
            } => {
                write_in(f, key, *negated)?;
                write_list(f, values.iter())
            }
            Leaf::Exists { field, negated } => {
                let not = if *negated { "not " } else { "" };
                write!(f, "{} {not}exists", field.name())
            }
        }
    }
}

fn write_in(f: &mut fmt::Formatter<'_>, name: &str, negated: bool) -> fmt::Result {
    let not = if negated { "not " } else { "" };
    write!(f, "{name} {not}in ")
}

fn write_list<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    values: impl Iterator<Item = T>,
) -> fmt::Result {
    f.write_str("(")?;
    for (index, value) in values.enumerate() {
        if index > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{value}")?;
    }
    f.write_str(")")
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An identifier or keyword; which one depends on where it stands.
    Word(String),
    Number(String),
    Str(String),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
    End,
    /// Lexing stopped here. Kept as a token rather than returned at once so that a syntax
    /// error earlier in the filter is the one reported.
    Error(FilterError),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based character offset.
    pos: usize,
    /// The source text, for error messages.
    raw: String,
}

impl Token {
    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.tok, Tok::Word(word) if word.eq_ignore_ascii_case(keyword))
    }

    /// How an error message names this token.
    fn describe(&self) -> String {
        match &self.tok {
            Tok::End | Tok::Error(_) => "the end of the filter".to_owned(),
            _ => {
                const SHOWN: usize = 40;
                if self.raw.chars().count() > SHOWN {
                    let start: String = self.raw.chars().take(SHOWN).collect();
                    format!("`{start}…`")
                } else {
                    format!("`{}`", self.raw)
                }
            }
        }
    }
}

fn lex(chars: &[char]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let start = index;
        let result = lex_one(chars, &mut index);
        match result {
            Ok(None) => {}
            Ok(Some(tok)) => tokens.push(Token {
                tok,
                pos: start + 1,
                raw: chars[start..index].iter().collect(),
            }),
            Err(error) => {
                tokens.push(Token {
                    pos: error.position,
                    tok: Tok::Error(error),
                    raw: String::new(),
                });
                return tokens;
            }
        }
    }
    tokens.push(Token {
        tok: Tok::End,
        pos: chars.len() + 1,
        raw: String::new(),
    });
    tokens
}

/// Lexes the token starting at `*index` and moves past it; `None` for whitespace.
fn lex_one(chars: &[char], index: &mut usize) -> Result<Option<Tok>, FilterError> {
    let start = *index;
    let at = |i: usize| chars.get(i).copied();
    let take_while = |mut i: usize, accept: fn(char) -> bool| {
        while chars.get(i).is_some_and(|&c| accept(c)) {
            i += 1;
        }
        i
    };
    let first = chars[start];
    *index += 1;
    let tok = match first {
        c if c.is_whitespace() => return Ok(None),
        '(' => Tok::LParen,
        ')' => Tok::RParen,
        ',' => Tok::Comma,
        '\'' => {
            let mut text = String::new();
            loop {
                match at(*index) {
                    None => return Err(FilterError::new(start + 1, "unterminated string")),
                    Some('\'') if at(*index + 1) == Some('\'') => {
                        text.push('\'');
                        *index += 2;
                    }
                    Some('\'') => {
                        *index += 1;
                        break;
                    }
                    // PostgreSQL text cannot hold it: the query would fail, not the parse.
                    Some('\0') => {
                        return Err(FilterError::new(
                            *index + 1,
                            "strings cannot contain the NUL character",
                        ));
                    }
                    Some(c) => {
                        text.push(c);
                        *index += 1;
                    }
                }
            }
            Tok::Str(text)
        }
        '=' | '!' | '<' | '>' => {
            *index = take_while(*index, |c| matches!(c, '=' | '!' | '<' | '>'));
            let op: String = chars[start..*index].iter().collect();
            Tok::Op(match op.as_str() {
                "=" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                _ => {
                    let hint = match op.as_str() {
                        "==" => "; use `=`",
                        "<>" => "; use `!=`",
                        "=>" => "; did you mean `>=`?",
                        "=<" => "; did you mean `<=`?",
                        _ => "",
                    };
                    return Err(FilterError::new(
                        start + 1,
                        format!("unknown operator `{op}`{hint}"),
                    ));
                }
            })
        }
        '-' | '0'..='9' => {
            if first == '-' && !at(*index).is_some_and(|c| c.is_ascii_digit()) {
                return Err(FilterError::new(start + 1, "expected a digit after `-`"));
            }
            *index = take_while(*index, |c| c.is_ascii_digit());
            let mut valid = true;
            if at(*index) == Some('.') {
                let fraction = take_while(*index + 1, |c| c.is_ascii_digit());
                valid = fraction > *index + 1;
                *index = fraction;
            }
            let end = take_while(*index, |c| c.is_alphanumeric() || c == '_' || c == '.');
            if !valid || end > *index {
                let raw: String = chars[start..end].iter().collect();
                return Err(FilterError::new(
                    start + 1,
                    format!("invalid number `{raw}`"),
                ));
            }
            Tok::Number(chars[start..*index].iter().collect())
        }
        'a'..='z' | 'A'..='Z' | '_' => {
            *index = take_while(*index, |c| c.is_ascii_alphanumeric() || c == '_');
            if *index - start > MAX_NAME_LEN {
                return Err(FilterError::new(
                    start + 1,
                    format!("name is longer than {MAX_NAME_LEN} characters"),
                ));
            }
            Tok::Word(chars[start..*index].iter().collect())
        }
        '"' => {
            return Err(FilterError::new(
                start + 1,
                "unexpected character `\"`: strings are written in single quotes, and names \
                 may only contain letters, digits and `_`",
            ));
        }
        other => {
            return Err(FilterError::new(
                start + 1,
                if other == '`' {
                    "unexpected character '`'".to_owned()
                } else {
                    format!("unexpected character `{}`", other.escape_debug())
                },
            ));
        }
    };
    Ok(Some(tok))
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    /// Never empty: ends with `Tok::End` or `Tok::Error`, which `advance` never moves past.
    tokens: Vec<Token>,
    index: usize,
    depth: usize,
    comparisons: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.index]
    }

    fn peek_ahead(&self, offset: usize) -> &Token {
        &self.tokens[(self.index + offset).min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.index].clone();
        if self.index + 1 < self.tokens.len() {
            self.index += 1;
        }
        token
    }

    /// The error for the current token not being `what`. A lexing error there wins: it says
    /// more than "found the end of the filter".
    fn expected(&self, what: &str) -> FilterError {
        let found = self.peek();
        if let Tok::Error(error) = &found.tok {
            return error.clone();
        }
        let mut message = format!("expected {what}");
        if let Some(previous) = self.index.checked_sub(1).map(|i| &self.tokens[i]) {
            message.push_str(&format!(" after {}", previous.describe()));
        }
        if found.tok != Tok::End {
            message.push_str(&format!(", found {}", found.describe()));
        }
        FilterError::new(found.pos, message)
    }

    fn enter(&mut self, token: &Token) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::new(
                token.pos,
                format!("filter is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expr, FilterError> {
        let mut items = vec![self.parse_and()?];
        while self.peek().is_keyword("or") {
            self.advance();
            items.push(self.parse_and()?);
        }
        Ok(Expr::or(items))
    }

    fn parse_and(&mut self) -> Result<Expr, FilterError> {
        let mut items = vec![self.parse_unary()?];
        while self.peek().is_keyword("and") {
            self.advance();
            items.push(self.parse_unary()?);
        }
        Ok(Expr::and(items))
    }

    fn parse_unary(&mut self) -> Result<Expr, FilterError> {
        let token = self.peek().clone();
        if token.is_keyword("not") {
            self.enter(&token)?;
            self.advance();
            let inner = self.parse_unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if token.tok == Tok::LParen {
            self.enter(&token)?;
            self.advance();
            let inner = self.parse_or()?;
            let close = self.peek();
            match close.tok {
                Tok::RParen => {
                    self.advance();
                }
                Tok::End => {
                    return Err(FilterError::new(
                        close.pos,
                        format!("missing `)` to close the `(` at character {}", token.pos),
                    ));
                }
                _ => return Err(self.expected("`and`, `or` or `)`")),
            }
            self.depth -= 1;
            return Ok(inner);
        }
        self.parse_condition().map(Expr::Leaf)
    }

    fn parse_condition(&mut self) -> Result<Leaf, FilterError> {
        let token = self.peek().clone();
        let name = match &token.tok {
            Tok::Word(word)
                if !["and", "or", "not"]
                    .iter()
                    .any(|keyword| word.eq_ignore_ascii_case(keyword)) =>
            {
                word.clone()
            }
            _ => return Err(self.expected("a field name")),
        };
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(FilterError::new(
                token.pos,
                format!("filter has more than {MAX_COMPARISONS} comparisons"),
            ));
        }
        self.advance();
        let field = Field::from_name(name);
        let op_token = self.peek().clone();
        match &op_token.tok {
            Tok::Op(op) => {
                self.advance();
                let (value, value_pos) = self.parse_value()?;
                compare(field, *op, op_token.pos, value, value_pos)
            }
            _ if op_token.is_keyword("in") => {
                self.advance();
                self.parse_list(field, false, &op_token)
            }
            _ if op_token.is_keyword("exists") => {
                self.advance();
                Ok(Leaf::Exists {
                    field,
                    negated: false,
                })
            }
            _ if op_token.is_keyword("not") => {
                self.advance();
                let next = self.peek().clone();
                if next.is_keyword("in") {
                    self.advance();
                    self.parse_list(field, true, &next)
                } else if next.is_keyword("exists") {
                    self.advance();
                    Ok(Leaf::Exists {
                        field,
                        negated: true,
                    })
                } else {
                    Err(self.expected("`in` or `exists`"))
                }
            }
            _ => {
                Err(self
                    .expected("an operator (`=`, `!=`, `<`, `<=`, `>`, `>=`, `in` or `exists`)"))
            }
        }
    }

    /// Parses a value and returns it with its position.
    fn parse_value(&mut self) -> Result<(Value, usize), FilterError> {
        let token = self.peek().clone();
        let value = match &token.tok {
            Tok::Number(number) => {
                self.advance();
                self.parse_relative(number, &token)?
            }
            Tok::Str(text) => {
                self.advance();
                Value::Text(text.clone())
            }
            Tok::Word(_) if token.is_keyword("true") || token.is_keyword("false") => {
                self.advance();
                Value::Bool(token.is_keyword("true"))
            }
            Tok::Word(_) if token.is_keyword("now") => {
                self.advance();
                Value::Time(Time::Now)
            }
            Tok::Word(_) if token.is_keyword("date") => {
                self.advance();
                let literal = self.peek().clone();
                let Tok::Str(text) = &literal.tok else {
                    let mut error = self.expected("a date in quotes");
                    if !matches!(literal.tok, Tok::Error(_)) {
                        error.message.push_str("; for example date '2025-01-31'");
                    }
                    return Err(error);
                };
                self.advance();
                let at = parse_datetime(text).ok_or_else(|| {
                    FilterError::new(
                        literal.pos,
                        format!(
                            "invalid date {}: write date 'YYYY-MM-DD' or date \
                             'YYYY-MM-DDTHH:MM:SSZ'",
                            Quoted(text)
                        ),
                    )
                })?;
                Value::Time(Time::Date {
                    text: text.clone(),
                    at,
                })
            }
            Tok::Word(word) => {
                let mut error = self.expected("a value");
                error.message.push_str(&format!(
                    "; text values are written in single quotes: {}",
                    Quoted(word)
                ));
                return Err(error);
            }
            _ => return Err(self.expected("a value")),
        };
        Ok((value, token.pos))
    }

    /// Having just read `number`, reads `<unit> ago` after it if there is one.
    fn parse_relative(&mut self, number: &str, token: &Token) -> Result<Value, FilterError> {
        let unit_token = self.peek().clone();
        let Tok::Word(word) = &unit_token.tok else {
            return Ok(Value::Number(number.to_owned()));
        };
        let Some(unit) = Unit::from_word(word) else {
            if self.peek_ahead(1).is_keyword("ago") {
                return Err(FilterError::new(
                    unit_token.pos,
                    format!("unknown time unit `{word}`; use minutes, hours, days or weeks"),
                ));
            }
            return Ok(Value::Number(number.to_owned()));
        };
        self.advance();
        if !self.peek().is_keyword("ago") {
            return Err(self.expected("`ago`"));
        }
        self.advance();
        let amount = number
            .parse::<i32>()
            .ok()
            .filter(|amount| (0..=MAX_RELATIVE).contains(amount) && !number.starts_with('-'))
            .ok_or_else(|| {
                FilterError::new(
                    token.pos,
                    format!(
                        "the number of {} must be a whole number from 0 to {MAX_RELATIVE}, \
                         found `{number}`",
                        unit.plural()
                    ),
                )
            })?;
        Ok(Value::Time(Time::Ago { amount, unit }))
    }

    /// Parses `(v1, v2, ...)` after `in` (the `in_token`).
    fn parse_list(
        &mut self,
        field: Field,
        negated: bool,
        in_token: &Token,
    ) -> Result<Leaf, FilterError> {
        if field == Field::CreatedAt {
            return Err(FilterError::new(
                in_token.pos,
                "`in` cannot be used with `created_at`; compare it with `<`, `>` and the like",
            ));
        }
        let open = self.peek().clone();
        if open.tok != Tok::LParen {
            return Err(self.expected("`(`"));
        }
        self.advance();
        let mut texts = Vec::new();
        let mut numbers = Vec::new();
        let mut first: Option<(&'static str, usize)> = None;
        loop {
            if texts.len() + numbers.len() == MAX_LIST_LEN {
                return Err(FilterError::new(
                    self.peek().pos,
                    format!("a list may hold at most {MAX_LIST_LEN} values"),
                ));
            }
            let (value, pos) = self.parse_value()?;
            let kind = value.kind();
            if let Some((first_kind, _)) = first
                && first_kind != kind
                && matches!(value, Value::Text(_) | Value::Number(_))
            {
                return Err(FilterError::new(
                    pos,
                    format!(
                        "all values in a list must have the same type: expected {first_kind}, \
                         found {kind}"
                    ),
                ));
            }
            match value {
                Value::Text(text) => texts.push(text),
                Value::Number(number) => numbers.push(number),
                other => {
                    return Err(FilterError::new(
                        pos,
                        format!(
                            "`in` lists may only hold strings or numbers, not {}",
                            other.kind()
                        ),
                    ));
                }
            }
            first.get_or_insert((kind, pos));
            let separator = self.peek();
            match separator.tok {
                Tok::Comma => {
                    self.advance();
                }
                Tok::RParen => {
                    self.advance();
                    break;
                }
                Tok::End => {
                    return Err(FilterError::new(
                        separator.pos,
                        format!(
                            "missing `)` to close the list opened at character {}",
                            open.pos
                        ),
                    ));
                }
                _ => return Err(self.expected("`,` or `)`")),
            }
        }
        match field {
            Field::Attribute(key) if texts.is_empty() => Ok(Leaf::NumberIn {
                key,
                negated,
                values: numbers,
            }),
            Field::Attribute(key) => Ok(Leaf::TextIn {
                column: TextColumn::Attribute(key),
                negated,
                values: texts,
            }),
            Field::Address if numbers.is_empty() => Ok(Leaf::TextIn {
                column: TextColumn::Address,
                negated,
                values: texts,
            }),
            Field::Address | Field::CreatedAt => {
                let (kind, pos) = first.unwrap_or(("a number", open.pos));
                Err(FilterError::new(
                    pos,
                    format!(
                        "`{}` is text and cannot be compared with {kind}; use a quoted string",
                        field.name()
                    ),
                ))
            }
        }
    }
}

/// Checks `field op value` for type sense and builds its condition.
fn compare(
    field: Field,
    op: CmpOp,
    op_pos: usize,
    value: Value,
    value_pos: usize,
) -> Result<Leaf, FilterError> {
    match (field, value) {
        (Field::Attribute(key), Value::Number(value)) => Ok(Leaf::Number { key, op, value }),
        (Field::Attribute(key), Value::Text(value)) => Ok(Leaf::Text {
            column: TextColumn::Attribute(key),
            op,
            value,
        }),
        (Field::Address, Value::Text(value)) => Ok(Leaf::Text {
            column: TextColumn::Address,
            op,
            value,
        }),
        (Field::Attribute(key), Value::Bool(value)) => match op {
            CmpOp::Eq | CmpOp::Ne => Ok(Leaf::Bool {
                key,
                equal: op == CmpOp::Eq,
                value,
            }),
            _ => Err(FilterError::new(
                op_pos,
                format!("`{op}` cannot compare a boolean; use `=` or `!=`"),
            )),
        },
        (Field::Attribute(key), Value::Time(value)) => Ok(Leaf::Time {
            column: TimeColumn::Attribute(key),
            op,
            value,
        }),
        (Field::CreatedAt, Value::Time(value)) => Ok(Leaf::Time {
            column: TimeColumn::CreatedAt,
            op,
            value,
        }),
        (Field::Address, other) => Err(FilterError::new(
            value_pos,
            format!(
                "`address` is text and cannot be compared with {}; use a quoted string",
                other.kind()
            ),
        )),
        (Field::CreatedAt, other) => Err(FilterError::new(
            value_pos,
            format!(
                "`created_at` is a time and cannot be compared with {}; use date '2025-01-31', \
                 N days ago or now",
                other.kind()
            ),
        )),
    }
}

/// Accepts `YYYY-MM-DD` (midnight UTC), RFC 3339 with a zone, and `YYYY-MM-DDTHH:MM[:SS[.f]]`
/// without one (UTC).
fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    // chrono's `%Y` also takes signed and five-digit years, which PostgreSQL and most tenants
    // would read differently: insist on the usual shape.
    let bytes = text.as_bytes();
    let shaped = bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shaped {
        return None;
    }
    if text.len() == 10 {
        return NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .map(|midnight| midnight.and_utc());
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|at| at.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Filter {
        match Filter::parse(text) {
            Ok(filter) => filter,
            Err(error) => panic!("{text:?} should parse, got: {error}"),
        }
    }

    fn error(text: &str) -> (usize, String) {
        match Filter::parse(text) {
            Ok(filter) => panic!("{text:?} should not parse, got {filter:?}"),
            Err(error) => (error.position, error.message),
        }
    }

    /// Asserts the error's position and that its message contains `part`.
    fn assert_error(text: &str, position: usize, part: &str) {
        let (at, message) = error(text);
        assert!(
            message.contains(part),
            "{text:?}: message {message:?} should contain {part:?}"
        );
        assert_eq!(at, position, "{text:?}: position of {message:?}");
    }

    fn sql_of(filter: &Filter) -> String {
        let mut qb = QueryBuilder::<Postgres>::new("");
        filter.push_sql("c", &mut qb);
        qb.sql().as_str().to_owned()
    }

    fn sql(text: &str) -> String {
        sql_of(&parse(text))
    }

    /// The tree, fully parenthesized, to check grouping.
    fn tree(text: &str) -> String {
        fn walk(expr: &Expr) -> String {
            match expr {
                Expr::Leaf(leaf) => format!("[{leaf}]"),
                Expr::Not(inner) => format!("(not {})", walk(inner)),
                Expr::And(items) | Expr::Or(items) => {
                    let name = if matches!(expr, Expr::And(_)) {
                        "and"
                    } else {
                        "or"
                    };
                    let inner: Vec<String> = items.iter().map(walk).collect();
                    format!("({name} {})", inner.join(" "))
                }
            }
        }
        walk(&parse(text).root)
    }

    fn leaf(text: &str) -> Leaf {
        match parse(text).root {
            Expr::Leaf(leaf) => leaf,
            other => panic!("{text:?} is not a single condition: {other:?}"),
        }
    }

    const NUMBER_GT: &str = "(CASE WHEN jsonb_typeof(c.attributes -> $1) = 'number' \
        THEN (c.attributes ->> $2)::numeric > $3::numeric ELSE false END)";

    // ---- SQL of each kind of condition

    #[test]
    fn number_comparison_sql() {
        assert_eq!(sql("age > 30"), format!("coalesce({NUMBER_GT}, false)"));
        assert_eq!(
            leaf("balance <= -12.50"),
            Leaf::Number {
                key: "balance".into(),
                op: CmpOp::Le,
                value: "-12.50".into()
            }
        );
    }

    #[test]
    fn every_operator_maps_to_sql() {
        for (op, sql_op) in [
            ("=", "="),
            ("!=", "<>"),
            ("<", "<"),
            ("<=", "<="),
            (">", ">"),
            (">=", ">="),
        ] {
            assert_eq!(
                sql(&format!("name {op} 'x'")),
                format!("coalesce(((c.attributes ->> $1) {sql_op} $2), false)")
            );
            assert_eq!(
                sql(&format!("created_at{op}now")),
                format!("coalesce((c.created_at {sql_op} now()), false)")
            );
        }
    }

    #[test]
    fn example_from_docs() {
        assert_eq!(
            sql("lifetime_value > 10000 and last_purchase > 365 days ago"),
            "(coalesce((CASE WHEN jsonb_typeof(c.attributes -> $1) = 'number' \
             THEN (c.attributes ->> $2)::numeric > $3::numeric ELSE false END), false) \
             AND coalesce((herald_try_timestamptz((c.attributes ->> $4)) > \
             (now() - make_interval(days => $5))), false))"
        );
    }

    #[test]
    fn string_comparison_sql_and_escaped_quotes() {
        assert_eq!(
            sql("name = 'O''Brien'"),
            "coalesce(((c.attributes ->> $1) = $2), false)"
        );
        assert_eq!(
            leaf("name = 'O''Brien'"),
            Leaf::Text {
                column: TextColumn::Attribute("name".into()),
                op: CmpOp::Eq,
                value: "O'Brien".into()
            }
        );
        assert_eq!(
            leaf("name = ''''"),
            Leaf::Text {
                column: TextColumn::Attribute("name".into()),
                op: CmpOp::Eq,
                value: "'".into()
            }
        );
        assert_eq!(
            leaf("name = ''"),
            Leaf::Text {
                column: TextColumn::Attribute("name".into()),
                op: CmpOp::Eq,
                value: String::new()
            }
        );
        assert_eq!(
            leaf("city = 'Zürich (ZH), \"CH\"'"),
            Leaf::Text {
                column: TextColumn::Attribute("city".into()),
                op: CmpOp::Eq,
                value: "Zürich (ZH), \"CH\"".into()
            }
        );
    }

    #[test]
    fn address_is_a_text_column() {
        assert_eq!(sql("address >= 'm'"), "coalesce((c.address >= $1), false)");
        assert_eq!(
            sql("address in ('a@x.io', 'b@x.io')"),
            "coalesce((c.address = ANY($1::text[])), false)"
        );
        assert_eq!(
            sql("address not in ('a@x.io')"),
            "coalesce((NOT (c.address = ANY($1::text[]))), false)"
        );
        assert!(parse("address exists").attributes().is_empty());
    }

    #[test]
    fn boolean_sql() {
        assert_eq!(
            sql("vip = true"),
            "coalesce(((c.attributes -> $1) = to_jsonb($2::boolean)), false)"
        );
        assert_eq!(
            sql("vip != FALSE"),
            "coalesce(((c.attributes -> $1) <> to_jsonb($2::boolean)), false)"
        );
        assert_eq!(
            leaf("vip != false"),
            Leaf::Bool {
                key: "vip".into(),
                equal: false,
                value: false
            }
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            sql("renewal >= date '2025-01-31'"),
            "coalesce((herald_try_timestamptz((c.attributes ->> $1)) >= $2::timestamptz), false)"
        );
        assert_eq!(
            sql("created_at < DATE '2025-01-31T10:00:00Z'"),
            "coalesce((c.created_at < $1::timestamptz), false)"
        );
        let at = |text: &str| match leaf(&format!("d = date '{text}'")) {
            Leaf::Time {
                value: Time::Date { at, .. },
                ..
            } => at.to_rfc3339(),
            other => panic!("{other:?}"),
        };
        assert_eq!(at("2025-01-31"), "2025-01-31T00:00:00+00:00");
        assert_eq!(at("2025-01-31T10:00:00Z"), "2025-01-31T10:00:00+00:00");
        assert_eq!(at("2025-01-31T10:00:00+02:00"), "2025-01-31T08:00:00+00:00");
        assert_eq!(
            at("2025-01-31T10:00:00.250Z"),
            "2025-01-31T10:00:00.250+00:00"
        );
        assert_eq!(at("2025-01-31T10:00:00"), "2025-01-31T10:00:00+00:00");
        assert_eq!(at("2025-01-31T10:00"), "2025-01-31T10:00:00+00:00");
        assert_eq!(at("2024-02-29"), "2024-02-29T00:00:00+00:00");
    }

    #[test]
    fn invalid_dates() {
        for bad in [
            "2025-02-30",
            "2025-13-01",
            "2025-1-5",
            "25-01-01",
            "+2025-01-01",
            "20250-01-01",
            "2025-01-31T25:00:00Z",
            "2025-01-31 junk",
            "yesterday",
            "",
        ] {
            assert_error(&format!("d > date '{bad}'"), 10, "invalid date");
        }
        assert_error("d > date 5", 10, "expected a date in quotes");
        assert_error(
            "d > date",
            9,
            "expected a date in quotes after `date`; for example date '2025-01-31'",
        );
    }

    #[test]
    fn relative_times() {
        for (text, unit, argument) in [
            ("5 minutes ago", Unit::Minutes, "mins"),
            ("1 minute ago", Unit::Minutes, "mins"),
            ("2 HOURS Ago", Unit::Hours, "hours"),
            ("1 hour ago", Unit::Hours, "hours"),
            ("30 days ago", Unit::Days, "days"),
            ("1 Day ago", Unit::Days, "days"),
            ("3 weeks ago", Unit::Weeks, "weeks"),
            ("1 week ago", Unit::Weeks, "weeks"),
        ] {
            let filter = parse(&format!("created_at > {text}"));
            let Expr::Leaf(Leaf::Time {
                value: Time::Ago { unit: got, .. },
                ..
            }) = &filter.root
            else {
                panic!("{text}: {filter:?}");
            };
            assert_eq!(*got, unit, "{text}");
            assert_eq!(
                sql_of(&filter),
                format!(
                    "coalesce((c.created_at > (now() - make_interval({argument} => $1))), false)"
                )
            );
        }
        assert_eq!(
            leaf("seen > 0 days ago"),
            Leaf::Time {
                column: TimeColumn::Attribute("seen".into()),
                op: CmpOp::Gt,
                value: Time::Ago {
                    amount: 0,
                    unit: Unit::Days
                }
            }
        );
        parse("seen > 100000 weeks ago");
        parse("seen > 007 days ago");
    }

    #[test]
    fn relative_time_errors() {
        assert_error(
            "seen > 100001 days ago",
            8,
            "from 0 to 100000, found `100001`",
        );
        assert_error("seen > 99999999999999 days ago", 8, "whole number");
        assert_error(
            "seen > -1 days ago",
            8,
            "the number of days must be a whole number",
        );
        assert_error("seen > 1.5 hours ago", 8, "the number of hours");
        assert_error("seen > 5 days", 14, "expected `ago` after `days`");
        assert_error(
            "seen > 5 days and x = 1",
            15,
            "expected `ago` after `days`, found `and`",
        );
        assert_error("seen > 5 months ago", 10, "unknown time unit `months`");
    }

    #[test]
    fn now() {
        assert_eq!(
            sql("renewal < NOW"),
            "coalesce((herald_try_timestamptz((c.attributes ->> $1)) < now()), false)"
        );
    }

    #[test]
    fn in_lists() {
        assert_eq!(
            sql("plan in ('gold', 'platinum')"),
            "coalesce(((c.attributes ->> $1) = ANY($2::text[])), false)"
        );
        assert_eq!(
            sql("plan NOT IN ('free')"),
            "coalesce((NOT ((c.attributes ->> $1) = ANY($2::text[]))), false)"
        );
        assert_eq!(
            sql("score in (1, 2.5, -3)"),
            "coalesce((CASE WHEN jsonb_typeof(c.attributes -> $1) = 'number' \
             THEN (c.attributes ->> $2)::numeric = ANY($3::numeric[]) ELSE false END), false)"
        );
        assert_eq!(
            sql("score not in (1)"),
            "coalesce((CASE WHEN jsonb_typeof(c.attributes -> $1) = 'number' \
             THEN NOT ((c.attributes ->> $2)::numeric = ANY($3::numeric[])) ELSE false END), \
             false)"
        );
        assert_eq!(
            leaf("score in (1, 2.5, -3)"),
            Leaf::NumberIn {
                key: "score".into(),
                negated: false,
                values: vec!["1".into(), "2.5".into(), "-3".into()]
            }
        );
    }

    #[test]
    fn list_limits() {
        let list = |n: usize| {
            let values: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            format!("n in ({})", values.join(","))
        };
        match leaf(&list(MAX_LIST_LEN)) {
            Leaf::NumberIn { values, .. } => assert_eq!(values.len(), MAX_LIST_LEN),
            other => panic!("{other:?}"),
        }
        let too_long = list(MAX_LIST_LEN + 1);
        let position = too_long.rfind(',').unwrap_or(0) + 2;
        assert_error(&too_long, position, "at most 1000 values");
    }

    #[test]
    fn list_errors() {
        assert_error("plan in ()", 10, "expected a value after `(`, found `)`");
        assert_error(
            "plan in ('a', 1)",
            15,
            "same type: expected a string, found a number",
        );
        assert_error(
            "plan in (1, 'a')",
            13,
            "same type: expected a number, found a string",
        );
        assert_error(
            "plan in (true)",
            10,
            "only hold strings or numbers, not a boolean",
        );
        assert_error("plan in (now)", 10, "not `now`");
        assert_error("plan in ('a', 1 days ago)", 15, "not a relative time");
        assert_error(
            "plan in ('a',)",
            14,
            "expected a value after `,`, found `)`",
        );
        assert_error(
            "plan in ('a' 'b')",
            14,
            "expected `,` or `)` after `'a'`, found `'b'`",
        );
        assert_error(
            "plan in ('a'",
            13,
            "missing `)` to close the list opened at character 9",
        );
        assert_error("plan in 'a'", 9, "expected `(` after `in`");
        assert_error("plan not in", 12, "expected `(` after `in`");
        assert_error(
            "created_at in (1)",
            12,
            "`in` cannot be used with `created_at`",
        );
        assert_error(
            "address in ('a', 'b')  or address not in (1)",
            43,
            "`address` is text",
        );
    }

    #[test]
    fn exists() {
        assert_eq!(sql("phone exists"), "coalesce((c.attributes ? $1), false)");
        assert_eq!(
            sql("phone NOT EXISTS"),
            "coalesce((NOT (c.attributes ? $1)), false)"
        );
        assert_eq!(sql("address exists"), "coalesce(true, false)");
        assert_eq!(sql("created_at not exists"), "coalesce(false, false)");
        assert_error("phone not", 10, "expected `in` or `exists` after `not`");
        assert_error(
            "phone not = 1",
            11,
            "expected `in` or `exists` after `not`, found `=`",
        );
    }

    // ---- structure

    #[test]
    fn precedence_not_and_or() {
        assert_eq!(
            tree("a = 1 or b = 2 and c = 3"),
            "(or [a = 1] (and [b = 2] [c = 3]))"
        );
        assert_eq!(
            tree("a = 1 and b = 2 or c = 3"),
            "(or (and [a = 1] [b = 2]) [c = 3])"
        );
        assert_eq!(tree("not a = 1 and b = 2"), "(and (not [a = 1]) [b = 2])");
        assert_eq!(
            tree("not a = 1 or not b = 2 and c = 3"),
            "(or (not [a = 1]) (and (not [b = 2]) [c = 3]))"
        );
        assert_eq!(tree("not not a = 1"), "(not (not [a = 1]))");
    }

    #[test]
    fn parentheses_group() {
        assert_eq!(
            tree("(a = 1 or b = 2) and c = 3"),
            "(and (or [a = 1] [b = 2]) [c = 3])"
        );
        assert_eq!(tree("not (a = 1 and b = 2)"), "(not (and [a = 1] [b = 2]))");
        assert_eq!(tree("((((a = 1))))"), "[a = 1]");
        // Same operator nested in parentheses: flattened, the meaning is the same.
        assert_eq!(
            tree("a = 1 and (b = 2 and c = 3) and d = 4"),
            "(and [a = 1] [b = 2] [c = 3] [d = 4])"
        );
        assert_eq!(
            tree("(a = 1 or b = 2) or (c = 3 or d = 4)"),
            "(or [a = 1] [b = 2] [c = 3] [d = 4])"
        );
    }

    #[test]
    fn sql_of_combinations_is_parenthesized() {
        assert_eq!(
            sql("a = 'x' or b = 'y' and not c = 'z'"),
            "(coalesce(((c.attributes ->> $1) = $2), false) OR \
             (coalesce(((c.attributes ->> $3) = $4), false) AND \
             (NOT coalesce(((c.attributes ->> $5) = $6), false))))"
        );
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(
            parse("a = TRUE AND b IN ('x') Or NOT c Exists and d > Date '2025-01-01'"),
            parse("a = true and b in ('x') or not c exists and d > date '2025-01-01'")
        );
        assert_eq!(
            parse("s < 5 DAYS AGO and t < Now"),
            parse("s < 5 days ago and t < now")
        );
    }

    #[test]
    fn field_names() {
        let name = "a".repeat(MAX_NAME_LEN);
        assert_eq!(parse(&format!("{name} exists")).attributes(), vec![name]);
        assert_error(
            &format!("x = 1 or {} exists", "b".repeat(MAX_NAME_LEN + 1)),
            10,
            "longer than 64 characters",
        );
        assert_eq!(
            parse("_x9 = 1 and Plan_2 = 'a'").attributes(),
            ["Plan_2", "_x9"]
        );
        // Only the exact lowercase spelling is the built-in column.
        assert_eq!(parse("Address = 'x'").attributes(), ["Address"]);
        // Words that are keywords only as values can name attributes.
        assert_eq!(
            parse("date > now and true = 1 and in exists and days = 'x'").attributes(),
            ["date", "days", "in", "true"]
        );
        assert_error("and = 1", 1, "expected a field name, found `and`");
        assert_error(
            "x = 1 and or = 2",
            11,
            "expected a field name after `and`, found `or`",
        );
        assert_error("9a = 1", 1, "invalid number `9a`");
    }

    #[test]
    fn attributes_lists_each_attribute_once() {
        let filter = parse(
            "z = 1 or a in ('x') and not m exists or a = 2 and address = 'q' and \
             created_at > now and d < 3 days ago and b = true and n not in (1) and y != 'w'",
        );
        assert_eq!(filter.attributes(), ["a", "b", "d", "m", "n", "y", "z"]);
    }

    #[test]
    fn whitespace_is_free() {
        assert_eq!(parse("a>=1 and(b='x')"), parse("a >= 1 and ( b = 'x' )"));
        assert_eq!(parse("\n\ta\t=\r\n1 "), parse("a = 1"));
        assert_eq!(parse("a in(1,2)"), parse("a in ( 1 , 2 )"));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "age > 30",
            "balance <= -12.50",
            "name = 'O''Brien'",
            "vip != true",
            "a = 1 or b = 2 and c = 3",
            "(a = 1 or b = 2) and not (c = 3 or d exists)",
            "not not x not exists",
            "plan not in ('a', 'b''c') and score in (1, 2.5)",
            "created_at >= date '2025-01-31T10:00:00+02:00' and seen < 1 day ago",
            "seen < 7 weeks ago or t > now or address < 'm'",
        ] {
            let filter = parse(text);
            let shown = filter.to_string();
            assert_eq!(parse(&shown), filter, "{text:?} displayed as {shown:?}");
        }
        assert_eq!(
            parse("(A=1 OR b=2) AND NOT (c='x')").to_string(),
            "(A = 1 or b = 2) and not c = 'x'"
        );
        assert_eq!(
            parse("not (a = 1 and b = 2)").to_string(),
            "not (a = 1 and b = 2)"
        );
        assert_eq!(parse("s > 1 DAYS ago").to_string(), "s > 1 day ago");
        assert_eq!("x exists".parse::<Filter>(), Ok(parse("x exists")));
    }

    #[test]
    fn placeholders_continue_after_earlier_binds() {
        let filter = parse("a = 'x' and b in (1, 2)");
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT c.id FROM contacts c WHERE c.tenant_id = ");
        qb.push_bind(7_i64).push(" AND ");
        filter.push_sql("c", &mut qb);
        let sql = qb.sql().as_str().to_owned();
        assert!(sql.contains("(c.attributes ->> $2) = $3"), "{sql}");
        assert!(sql.contains("ANY($6::numeric[])"), "{sql}");
    }

    #[test]
    fn alias_is_used_for_every_column() {
        let filter = parse("a = 1 and address = 'x' and created_at < now and b exists");
        let mut qb = QueryBuilder::<Postgres>::new("");
        filter.push_sql("contact_row", &mut qb);
        let sql = qb.sql().as_str().to_owned();
        assert!(!sql.contains("c."), "{sql}");
        assert_eq!(sql.matches("contact_row.").count(), 5, "{sql}");
    }

    #[test]
    #[should_panic(expected = "table alias must match")]
    fn alias_must_be_a_plain_identifier() {
        let mut qb = QueryBuilder::<Postgres>::new("");
        parse("a = 1").push_sql("c; DROP TABLE contacts", &mut qb);
    }

    #[test]
    #[should_panic(expected = "table alias must match")]
    fn alias_must_not_be_empty() {
        let mut qb = QueryBuilder::<Postgres>::new("");
        parse("a = 1").push_sql("", &mut qb);
    }

    // ---- errors

    #[test]
    fn empty_filters() {
        assert_error("", 1, "filter is empty");
        assert_error("  \n\t ", 1, "filter is empty");
    }

    #[test]
    fn length_limit() {
        let filler = |bytes: usize| format!("a = '{}'", "x".repeat(bytes - 6));
        assert_eq!(filler(MAX_FILTER_LEN).len(), MAX_FILTER_LEN);
        parse(&filler(MAX_FILTER_LEN));
        assert_error(
            &filler(MAX_FILTER_LEN + 1),
            MAX_FILTER_LEN + 1,
            "longer than 4096 bytes",
        );
        // Positions count characters: 5 one-byte characters, then two-byte ones: the
        // 2,051st character ends past byte 4,096.
        let wide = format!("a = '{}'", "é".repeat(2100));
        assert_error(&wide, 2051, "longer than 4096 bytes");
    }

    #[test]
    fn depth_limit() {
        let nested = |levels: usize| format!("{}a = 1{}", "(".repeat(levels), ")".repeat(levels));
        parse(&nested(MAX_DEPTH));
        assert_error(
            &nested(MAX_DEPTH + 1),
            33,
            "filter is nested more than 32 levels deep",
        );
        parse(&format!("{}a = 1", "not ".repeat(MAX_DEPTH)));
        assert_error(
            &format!("{}a = 1", "not ".repeat(MAX_DEPTH + 1)),
            129,
            "nested more than 32 levels",
        );
        // Levels are counted along one path, not in total.
        let siblings = vec![nested(MAX_DEPTH); 3].join(" or ");
        parse(&siblings);
        // A deep flood, far past the limit, is rejected without exhausting the stack.
        assert_error(&"(".repeat(4000), 33, "nested more than 32 levels");
        assert_error(&"not ".repeat(1000), 129, "nested more than 32 levels");
    }

    #[test]
    fn comparison_limit() {
        let conditions = |n: usize| {
            (0..n)
                .map(|i| format!("a{i:03} = 1"))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        assert_eq!(parse(&conditions(MAX_COMPARISONS)).attributes().len(), 100);
        // Each condition is `aNNN = 1 or ` (12 characters): the 101st starts at 1201.
        assert_error(
            &conditions(MAX_COMPARISONS + 1),
            1201,
            "more than 100 comparisons",
        );
    }

    #[test]
    fn lexical_errors() {
        assert_error("name = 'abc", 8, "unterminated string");
        assert_error("name = 'it''s", 8, "unterminated string");
        assert_error("name = 'a' and b = '", 20, "unterminated string");
        assert_error("a => 5", 3, "unknown operator `=>`");
        assert_error("a == 5", 3, "unknown operator `==`; use `=`");
        assert_error("a <> 5", 3, "unknown operator `<>`; use `!=`");
        assert_error("a ! 5", 3, "unknown operator `!`");
        assert_error("a >== 5", 3, "unknown operator `>==`");
        assert_error("a = 5 ; b = 1", 7, "unexpected character `;`");
        assert_error("a = 1.", 5, "invalid number `1.`");
        assert_error("a = 1.x", 5, "invalid number `1.x`");
        assert_error("a = .5", 5, "unexpected character `.`");
        assert_error("a = 1.2.3", 5, "invalid number `1.2.3`");
        assert_error("a > 10days ago", 5, "invalid number `10days`");
        assert_error("a = - 5", 5, "expected a digit after `-`");
        assert_error("a = 'x\0y'", 7, "NUL");
        assert_error("a = 1 and b = `x`", 15, "unexpected character '`'");
        assert_error("a = 1 and b = \u{1}", 15, "unexpected character `\\u{1}`");
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        assert_error("name = 'ééé' and é = 1", 18, "unexpected character `é`");
        assert_error("名前 = 'x'", 1, "unexpected character `名`");
        assert_error("x = '日本' and y >", 17, "expected a value after `>`");
    }

    #[test]
    fn first_error_wins() {
        // The `)` is wrong before the unterminated string is reached.
        assert_error(") 'abc", 1, "expected a field name, found `)`");
        assert_error(
            "a = 1 b 'abc",
            7,
            "expected `and`, `or` or the end of the filter after `1`, found `b`",
        );
        // A lexical error right where a token was expected is reported as such.
        assert_error("a = 'abc", 5, "unterminated string");
        assert_error("a = 1 and (b = 2 or c ? 3)", 23, "unexpected character `?`");
    }

    #[test]
    fn missing_values_and_operators() {
        assert_error("a >", 4, "expected a value after `>`");
        assert_eq!(error("a >").1, "expected a value after `>`");
        assert_error("a > )", 5, "expected a value after `>`, found `)`");
        assert_error(
            "a > and b = 1",
            5,
            "found `and`; text values are written in single quotes: 'and'",
        );
        assert_error(
            "plan = gold",
            8,
            "expected a value after `=`, found `gold`; text values are written in single quotes: 'gold'",
        );
        assert_error("a", 2, "expected an operator");
        assert_error(
            "a 5",
            3,
            "expected an operator (`=`, `!=`, `<`, `<=`, `>`, `>=`, `in` or `exists`) after `a`, found `5`",
        );
        assert_error("a = 1 and", 10, "expected a field name after `and`");
        assert_error("a = 1 or", 9, "expected a field name after `or`");
        assert_error("not", 4, "expected a field name after `not`");
        assert_error("5 < age", 1, "expected a field name, found `5`");
        assert_error("'x' = name", 1, "expected a field name, found `'x'`");
    }

    #[test]
    fn parenthesis_errors() {
        assert_error("(a = 1", 7, "missing `)` to close the `(` at character 1");
        assert_error(
            "((a = 1) and (b = 2)",
            21,
            "missing `)` to close the `(` at character 1",
        );
        assert_error("a = 1)", 6, "unmatched `)`");
        assert_error("(a = 1))", 8, "unmatched `)`");
        assert_error("()", 2, "expected a field name after `(`, found `)`");
        assert_error(
            "(a = 1 b = 2)",
            8,
            "expected `and`, `or` or `)` after `1`, found `b`",
        );
        assert_error("a = 1 and (b = 2", 17, "missing `)`");
    }

    #[test]
    fn type_errors() {
        assert_error(
            "address > 5",
            11,
            "`address` is text and cannot be compared with a number",
        );
        assert_error("address = true", 11, "cannot be compared with a boolean");
        assert_error("address < now", 11, "cannot be compared with `now`");
        assert_error("address < 3 days ago", 11, "a relative time");
        assert_error(
            "address in (1, 2)",
            13,
            "`address` is text and cannot be compared with a number",
        );
        assert_error(
            "created_at = 'abc'",
            14,
            "`created_at` is a time and cannot be compared with a string",
        );
        assert_error("created_at = '2025-01-01'", 14, "use date '2025-01-31'");
        assert_error("created_at > 5", 14, "cannot be compared with a number");
        assert_error(
            "created_at = false",
            14,
            "cannot be compared with a boolean",
        );
        for op in ["<", "<=", ">", ">="] {
            let (position, message) = error(&format!("vip {op} true"));
            assert_eq!(position, 5);
            assert_eq!(
                message,
                format!("`{op}` cannot compare a boolean; use `=` or `!=`")
            );
        }
    }

    #[test]
    fn error_display_includes_position() {
        let error = Filter::parse("a >").unwrap_err();
        assert_eq!(
            error.to_string(),
            "expected a value after `>` (at character 4)"
        );
    }

    // ---- injection

    /// Words the compiler itself writes; anything else in the SQL came from a tenant.
    const SQL_WORDS: &[&str] = &[
        "c",
        "attributes",
        "address",
        "created_at",
        "coalesce",
        "false",
        "true",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "jsonb_typeof",
        "number",
        "numeric",
        "NOT",
        "AND",
        "OR",
        "to_jsonb",
        "boolean",
        "herald_try_timestamptz",
        "timestamptz",
        "now",
        "make_interval",
        "mins",
        "hours",
        "days",
        "weeks",
        "ANY",
        "text",
    ];

    /// Asserts that the SQL is made only of the compiler's own words, operators and
    /// placeholders `$1`, `$2`, ... numbered in order.
    fn assert_only_fixed_sql(sql: &str) {
        let mut rest = sql.replace("'number'", "");
        assert!(
            !rest.contains(['\'', '"', ';', '\\']) && !rest.contains("--") && !rest.contains("/*"),
            "{sql}"
        );
        let mut expected = 1;
        while let Some(at) = rest.find('$') {
            let digits: String = rest[at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            assert_eq!(digits, expected.to_string(), "{sql}");
            expected += 1;
            rest.replace_range(at..at + 1 + digits.len(), " ");
        }
        for word in rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            assert!(
                word.is_empty() || SQL_WORDS.contains(&word),
                "unexpected word {word:?} in {sql}"
            );
        }
    }

    #[test]
    fn tenant_text_never_reaches_the_sql() {
        let hostile = "'x''; DROP TABLE contacts; --'";
        let filter = parse(&format!("name = {hostile}"));
        assert_eq!(
            filter.root,
            Expr::Leaf(Leaf::Text {
                column: TextColumn::Attribute("name".into()),
                op: CmpOp::Eq,
                value: "x'; DROP TABLE contacts; --".into()
            })
        );
        let compiled = sql_of(&filter);
        assert!(
            !compiled.contains("DROP") && !compiled.contains("name"),
            "{compiled}"
        );
        assert_only_fixed_sql(&compiled);

        for text in [
            "name = 'x''; DROP TABLE contacts; --'",
            "address = 'a'' OR 1=1 --' or address in ('$1', '\\', '\"')",
            "plan not in ('); DELETE FROM contacts; --', 'b') and score in (1, -2.5)",
            "d > date '2025-01-01T00:00:00Z' and e < 3 weeks ago and f >= now",
            "SELECT = 'x' and DROP exists and pg_sleep != true",
            "created_at > 1 minute ago or not (x not exists and y = -0.0001)",
            "comment = '/* */ -- ; \\ $$ $1 ''' and emoji = '🙂'",
        ] {
            assert_only_fixed_sql(&sql(text));
        }
    }

    #[test]
    fn quoted_or_odd_attribute_names_are_rejected() {
        assert_error("a\"b = 1", 2, "unexpected character `\"`");
        assert_error("\"ab\" = 1", 1, "unexpected character `\"`");
        assert_error("a'b = 1", 2, "unterminated string");
        assert_error(
            "a'b' = 1",
            2,
            "expected an operator (`=`, `!=`, `<`, `<=`, `>`, `>=`, `in` or `exists`) after `a`, found `'b'`",
        );
        assert_error("a.b = 1", 2, "unexpected character `.`");
        assert_error("a-b = 1", 2, "expected a digit after `-`");
        assert_error("a;b = 1", 2, "unexpected character `;`");
        assert_error("a b = 1", 3, "expected an operator");
    }

    #[test]
    fn every_leaf_kind_compiles_to_fixed_sql() {
        let filter = parse(
            "n > 1 and s = 's' and b = true and t < now and created_at > date '2025-01-01' \
             and address != 'a' and s2 in ('x') and n2 not in (2) and address in ('y') \
             and e exists and address not exists and t2 > 2 hours ago",
        );
        let sql = sql_of(&filter);
        assert_only_fixed_sql(&sql);
        // One bind per attribute reference, value and list: none inlined.
        assert_eq!(sql.matches('$').count(), 19, "{sql}");
    }
}
