//! Incremental indexing is exact: after any sequence of random changes, an index updated in place
//! (`Index::update`) equals, field for field, the index built from scratch on the same cluster — relations, DNS
//! records, modes, diagnostics and every outbound table. What the update returns covers every outbound resource
//! and inbound config that changed, so a control plane can re-encode and push just those.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use podmesh_compute::Index;
use podmesh_model::*;
use proptest::prelude::*;
use support::{MUTATIONS, base, configs, k, mutate, outside};

mod support;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn an_update_equals_a_re_index(steps in proptest::collection::vec((0usize..MUTATIONS, 0usize..1000), 1..6)) {
        let mut ix = Index::new(base());
        for (m, x) in steps {
            let mut after = ix.cluster().clone();
            let object = mutate(&mut after, m, x);
            let changes = ix.cluster().changes(&after);
            // The diff names exactly the objects that differ (here: the mutated one, when it changed anything).
            prop_assert!(changes.iter().all(|c| *c == object || c.kind != object.kind || object.kind == Kind::Deployment),
                "{object}: {changes:?}");
            let fresh = Index::new(after.clone());
            let old_outbound = ix.outbound().clone();
            let old_configs = configs(&ix);
            let mut next = after;
            match ix.update(&mut next, &changes) {
                None => {
                    prop_assert!(!ix.updates_in_place(&changes));
                    ix = fresh;
                }
                Some(imp) => {
                    let differ = ix.differing_parts(&fresh);
                    prop_assert!(differ.is_empty(), "{object} (m={m}, x={x}): differs from a re-index in {differ:?}");
                    // Everything that changed is named by the impact returned.
                    let missed = outside(&imp, &old_outbound, ix.outbound(), &old_configs, &configs(&ix));
                    prop_assert!(missed.is_empty(), "{object}: changed outside {imp:?}: {missed:?}");
                }
            }
        }
    }
}

#[test]
fn every_kind_updates_in_place_but_the_mesh_config() {
    let ix = Index::new(base());
    let pod = ix.cluster().pods.keys().next().unwrap().clone();
    let yes = [
        ObjectRef::new(Kind::Pod, pod),
        ObjectRef::new(Kind::EndpointSlice, k("shop/external-1")),
        ObjectRef::new(Kind::Deployment, k("shop/web")),
        ObjectRef::new(Kind::Service, k("shop/db")),
        ObjectRef::new(Kind::Service, k("shop/web")), // a VirtualService routes it
        ObjectRef::new(Kind::VirtualService, k("shop/web")),
        ObjectRef::new(Kind::DestinationRule, k("shop/web")),
        ObjectRef::new(Kind::PeerAuthentication, k("shop/strict")),
        ObjectRef::new(Kind::Namespace, k("shop/shop")),
    ];
    assert!(ix.updates_in_place(&yes));
    let mesh = ObjectRef::new(Kind::MeshConfig, ObjectKey::new("", "mesh"));
    assert!(!ix.updates_in_place(&[yes[0].clone(), mesh]));
}

#[test]
fn nothing_changed_is_an_empty_update() {
    let mut ix = Index::new(base());
    let mut same = ix.cluster().clone();
    let changes = ix.cluster().changes(&same);
    assert!(changes.is_empty(), "{changes:?}");
    let imp = ix.update(&mut same, &changes).unwrap();
    assert_eq!(imp, podmesh_compute::Impact { clusters: Some(Default::default()), ..Default::default() });
    assert!(ix == Index::new(base()));
}
