//! The published layout: shard prefixes as exact strings, and `shards.json` against hand-written
//! documents.

use cairn_store::testing::{test_shard, test_signer};
use cairn_store::{Lifecycle, Shard, ShardListing, ShardsJson, http_prefix, shard_prefix};

#[test]
fn prefixes_are_exact() {
    assert_eq!(shard_prefix(0), "logs/0");
    assert_eq!(shard_prefix(1), "logs/1");
    assert_eq!(shard_prefix(42), "logs/42");
    assert_eq!(shard_prefix(u32::MAX), "logs/4294967295");
    assert_eq!(http_prefix(1), "/logs/1");
    assert_eq!(http_prefix(1000), "/logs/1000");

    let shard = test_shard(7);
    assert_eq!(shard.prefix(), "logs/7");
    assert_eq!(shard.http_prefix(), "/logs/7");
    assert_eq!(
        ShardListing::new(shard, cairn_store::ShardKind::Opaque, Lifecycle::Active).http_prefix,
        "/logs/7"
    );
}

#[test]
fn lifecycle_names() {
    assert_eq!(Lifecycle::Active.as_str(), "active");
    assert_eq!(Lifecycle::Frozen.as_str(), "frozen");
}

#[test]
fn shards_json_round_trips() {
    let doc = ShardsJson {
        shards: vec![
            ShardListing::new(test_shard(1), cairn_store::ShardKind::Opaque, Lifecycle::Frozen),
            ShardListing::new(test_shard(2), cairn_store::ShardKind::Sigstore, Lifecycle::Active),
        ],
    };
    let bytes = doc.to_bytes();
    assert_eq!(ShardsJson::parse(&bytes).expect("parses"), doc);

    // The wire form, flat as verifiers read it.
    let value: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    let (vkey1, vkey2) = (test_shard(1).vkey, test_shard(2).vkey);
    let expected = serde_json::json!({"shards": [
        {"id": 1, "origin": "test.cairn.dev/shard-1", "vkey": vkey1, "kind": "opaque", "state": "frozen", "prefix": "/logs/1"},
        {"id": 2, "origin": "test.cairn.dev/shard-2", "vkey": vkey2, "kind": "sigstore", "state": "active", "prefix": "/logs/2"},
    ]});
    assert_eq!(value, expected);

    let empty = ShardsJson::default();
    assert_eq!(empty.to_bytes(), br#"{"shards":[]}"#);
    assert_eq!(ShardsJson::parse(br#"{"shards":[]}"#).expect("parses"), empty);
}

#[test]
fn hand_written_shards_json_parses() {
    let doc = ShardsJson::parse(
        br#"{"shards":[{"id":1,"origin":"o","vkey":"v","state":"frozen","prefix":"/logs/1"}]}"#,
    )
    .expect("parses");
    assert_eq!(
        doc.shards,
        [ShardListing {
            shard: Shard {
                id: 1,
                origin: "o".into(),
                vkey: "v".into(),
            },
            kind: cairn_store::ShardKind::Opaque,
            state: Lifecycle::Frozen,
            http_prefix: "/logs/1".into(),
            valid_from: None,
            valid_until: None,
            archived: false,
            base_url: None,
        }]
    );
    assert_eq!(doc.shards[0].state, Lifecycle::Frozen);
    // An archived shard says so; written back, the field appears only then.
    let archived = ShardsJson::parse(
        br#"{"shards":[{"id":3,"origin":"o3","vkey":"v","state":"frozen","prefix":"/logs/3","archived":true}]}"#,
    )
    .expect("parses");
    assert!(archived.shards[0].archived);
    let text = serde_json::to_string(&doc.shards[0]).expect("serializes");
    assert!(!text.contains("archived"), "{text}");
    // A listing written before shards had kinds is an opaque shard; a Sigstore one says so.
    let sigstore = ShardsJson::parse(
        br#"{"shards":[{"id":2,"origin":"o","vkey":"v","kind":"sigstore","state":"active","prefix":"/logs/2"}]}"#,
    )
    .expect("parses");
    assert_eq!(sigstore.shards[0].kind, cairn_store::ShardKind::Sigstore);

    let active = ShardsJson::parse(
        br#"{"shards":[{"id":3,"origin":"o","vkey":"v","state":"active","prefix":"/elsewhere/3"}]}"#,
    )
    .expect("parses");
    assert_eq!(active.shards[0].state, Lifecycle::Active);
    // The listed prefix is the document's, not recomputed from the id.
    assert_eq!(active.shards[0].http_prefix, "/elsewhere/3");
}

#[test]
fn malformed_shards_json_is_an_error() {
    let bad: [&[u8]; 7] = [
        br#"{"shards":[{"id":1,"origin":"o","vkey":"v","state":"retired","prefix":"/logs/1"}]}"#,
        br#"{"shards":[{"id":1,"origin":"o","vkey":"v","state":"Frozen","prefix":"/logs/1"}]}"#,
        br#"{"shards":[{"id":1,"origin":"o","vkey":"v","prefix":"/logs/1"}]}"#,
        br#"{"shards":[{"id":1,"origin":"o","state":"active","prefix":"/logs/1"}]}"#,
        br#"{"shards":[{"id":-1,"origin":"o","vkey":"v","state":"active","prefix":"/logs/1"}]}"#,
        br#"{"shards":{}}"#,
        b"not json",
    ];
    for doc in bad {
        assert!(
            ShardsJson::parse(doc).is_err(),
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
}

#[test]
fn a_listing_derefs_to_its_shard() {
    let listing = ShardListing::new(test_shard(5), cairn_store::ShardKind::Opaque, Lifecycle::Active);
    assert_eq!(listing.id, 5);
    assert_eq!(listing.origin, "test.cairn.dev/shard-5");
    let shard: &Shard = &listing;
    assert_eq!(shard, &test_shard(5));
    assert_eq!(listing.verifier().expect("key"), test_signer(5).verifier());
    // Methods of the shard through the listing: its object-store prefix.
    assert_eq!(listing.prefix(), "logs/5");
    assert_eq!(listing.http_prefix, "/logs/5");

    let bad_key = ShardListing::new(
        Shard {
            id: 1,
            origin: "o".into(),
            vkey: "v".into(),
        },
        cairn_store::ShardKind::Opaque,
        Lifecycle::Frozen,
    );
    assert!(bad_key.verifier().is_err());
}
