//! The named schemas of a published document (`components.schemas` of the
//! OpenAPI and of the AsyncAPI document alike): root JSON Schemas go in
//! under the names we give them, and every definition they carry (`$defs`)
//! becomes a component of its own, so no component holds a nested `$defs`
//! or `$schema` and every type has one name that generators can use.
//!
//! Definitions are shared by content: one that equals a component already
//! there (`MoneyView` in two answers, or the `UserView` items of a page that
//! equal the `User` component) becomes a reference to it. One that reuses a
//! taken name for another shape gets a name of its own (`Money_2`), so two
//! different schemas never hide behind one name.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

/// Where components live in both documents.
pub const PREFIX: &str = "#/components/schemas/";

/// A `$ref` to the component `name`.
pub fn reference(name: &str) -> Value {
    serde_json::json!({ "$ref": format!("{PREFIX}{name}") })
}

#[derive(Default)]
pub struct Components {
    schemas: BTreeMap<String, Value>,
    /// The compact JSON text of each component, to find one by content.
    by_content: HashMap<String, String>,
}

impl Components {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the root schema `root` as the component `name`, its definitions
    /// as components of their own, with every `$ref` pointing at them.
    ///
    /// # Panics
    /// If `name` is already another schema's: two lines of one table gave
    /// the same name, which only a change of code can cause.
    pub fn add(&mut self, name: &str, root: Value) {
        let Value::Object(mut root) = root else {
            self.insert(name, root);
            return;
        };
        root.remove("$schema");
        // The component's name is its name; a title would compete with it
        // (generators name classes by title), and the type's Rust name often
        // clashes (two `UserView`s answer different routes).
        root.remove("title");
        let definitions = match (root.remove("$defs"), root.remove("definitions")) {
            (Some(Value::Object(defs)), _) | (None, Some(Value::Object(defs))) => defs,
            _ => Map::new(),
        };
        let names = self.name_definitions(name, &definitions);
        for (local, definition) in &definitions {
            let definition = rewrite(definition.clone(), name, &names);
            let name = &names[local];
            if !self.schemas.contains_key(name) {
                self.insert(name, definition);
            }
        }
        let root = rewrite(Value::Object(root), name, &names);
        if let Some(existing) = self.schemas.get(name) {
            assert!(
                existing == &root,
                "two different schemas are both named {name}"
            );
            return;
        }
        self.insert(name, root);
    }

    /// The component name of each definition of one root: the component of
    /// equal content if there is one, else its own name if free, else a
    /// fresh one. A definition's content depends on the names of those it
    /// refers to, so this repeats until no name changes.
    fn name_definitions(
        &self,
        root_name: &str,
        definitions: &Map<String, Value>,
    ) -> HashMap<String, String> {
        let mut names: HashMap<String, String> = definitions
            .keys()
            .map(|local| (local.clone(), sanitize(local)))
            .collect();
        for _ in 0..=definitions.len() {
            let mut changed = false;
            for (local, definition) in definitions {
                let content = rewrite(definition.clone(), root_name, &names);
                let key = compact(&content);
                let current = &names[local];
                let wanted = if let Some(same) = self.by_content.get(&key) {
                    same.clone()
                } else if self.schemas.get(current).is_none_or(|s| s == &content) {
                    current.clone()
                } else {
                    self.fresh(current)
                };
                if &wanted != current {
                    names.insert(local.clone(), wanted);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        names
    }

    /// `base_2`, `base_3`, ...: the first such name not taken.
    fn fresh(&self, base: &str) -> String {
        let base = match base.rsplit_once('_') {
            Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => stem,
            _ => base,
        };
        (2..)
            .map(|n| format!("{base}_{n}"))
            .find(|candidate| !self.schemas.contains_key(candidate))
            .unwrap_or_else(|| base.to_owned())
    }

    fn insert(&mut self, name: &str, schema: Value) {
        self.by_content
            .entry(compact(&schema))
            .or_insert_with(|| name.to_owned());
        self.schemas.insert(name.to_owned(), schema);
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.schemas.get(name)
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.schemas.into_iter().collect()
    }
}

/// Component names may hold letters, digits, `.`, `-` and `_` (both
/// specifications say so); schemars's names of generic types may not.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Points every local `$ref` of `schema` (`#/$defs/X`, `#/definitions/X`,
/// `#` for the root itself) at its component.
fn rewrite(mut schema: Value, root_name: &str, names: &HashMap<String, String>) -> Value {
    fn walk(value: &mut Value, root_name: &str, names: &HashMap<String, String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map.iter_mut() {
                    if key == "$ref" {
                        if let Value::String(target) = inner {
                            if let Some(component) = target_of(target, root_name, names) {
                                *target = format!("{PREFIX}{component}");
                            }
                        }
                    } else {
                        walk(inner, root_name, names);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, root_name, names)),
            _ => {}
        }
    }
    walk(&mut schema, root_name, names);
    schema
}

fn target_of<'a>(
    target: &str,
    root_name: &'a str,
    names: &'a HashMap<String, String>,
) -> Option<&'a str> {
    if target == "#" {
        return Some(root_name);
    }
    let local = target
        .strip_prefix("#/$defs/")
        .or_else(|| target.strip_prefix("#/definitions/"))?;
    // JSON Pointer escapes (RFC 6901) in the definition's name.
    let local = local.replace("~1", "/").replace("~0", "~");
    names.get(&local).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn definitions_are_hoisted_shared_by_content_and_renamed_on_a_clash() {
        let mut components = Components::new();
        let money = json!({"type": "object", "properties": {"amount": {"type": "integer"}}});
        components.add(
            "Order",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": "OrderView",
                "type": "object",
                "properties": {"total": {"$ref": "#/$defs/Money"}},
                "$defs": {"Money": money},
            }),
        );
        // The same Money again: shared. Another shape named Money: renamed.
        components.add(
            "Payment",
            json!({
                "type": "object",
                "properties": {"amount": {"$ref": "#/$defs/Money"}},
                "$defs": {"Money": money},
            }),
        );
        components.add(
            "Price",
            json!({
                "type": "object",
                "properties": {"price": {"$ref": "#/$defs/Money"}},
                "$defs": {"Money": {"type": "string"}},
            }),
        );
        // Items equal to a component already there refer to it.
        components.add(
            "OrderPage",
            json!({
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/OrderView"}}},
                "$defs": {
                    "OrderView": {"type": "object", "properties": {"total": {"$ref": "#/$defs/Money"}}},
                    "Money": money,
                },
            }),
        );
        // A recursive root refers to itself by name.
        components.add(
            "Category",
            json!({"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}),
        );
        let map = components.into_map();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            [
                "Category",
                "Money",
                "Money_2",
                "Order",
                "OrderPage",
                "Payment",
                "Price"
            ]
        );
        assert_eq!(map["Money"], money);
        assert_eq!(
            map["Order"],
            json!({"type": "object", "properties": {"total": {"$ref": "#/components/schemas/Money"}}})
        );
        assert_eq!(
            map["Price"]["properties"]["price"]["$ref"],
            "#/components/schemas/Money_2"
        );
        assert_eq!(
            map["OrderPage"]["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/Order"
        );
        assert_eq!(
            map["Category"]["properties"]["children"]["items"]["$ref"],
            "#/components/schemas/Category"
        );
    }
}
