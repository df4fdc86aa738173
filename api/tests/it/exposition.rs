//! A strict reader of the Prometheus text exposition format (0.0.4), so
//! tests can check every line a scrape returns and look up samples.
//! Also used by the `ops` tests (included by path).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of `text`; panics naming the first line that is not valid
/// exposition format, or a sample whose `# TYPE` is missing or comes after it.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let fail = |why: &str| -> ! { panic!("line {}: {why}: {line:?}", number + 1) };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_name(name) {
                        fail("bad metric name in TYPE");
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        fail("unknown metric type");
                    }
                    if typed.insert(name.to_owned(), kind.to_owned()).is_some() {
                        fail("TYPE given twice");
                    }
                }
                (Some("HELP"), Some(name), _) if !is_name(name) => fail("bad metric name in HELP"),
                _ => {}
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => fail("no value"),
        };
        if !is_name(name) {
            fail("bad metric name");
        }
        let (labels, rest) = if let Some(rest) = rest.strip_prefix('{') {
            parse_labels(rest).unwrap_or_else(|why| fail(why))
        } else {
            (BTreeMap::new(), rest)
        };
        let mut fields = rest.split_whitespace();
        let value = match fields.next() {
            Some("+Inf") => f64::INFINITY,
            Some("-Inf") => f64::NEG_INFINITY,
            Some("NaN") => f64::NAN,
            Some(text) => text.parse::<f64>().unwrap_or_else(|_| fail("bad value")),
            None => fail("no value"),
        };
        if let Some(timestamp) = fields.next() {
            if timestamp.parse::<i64>().is_err() {
                fail("bad timestamp");
            }
        }
        if fields.next().is_some() {
            fail("trailing text");
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.contains_key(*base))
            })
            .unwrap_or(name);
        if !typed.contains_key(family) {
            fail("sample before its # TYPE line");
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

// `k="v",k2="v2"}` then the rest of the line.
fn parse_labels(mut text: &str) -> Result<(BTreeMap<String, String>, &str), &'static str> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = text.find('=').ok_or("label without '='")?;
        let key = &text[..eq];
        if !is_name(key) || key.contains(':') {
            return Err("bad label name");
        }
        let mut chars = text[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value not quoted");
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (at, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, '\\' | '"') => {
                    value.push(c);
                    escaped = false;
                }
                (true, _) => return Err("bad escape in label value"),
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + at + 1);
                    break;
                }
                (false, _) => value.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        if labels.insert(key.to_owned(), value).is_some() {
            return Err("label given twice");
        }
        text = &text[end..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

/// The value of the sample `name` with exactly these labels.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn the_reader_accepts_the_format_and_refuses_what_is_not() {
    let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"uote\"} 3\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let samples = parse(text);
    assert_eq!(
        value(&samples, "a_total", &[("x", "1"), ("y", "q\"uote")]),
        Some(3.0)
    );
    assert_eq!(value(&samples, "h_count", &[]), Some(2.0));
    for bad in [
        "# TYPE a counter\na{x=1} 3\n",
        "# TYPE a counter\na 3 4 5\n",
        "a 3\n",
        "# TYPE a counter\na{x=\"1\" 3\n",
        "# TYPE 1a counter\n",
        "# TYPE a counter\na three\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "{bad:?} was accepted"
        );
    }
}
