//! The drop reasons, disconnect reasons and remote codes are enums; the
//! docs that operators and other-language implementers read must list
//! every one of them, so the two cannot drift.

use std::collections::HashSet;

use zfabric::telemetry::{DisconnectReason, DropReason, EdgeRefusal, GossipIgnored, SeedFailure};
use zfabric::topology::shared_data::{DataRefusal, Eviction};
use zfabric::wire::RemoteCode;

fn doc(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn missing<'a>(text: &str, labels: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    labels
        .into_iter()
        .filter(|l| !text.contains(&format!("`{l}`")))
        .collect()
}

#[test]
fn every_remote_code_is_documented_in_the_protocol() {
    let text = doc("docs/PROTOCOL.md");
    let gaps = missing(&text, RemoteCode::ALL.iter().map(|c| c.as_str()));
    assert!(
        gaps.is_empty(),
        "docs/PROTOCOL.md lacks remote codes {gaps:?}"
    );
}

/// The text of the section of `text` whose heading starts with `heading`,
/// up to the next heading.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let body = &text[start + heading.len()..];
    let end = body.find("\n#").unwrap_or(body.len());
    &body[..end]
}

/// The names a table's rows start with: every backticked word of the
/// first cell (`| \`a\`, \`b\` | ... |` gives `a` and `b`).
fn first_cells(table: &str) -> Vec<&str> {
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split(" |").next())
        .flat_map(|cell| cell.split('`').step_by(2))
        .map(|w| w.trim_matches(|c: char| c == ',' || c.is_whitespace()))
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn the_protocol_tables_name_every_remote_code_and_only_real_codes_and_reasons() {
    let text = doc("docs/PROTOCOL.md");
    // §4: one row per code zfabric sends, and no code it does not know.
    let codes = first_cells(section(&text, "## 4. Body"));
    for c in RemoteCode::ALL {
        assert!(
            codes.contains(&c.as_str()),
            "§4 has no row for remote code `{c}`"
        );
    }
    for name in &codes {
        assert!(
            RemoteCode::parse(name).is_some(),
            "§4 names `{name}`, which is no RemoteCode"
        );
    }
    // §6.10: the codes a node answers with are real codes.
    let node = first_cells(section(&text, "### 6.10"));
    assert!(node.len() >= 8, "{node:?}");
    for name in &node {
        assert!(
            RemoteCode::parse(name).is_some(),
            "§6.10 names `{name}`, which is no RemoteCode"
        );
    }
    // §3.1: every drop reason a peer can cause is a real DropReason.
    let drops = first_cells(section(&text, "### 3.1"));
    assert!(drops.len() >= 8, "{drops:?}");
    for name in &drops {
        assert!(
            DropReason::ALL.iter().any(|r| r.as_str() == *name),
            "§3.1 names `{name}`, which is no DropReason"
        );
    }
}

#[test]
fn every_drop_and_disconnect_reason_is_documented_for_operators() {
    let text = doc("docs/OPERATIONS.md");
    let drops = missing(&text, DropReason::ALL.iter().map(|r| r.as_str()));
    assert!(
        drops.is_empty(),
        "docs/OPERATIONS.md lacks drop reasons {drops:?}"
    );
    let cuts = missing(&text, DisconnectReason::ALL.iter().map(|r| r.as_str()));
    assert!(
        cuts.is_empty(),
        "docs/OPERATIONS.md lacks disconnect reasons {cuts:?}"
    );
    let gossip = missing(&text, GossipIgnored::ALL.iter().map(|r| r.as_str()));
    assert!(
        gossip.is_empty(),
        "docs/OPERATIONS.md lacks gossip reasons {gossip:?}"
    );
    let refused = first_cells(section(&text, "## Shared data"));
    for r in DataRefusal::ALL {
        assert!(
            refused.contains(&r.as_str()),
            "docs/OPERATIONS.md lacks shared-data refusal `{}`",
            r.as_str()
        );
    }
    for e in Eviction::ALL {
        assert!(
            refused.contains(&e.as_str()),
            "docs/OPERATIONS.md lacks cache eviction reason `{}`",
            e.as_str()
        );
    }
    let seeds = missing(&text, SeedFailure::ALL.iter().map(|r| r.as_str()));
    assert!(
        seeds.is_empty(),
        "docs/OPERATIONS.md lacks seed failure reasons {seeds:?}"
    );
    let edge = missing(&text, EdgeRefusal::ALL.iter().map(|r| r.as_str()));
    assert!(
        edge.is_empty(),
        "docs/OPERATIONS.md lacks edge refusal reasons {edge:?}"
    );
    let gateway = doc("docs/GATEWAY.md");
    let edge = missing(&gateway, EdgeRefusal::ALL.iter().map(|r| r.as_str()));
    assert!(
        edge.is_empty(),
        "docs/GATEWAY.md lacks edge refusal reasons {edge:?}"
    );
}

#[test]
fn labels_are_unique_and_remote_codes_parse_back() {
    let drops: HashSet<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(drops.len(), DropReason::ALL.len());
    let cuts: HashSet<_> = DisconnectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(cuts.len(), DisconnectReason::ALL.len());
    for code in RemoteCode::ALL {
        assert_eq!(RemoteCode::parse(code.as_str()), Some(code));
    }
    assert_eq!(RemoteCode::parse("handler_error"), None);
}
