//! The agent's access to the API server: it reads Nodes and nothing else, through the
//! `ServiceAccount` its `DaemonSet` names.

use std::collections::BTreeSet;

use crate::load::{Manifests, Object};

#[test]
fn rbac_reads_nodes_only_and_binds_the_daemonsets_account() {
    let manifests = Manifests::load();
    let mut roles = manifests.objects.iter().filter_map(|(_, o)| match o {
        Object::ClusterRole(r) => Some(r),
        _ => None,
    });
    let role = roles.next().expect("a ClusterRole");
    assert!(roles.next().is_none(), "one ClusterRole");
    let rules = role.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1, "one rule: nodes");
    let rule = &rules[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&[String::new()][..]),
        "the core API group"
    );
    assert_eq!(rule.resources.as_deref(), Some(&["nodes".to_owned()][..]));
    let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
    assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "read-only");
    assert_eq!(rule.resource_names, None);
    assert_eq!(rule.non_resource_urls, None);

    let account = manifests
        .pod()
        .service_account_name
        .as_deref()
        .expect("the DaemonSet names its ServiceAccount");
    assert!(
        manifests
            .objects
            .iter()
            .any(|(_, o)| matches!(o, Object::ServiceAccount(sa)
            if sa.metadata.name.as_deref() == Some(account))),
        "ServiceAccount {account} is in the manifests"
    );
    let binding = manifests
        .objects
        .iter()
        .find_map(|(_, o)| match o {
            Object::ClusterRoleBinding(b) => Some(b),
            _ => None,
        })
        .expect("a ClusterRoleBinding");
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "the binding's one subject");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, account);
    assert_eq!(
        subjects[0].namespace.as_deref(),
        Some(manifests.namespace())
    );
}
