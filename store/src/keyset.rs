//! Keyset paging for the admin's lists: rows after the last one shown, in key order, so the
//! thousandth page costs what the first does and a walk sees each row once however many are
//! added meanwhile (an OFFSET promises neither).

use sqlx::{Postgres, QueryBuilder};

/// Appends ` AND column = ANY(values)` when there are values; none is no filter.
pub(crate) fn push_any_of(qb: &mut QueryBuilder<Postgres>, column: &str, values: &[String]) {
    if !values.is_empty() {
        qb.push(format_args!(" AND {column} = ANY("))
            .push_bind(values.to_vec())
            .push(")");
    }
}

/// Appends the rows after `after` by `key`, ascending, at most `limit` of them.
pub(crate) fn push_page<K>(qb: &mut QueryBuilder<Postgres>, key: &str, after: Option<K>, limit: i64)
where
    K: for<'t> sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
{
    if let Some(after) = after {
        qb.push(format_args!(" AND {key} > ")).push_bind(after);
    }
    qb.push(format_args!(" ORDER BY {key} LIMIT "))
        .push_bind(limit);
}
