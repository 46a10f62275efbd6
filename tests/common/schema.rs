//! A JSON Schema checker for the keywords the structured-output tests use, independent of the
//! engine that constrained the answers (llguidance). It knows `type`, `properties`,
//! `required`, `additionalProperties: false`, `enum`, `minimum` / `maximum`, `maxLength`,
//! `items`, `minItems` / `maxItems`, `$defs` and local `$ref`s; any other keyword is an error,
//! so a schema it cannot check fails the test instead of passing it.
//! (The `jsonschema` crate did this before: the slowest crate of the test build to compile, 3.5
//! minutes of a 2-core CI machine's time.)

use serde_json::Value;

/// Why `value` does not satisfy `schema`, or `None` when it does.
pub fn schema_violation(schema: &Value, value: &Value) -> Option<String> {
    check(schema, schema, value, "$").err()
}

fn check(root: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let rules = schema
        .as_object()
        .ok_or_else(|| format!("{at}: schema {schema} is not an object"))?;
    for (keyword, rule) in rules {
        let fail = |why: String| Err(format!("{at}: {value} {why}"));
        match keyword.as_str() {
            "$defs" => {}
            "$ref" => {
                let name = rule
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .ok_or_else(|| format!("{at}: unsupported $ref {rule}"))?;
                let target = root["$defs"]
                    .get(name)
                    .ok_or_else(|| format!("{at}: $ref {rule} names no definition"))?;
                check(root, target, value, at)?;
            }
            "type" => {
                let ok = match rule.as_str() {
                    Some("object") => value.is_object(),
                    Some("array") => value.is_array(),
                    Some("string") => value.is_string(),
                    Some("boolean") => value.is_boolean(),
                    Some("number") => value.is_number(),
                    // JSON Schema counts 1.0 as an integer.
                    Some("integer") => value.as_f64().is_some_and(|x| x.fract() == 0.0),
                    _ => return Err(format!("{at}: unsupported type {rule}")),
                };
                if !ok {
                    return fail(format!("is not of type {rule}"));
                }
            }
            "enum" => {
                let options = rule.as_array().ok_or(format!("{at}: enum {rule}"))?;
                if !options.contains(value) {
                    return fail(format!("is not one of {rule}"));
                }
            }
            "minimum" | "maximum" => {
                let (Some(limit), Some(x)) = (rule.as_f64(), value.as_f64()) else {
                    continue; // the bound applies to numbers only
                };
                if (keyword == "minimum" && x < limit) || (keyword == "maximum" && x > limit) {
                    return fail(format!("breaks {keyword} {limit}"));
                }
            }
            "maxLength" => {
                let limit = rule.as_u64().ok_or(format!("{at}: maxLength {rule}"))?;
                if value
                    .as_str()
                    .is_some_and(|s| s.chars().count() as u64 > limit)
                {
                    return fail(format!("is longer than {limit} characters"));
                }
            }
            "minItems" | "maxItems" => {
                let limit = rule.as_u64().ok_or(format!("{at}: {keyword} {rule}"))?;
                let Some(n) = value.as_array().map(|a| a.len() as u64) else {
                    continue;
                };
                if (keyword == "minItems" && n < limit) || (keyword == "maxItems" && n > limit) {
                    return fail(format!("breaks {keyword} {limit}"));
                }
            }
            "items" => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    check(root, rule, item, &format!("{at}[{i}]"))?;
                }
            }
            "properties" => {
                let properties = rule.as_object().ok_or(format!("{at}: properties {rule}"))?;
                let Some(object) = value.as_object() else {
                    continue;
                };
                for (name, field) in object {
                    if let Some(field_schema) = properties.get(name) {
                        check(root, field_schema, field, &format!("{at}.{name}"))?;
                    } else if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                        return fail(format!("has a property {name:?} the schema does not list"));
                    }
                }
            }
            "required" => {
                let names = rule.as_array().ok_or(format!("{at}: required {rule}"))?;
                if let Some(object) = value.as_object() {
                    if let Some(missing) = names
                        .iter()
                        .find(|n| !n.as_str().is_some_and(|n| object.contains_key(n)))
                    {
                        return fail(format!("lacks the required property {missing}"));
                    }
                }
            }
            "additionalProperties" if rule == &Value::Bool(false) => {
                // Checked with `properties` (an object schema here always lists them).
                if !rules.contains_key("properties") {
                    return Err(format!("{at}: additionalProperties without properties"));
                }
            }
            _ => return Err(format!("{at}: the checker does not know {keyword}: {rule}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::schema_violation;
    use serde_json::json;

    #[test]
    fn the_checker_accepts_what_validates_and_names_what_does_not() {
        let schema = json!({"$defs": {"step": {"type": "object",
                                "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
                                "required": ["n"], "additionalProperties": false}},
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 4},
                           "mood": {"enum": ["yes", "no"]},
                           "steps": {"type": "array", "minItems": 1, "maxItems": 2,
                                     "items": {"$ref": "#/$defs/step"}}},
            "required": ["name", "steps"], "additionalProperties": false});
        let good = json!({"name": "Ada", "mood": "yes", "steps": [{"n": 1}, {"n": 9}]});
        assert_eq!(schema_violation(&schema, &good), None);
        let bad = [
            (json!({"steps": [{"n": 1}]}), "required"),
            (json!({"name": "Adaline", "steps": [{"n": 1}]}), "longer"),
            (
                json!({"name": "A", "mood": "maybe", "steps": [{"n": 1}]}),
                "one of",
            ),
            (json!({"name": "A", "steps": []}), "minItems"),
            (
                json!({"name": "A", "steps": [{"n": 1}, {"n": 2}, {"n": 3}]}),
                "maxItems",
            ),
            (json!({"name": "A", "steps": [{"n": 10}]}), "maximum"),
            (json!({"name": "A", "steps": [{"n": 1.5}]}), "integer"),
            (
                json!({"name": "A", "steps": [{"n": 1, "x": 0}]}),
                "does not list",
            ),
            (json!({"name": 3, "steps": [{"n": 1}]}), "string"),
            (json!([1]), "object"),
        ];
        for (value, why) in bad {
            let got = schema_violation(&schema, &value);
            assert!(
                got.as_deref().is_some_and(|g| g.contains(why)),
                "{value}: got {got:?}, want a violation naming {why:?}"
            );
        }
        let unknown = json!({"type": "string", "pattern": "^a$"});
        let got = schema_violation(&unknown, &json!("a")).unwrap_or_default();
        assert!(got.contains("does not know pattern"), "{got}");
    }
}
