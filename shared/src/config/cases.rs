//! An axis of explicit cases (`- cases: FILE` or an inline list of objects):
//! each case is an object whose fields become the variation's params, crossed
//! with the other axes. Files are JSONL (one object per line), CSV (a header
//! row, then one case per row; numbers and booleans read as such) or a YAML
//! list. A bad case is refused with its file, line and field.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{check_param_name, ConfigError};

/// Reads a cases file named in an experiment file (a path as written there).
pub type CaseFiles<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// A case file that could not be read or a case that is not valid.
fn error(
    file: &str,
    line: u64,
    field: impl Into<String>,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        line,
        column: if line > 0 { 1 } else { 0 },
        field: field.into(),
        message: message.into(),
    }
}

/// The cases of a file, each with the line it starts on.
pub fn read_file(path: &str, content: &str) -> Result<Vec<(u64, Value)>, ConfigError> {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
        read_jsonl(path, content)
    } else if lower.ends_with(".csv") {
        read_csv(path, content)
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        let cases: Vec<Value> = serde_saphyr::from_str(content).map_err(|e| {
            error(
                path,
                0,
                "cases",
                format!("is not a YAML list of objects: {e}"),
            )
        })?;
        Ok(cases.into_iter().map(|case| (0, case)).collect())
    } else {
        Err(error(
            path,
            0,
            "cases",
            "cases files are .jsonl (one object per line), .csv (a header row) or .yaml (a list of objects)",
        ))
    }
}

fn read_jsonl(path: &str, content: &str) -> Result<Vec<(u64, Value)>, ConfigError> {
    let mut cases = Vec::new();
    for (index, line) in content.lines().enumerate() {
        let number = index as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let case: Value = serde_json::from_str(line).map_err(|e| {
            error(
                path,
                number,
                format!("cases[{}]", cases.len()),
                format!("is not JSON: {e}"),
            )
        })?;
        cases.push((number, case));
    }
    Ok(cases)
}

fn read_csv(path: &str, content: &str) -> Result<Vec<(u64, Value)>, ConfigError> {
    let mut reader = csv::ReaderBuilder::new().from_reader(content.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| error(path, 1, "cases", format!("cannot read the header row: {e}")))?
        .iter()
        .map(|name| name.trim().to_string())
        .collect();
    let mut cases = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            error(path, line, format!("cases[{}]", cases.len()), e.to_string())
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let case: Map<String, Value> = header
            .iter()
            .zip(record.iter())
            .map(|(name, cell)| (name.clone(), cell_value(cell)))
            .collect();
        cases.push((line, Value::Object(case)));
    }
    Ok(cases)
}

/// A CSV cell: a number or boolean when it reads as one, else the text.
fn cell_value(cell: &str) -> Value {
    let trimmed = cell.trim();
    if let Ok(integer) = trimmed.parse::<i64>() {
        return Value::from(integer);
    }
    if let Ok(number) = trimmed.parse::<f64>() {
        if number.is_finite() {
            return Value::from(number);
        }
    }
    match trimmed {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(cell.to_string()),
    }
}

/// Checks cases: objects with valid parameter names, distinct, and a
/// distinct `id` or `name` where they have one. `file` and each case's line
/// locate the errors; `field` is the axis's place in the experiment file.
pub fn validate(file: &str, field: &str, cases: &[(u64, Value)]) -> Result<(), ConfigError> {
    if cases.is_empty() {
        return Err(error(
            file,
            0,
            field,
            "an axis of cases needs at least one case",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for (index, (line, case)) in cases.iter().enumerate() {
        let here = format!("{field}[{index}]");
        let Some(object) = case.as_object() else {
            return Err(error(
                file,
                *line,
                here,
                format!("a case is an object of parameters, got {case}"),
            ));
        };
        if object.is_empty() {
            return Err(error(file, *line, here, "a case needs at least one field"));
        }
        for name in object.keys() {
            check_param_name(name).map_err(|m| error(file, *line, format!("{here}.{name}"), m))?;
        }
        if !seen.insert(case.to_string()) {
            return Err(error(
                file,
                *line,
                here,
                "the same case appears twice; cases must be distinct",
            ));
        }
        if let Some(label) = explicit_label(case) {
            if !labels.insert(label.clone()) {
                return Err(error(
                    file,
                    *line,
                    here,
                    format!("another case is already labelled {label}; `id` (or `name`) must be distinct"),
                ));
            }
        }
    }
    Ok(())
}

/// A case's `id`, else its `name`, as written.
fn explicit_label(case: &Value) -> Option<String> {
    let field = case.get("id").or_else(|| case.get("name"))?;
    Some(match field {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

/// How a case is named in outputs and reports: its `id` or `name`, else
/// `case-N` by its place (1-based).
pub fn label(index: usize, case: &Value) -> String {
    explicit_label(case).unwrap_or_else(|| format!("case-{}", index + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_csv_and_yaml_files_give_cases_with_their_lines() {
        let jsonl = read_file(
            "c.jsonl",
            "{\"id\": \"a\", \"x\": 1}\n\n{\"id\": \"b\", \"x\": 2}\n",
        )
        .unwrap();
        assert_eq!(jsonl.len(), 2);
        assert_eq!(jsonl[1].0, 3);
        let csv = read_file(
            "c.csv",
            "id,x,flag,text\na,1,true,\"hello, world\"\nb,2.5,false,plain\n",
        )
        .unwrap();
        assert_eq!(
            csv[0].1,
            serde_json::json!({"id": "a", "x": 1, "flag": true, "text": "hello, world"})
        );
        assert_eq!(csv[1].1["x"], 2.5);
        assert_eq!(csv[1].0, 3);
        let yaml = read_file("c.yaml", "- {id: a, x: 1}\n- {id: b, x: 2}\n").unwrap();
        assert_eq!(yaml[1].1, serde_json::json!({"id": "b", "x": 2}));
        assert_eq!(label(0, &yaml[0].1), "a");
        assert_eq!(label(4, &serde_json::json!({"x": 1})), "case-5");
    }

    #[test]
    fn bad_cases_are_refused_with_file_line_and_field() {
        let broken = read_file("c.jsonl", "{\"x\": 1}\n{\"x\": \n").unwrap_err();
        assert_eq!((broken.file.as_str(), broken.line), ("c.jsonl", 2));
        assert_eq!(broken.field, "cases[1]");
        let cases = read_file("c.jsonl", "{\"id\": 1, \"x\": 1}\n{\"id\": 1, \"x\": 2}\n").unwrap();
        let twice = validate("c.jsonl", "variations[0].cases", &cases).unwrap_err();
        assert_eq!(twice.line, 2);
        assert!(twice.message.contains("already labelled 1"), "{twice}");
        let cases = read_file("c.jsonl", "{\"x\": 1}\n{\"bad name\": 2}\n").unwrap();
        let named = validate("c.jsonl", "variations[0].cases", &cases).unwrap_err();
        assert_eq!(named.field, "variations[0].cases[1].bad name");
        assert!(read_file("c.txt", "").is_err());
        let short = read_file("c.csv", "id,x\na,1\nb\n").unwrap_err();
        assert_eq!(short.line, 3, "{short}");
    }
}
