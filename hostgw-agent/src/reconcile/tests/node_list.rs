//! Which node list a round applies: never one without this node.

use super::*;

/// A node list without this node (a nodes file read half written: `items:` and nothing
/// after it, or only some of the nodes) is not applied: every route stays. The next whole
/// list applies as usual.
#[tokio::test]
async fn a_node_list_without_this_node_is_not_applied() {
    let (mut r, tx, mut fake) = converged(cluster(), &[]).await;
    tx.send_replace(Some(Arc::new(Vec::new())));
    assert_eq!(fake.round(&mut r).await, vec![], "an empty list");
    let others: Vec<Item> = cluster().into_iter().skip(1).take(1).collect();
    tx.send_replace(Some(Arc::new(others)));
    assert_eq!(fake.round(&mut r).await, vec![], "a list of b alone");
    // This node present but malformed: the list is whole, and applies (b and c stay).
    let mut malformed_me = cluster();
    malformed_me[0] = Item::Malformed {
        name: "me".into(),
        error: "bad".into(),
    };
    tx.send_replace(Some(Arc::new(malformed_me)));
    let ops = fake.round(&mut r).await;
    assert!(
        !ops.iter().any(|op| matches!(op, Op::DeleteRoute { .. })),
        "{ops:?}"
    );
    // A list with this node and without c removes c's route.
    let whole: Vec<Item> = cluster().into_iter().take(2).collect();
    tx.send_replace(Some(Arc::new(whole)));
    let ops = fake.round(&mut r).await;
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::DeleteRoute { route } if route.cidr == net("10.1.28.0/24"))),
        "{ops:?}"
    );
}

/// Before any list with this node, nothing is routed.
#[tokio::test]
async fn no_routes_until_a_list_has_this_node() {
    let others: Vec<Item> = cluster().into_iter().skip(1).collect();
    let (tx, rx) = watch::channel(Some(Arc::new(others)));
    let mut r = Reconciler::new(config(&[]), Some(rx));
    let mut fake = Fake::new();
    let ops = fake.round(&mut r).await;
    assert!(
        !ops.iter().any(|op| matches!(op, Op::ReplaceRoute { .. })),
        "{ops:?}"
    );
    tx.send_replace(Some(Arc::new(cluster())));
    let ops = fake.round(&mut r).await;
    assert_eq!(
        ops.iter()
            .filter(|op| matches!(op, Op::ReplaceRoute { .. }))
            .count(),
        2,
        "{ops:?}"
    );
}
