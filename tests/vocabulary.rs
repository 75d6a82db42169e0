//! The drop reasons, disconnect reasons and remote codes are enums; the
//! docs that operators and other-language implementers read must list
//! every one of them, so the two cannot drift.

use std::collections::HashSet;

use zfabric::telemetry::{DisconnectReason, DropReason, GossipIgnored, SeedFailure};
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
    let seeds = missing(&text, SeedFailure::ALL.iter().map(|r| r.as_str()));
    assert!(
        seeds.is_empty(),
        "docs/OPERATIONS.md lacks seed failure reasons {seeds:?}"
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
