//! The index's change impact is sound: for a random change to one object, every part of every sidecar config
//! that actually differs after the change is inside `impact(before) ∪ impact(after)`. This is what lets the
//! control plane recompute and push only what a change touches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use podmesh_compute::{Impact, Index};
use podmesh_model::*;
use proptest::prelude::*;
use support::{MUTATIONS, base, configs, k, mutate, outside};

mod support;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn impact_covers_every_change(m in 0usize..MUTATIONS, x in 0usize..1000) {
        let before = base();
        let mut after = before.clone();
        let object = mutate(&mut after, m, x);
        let old = Index::new(before);
        let new = Index::new(after);
        let mut imp: Impact = old.impact(&object);
        imp.merge(new.impact(&object));
        prop_assume!(!imp.everything);

        let missed = outside(&imp, old.outbound(), new.outbound(), &configs(&old), &configs(&new));
        prop_assert!(missed.is_empty(), "{object}: changed outside {imp:?}: {missed:?}");
    }
}

#[test]
fn impact_is_narrow_for_a_pod_change() {
    // Not everything: a readiness change of one web pod touches its own config and web's clusters only.
    let ix = Index::new(base());
    let web0 = ix.cluster().pods_of(&k("shop/web")).next().unwrap().key.clone();
    let imp = ix.impact(&ObjectRef::new(Kind::Pod, web0.clone()));
    assert!(!imp.everything);
    assert_eq!(imp.inbound, BTreeSet::from([web0]));
    assert!(imp.listener_ips.is_empty() && imp.route_tables.is_empty());
    assert_eq!(imp.cluster_services, BTreeSet::from(["web.shop.svc.cluster.local".to_string()]));
}
