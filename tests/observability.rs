//! The Grafana dashboard only uses metric names the code records.

use std::path::Path;

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn every_metric_on_the_dashboard_is_recorded_by_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dash = std::fs::read_to_string(root.join("deploy/grafana/zfabric.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dash).expect("valid JSON");
    assert!(!json["panels"].as_array().unwrap().is_empty());
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    let mut names: Vec<&str> = dash
        .match_indices("zfabric_")
        .map(|(i, _)| {
            let rest = &dash[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    for n in names {
        assert!(
            code.contains(&format!("\"{n}\"")),
            "{n} is on the dashboard but not in the code"
        );
    }
}
