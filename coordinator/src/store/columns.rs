//! Columns that hold states and outcomes: written with their one spelling,
//! read back as enums. A spelling the code does not know is an error that
//! names the column's value and what was expected (ARCHITECTURE.md,
//! invariant 7), never a default.

use std::str::FromStr;

use flotilla_shared::status::UnknownValue;
use rusqlite::types::Type;
use rusqlite::Row;

/// Reads column `index` of `row` as `T`.
pub fn parse_column<T: FromStr<Err = UnknownValue>>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    text.parse::<T>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}
