//! Golden vectors made by an independent implementation (copied from `shared/testvectors/` into
//! `tests/data/`): every value must be reproduced byte for byte.

use std::collections::BTreeMap;

use cairn_tlog::proof::{TileMap, consistency_proof, inclusion_proof, tree_root};
use cairn_tlog::tile::{BundleId, TileId, TilePath, encode_index, parse_index, partial_tiles};
use cairn_tlog::{
    BundleBuilder, Checkpoint, Cosigner, EMPTY_ROOT, Hash, Note, Signer, TileBuilder, TlogProof, TreeEdge,
    VerifierKey, leaf_hash, verify_consistency, verify_inclusion,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hex_hash(v: &Value) -> Hash {
    Hash::from_slice(&hex::decode(v.as_str().expect("hex string")).expect("hex")).expect("32 bytes")
}

fn b64_hash(v: &Value) -> Hash {
    Hash::from_base64(v.as_str().expect("base64 string")).expect("base64 hash")
}

/// The `proof` list of a vector case, each hash parsed with `parse`.
fn proof_of(case: &Value, parse: fn(&Value) -> Hash) -> Vec<Hash> {
    case["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(parse)
        .collect()
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().expect("integer")
}

fn str_of(v: &Value) -> &str {
    v.as_str().expect("string")
}

/// Builds all tiles of a log from leaf hashes in the given batch sizes, keyed by (level, index); a
/// later (wider) version of a tile replaces the earlier one, as in object storage.
fn build_tiles(leaves: &[Hash], batches: impl Iterator<Item = usize>) -> TileMap {
    let mut builder = TileBuilder::new();
    let mut tiles = TileMap::new();
    let mut start = 0;
    for batch in batches {
        let end = (start + batch).min(leaves.len());
        for t in builder.extend(&leaves[start..end]) {
            tiles.insert((t.id.level, t.id.index), t.data);
        }
        start = end;
        if start == leaves.len() {
            break;
        }
    }
    assert_eq!(builder.size(), leaves.len() as u64);
    tiles
}

#[test]
fn merkle_roots_and_proofs() {
    let v = load("merkle.json");
    let leaves: Vec<Vec<u8>> = v["leaves"]
        .as_array()
        .expect("leaves")
        .iter()
        .map(|l| hex::decode(str_of(l)).expect("hex"))
        .collect();
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
    for (got, want) in hashes
        .iter()
        .zip(v["leaf_hashes"].as_array().expect("leaf_hashes"))
    {
        assert_eq!(*got, hex_hash(want));
    }
    let roots: Vec<Hash> = v["roots"]
        .as_array()
        .expect("roots")
        .iter()
        .map(hex_hash)
        .collect();
    assert_eq!(roots[0], EMPTY_ROOT);
    let mut edge = TreeEdge::new();
    for (n, root) in roots.iter().enumerate() {
        assert_eq!(edge.root(), *root, "edge root at size {n}");
        let tiles = build_tiles(&hashes[..n], std::iter::repeat(3));
        assert_eq!(tree_root(&tiles, n as u64), Ok(*root), "tile root at size {n}");
        if n < hashes.len() {
            edge.append(hashes[n]);
        }
    }
    let tiles = build_tiles(&hashes, std::iter::once(8));
    let cases = v["inclusion"].as_array().expect("inclusion");
    assert!(!cases.is_empty());
    for case in cases {
        let (index, size) = (u64_of(&case["index"]), u64_of(&case["size"]));
        let want: Vec<Hash> = proof_of(case, hex_hash);
        assert_eq!(
            inclusion_proof(&tiles, size, index),
            Ok(want.clone()),
            "inclusion {index} in {size}"
        );
        let root = &roots[size as usize];
        assert_eq!(
            verify_inclusion(&hashes[index as usize], index, size, &want, root),
            Ok(())
        );
        // The proof must not verify another leaf, another root or with a hash missing.
        assert!(verify_inclusion(&leaf_hash(b"not in the tree"), index, size, &want, root).is_err());
        if !want.is_empty() {
            assert!(verify_inclusion(&hashes[index as usize], index, size, &want[1..], root).is_err());
        }
    }
    let cases = v["consistency"].as_array().expect("consistency");
    assert!(!cases.is_empty());
    for case in cases {
        let (s1, s2) = (u64_of(&case["size1"]), u64_of(&case["size2"]));
        let want: Vec<Hash> = proof_of(case, hex_hash);
        assert_eq!(
            consistency_proof(&tiles, s1, s2),
            Ok(want.clone()),
            "consistency {s1} -> {s2}"
        );
        let (r1, r2) = (&roots[s1 as usize], &roots[s2 as usize]);
        assert_eq!(verify_consistency(s1, s2, &want, r1, r2), Ok(()));
        if s1 != s2 {
            assert!(verify_consistency(s1, s2, &want, r2, r1).is_err());
        }
    }
}

#[test]
fn paths() {
    let v = load("paths.json");
    for (n, path) in v["encode"].as_object().expect("encode") {
        let n: u64 = n.parse().expect("number");
        assert_eq!(encode_index(n), str_of(path));
        assert_eq!(parse_index(str_of(path)), Ok(n));
    }
    for t in v["tile_paths"].as_array().expect("tile_paths") {
        let id = TileId {
            level: u64_of(&t[0]) as u8,
            index: u64_of(&t[1]),
            width: u64_of(&t[2]) as u16,
        };
        assert_eq!(id.path(), str_of(&t[3]));
        assert_eq!(TilePath::parse(str_of(&t[3])), Ok(TilePath::Hash(id)));
    }
    for b in v["bundle_paths"].as_array().expect("bundle_paths") {
        let id = BundleId {
            index: u64_of(&b[0]),
            width: u64_of(&b[1]) as u16,
        };
        assert_eq!(id.path(), str_of(&b[2]));
        assert_eq!(TilePath::parse(str_of(&b[2])), Ok(TilePath::Entries(id)));
    }
    for (size, want) in v["partial_tiles"].as_object().expect("partial_tiles") {
        let want: Vec<TileId> = want
            .as_array()
            .expect("list")
            .iter()
            .map(|t| TileId {
                level: u64_of(&t[0]) as u8,
                index: u64_of(&t[1]),
                width: u64_of(&t[2]) as u16,
            })
            .collect();
        let mut got = partial_tiles(size.parse().expect("size"));
        got.sort_by_key(|t| (t.level, t.index));
        assert_eq!(got, want, "size {size}");
    }
}

/// Uneven batch sizes from a fixed linear congruential sequence, 1 to 3,000 leaves.
fn uneven_batches() -> impl Iterator<Item = usize> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    std::iter::repeat_with(move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        1 + (x >> 33) as usize % 3000
    })
}

#[test]
fn tiles_of_a_70000_entry_log() {
    let v = load("tiles70000.json");
    let size = u64_of(&v["size"]);
    let entries: Vec<Vec<u8>> = (0..size).map(|i| format!("entry {i}").into_bytes()).collect();
    let hashes: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();

    // Build hash tiles and bundles incrementally in uneven batches, as a publisher would, keeping only
    // what the final tree serves: every full tile, and the partial tiles of the final size.
    let mut tiles = TileBuilder::new();
    let mut bundles = BundleBuilder::new();
    let mut served: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut start = 0usize;
    let mut batches = 0;
    for batch in uneven_batches() {
        let end = (start + batch).min(entries.len());
        for t in tiles.extend(&hashes[start..end]) {
            served.insert(t.id.path(), t.data);
        }
        for b in bundles.extend(&entries[start..end]).expect("valid entries") {
            served.insert(b.id.path(), b.data);
        }
        batches += 1;
        start = end;
        if start == entries.len() {
            break;
        }
    }
    assert!(
        batches > 40,
        "the log must be built in many batches, got {batches}"
    );
    let mut keep: Vec<String> = partial_tiles(size).iter().map(TileId::path).collect();
    keep.extend(bundles.partial_bundle().map(|b| b.id.path()));
    served.retain(|path, _| !path.contains(".p/") || keep.contains(path));
    let want = v["tiles"].as_object().expect("tiles");
    assert_eq!(served.len(), want.len(), "number of served paths");
    for (path, digest) in want {
        let data = served.get(path).unwrap_or_else(|| panic!("{path} was not built"));
        assert_eq!(hex::encode(Sha256::digest(data)), str_of(digest), "{path}");
    }
    assert_eq!(tiles.root(), b64_hash(&v["roots"]["70000"]));

    let src: TileMap = served
        .iter()
        .filter_map(|(p, d)| match TilePath::parse(p) {
            Ok(TilePath::Hash(id)) => Some(((id.level, id.index), d.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        src[&(1, 0)][..32],
        *b64_hash(&v["level1_tile_000_first_hash"]).as_bytes()
    );
    let mut edge = TreeEdge::new();
    let roots = v["roots"].as_object().expect("roots");
    for (s, root) in roots {
        let s: u64 = s.parse().expect("size");
        assert_eq!(tree_root(&src, s), Ok(b64_hash(root)), "root from tiles at {s}");
    }
    for (i, h) in hashes.iter().enumerate() {
        edge.append(*h);
        if let Some(root) = roots.get(&(i + 1).to_string()) {
            assert_eq!(edge.root(), b64_hash(root), "edge root at {}", i + 1);
        }
    }
    for case in v["inclusion"].as_array().expect("inclusion") {
        let (index, s) = (u64_of(&case["index"]), u64_of(&case["size"]));
        let want: Vec<Hash> = proof_of(case, b64_hash);
        assert_eq!(
            inclusion_proof(&src, s, index),
            Ok(want.clone()),
            "inclusion {index} in {s}"
        );
        let root = tree_root(&src, s).expect("root");
        assert_eq!(
            verify_inclusion(&hashes[index as usize], index, s, &want, &root),
            Ok(())
        );
    }
    for case in v["consistency"].as_array().expect("consistency") {
        let (s1, s2) = (u64_of(&case["size1"]), u64_of(&case["size2"]));
        let want: Vec<Hash> = proof_of(case, b64_hash);
        assert_eq!(
            consistency_proof(&src, s1, s2),
            Ok(want.clone()),
            "consistency {s1} -> {s2}"
        );
        let (r1, r2) = (
            tree_root(&src, s1).expect("root"),
            tree_root(&src, s2).expect("root"),
        );
        assert_eq!(verify_consistency(s1, s2, &want, &r1, &r2), Ok(()));
    }
}

fn seed(v: &Value) -> [u8; 32] {
    hex::decode(str_of(v))
        .expect("hex")
        .try_into()
        .expect("32-byte seed")
}

#[test]
fn signed_notes_and_checkpoints() {
    let v = load("notes.json");
    let merkle = load("merkle.json");

    let pn = &v["peter_neumann"];
    let signer = Signer::parse(str_of(&pn["skey_go"])).expect("Go signer key");
    assert_eq!(signer.verifier().to_string(), str_of(&pn["vkey"]));
    assert_eq!(signer.to_skey(), str_of(&pn["skey_go"]));
    let mut note = Note::new(str_of(&pn["text"])).expect("text");
    note.sign(&signer);
    assert_eq!(note.to_bytes(), str_of(&pn["note"]).as_bytes());
    let vkey = VerifierKey::parse(str_of(&pn["vkey"])).expect("vkey");
    assert_eq!(
        Note::open(str_of(&pn["note"]).as_bytes(), &[vkey]).map(|n| n.text),
        Ok(str_of(&pn["text"]).to_owned())
    );

    let ex = &v["c2sp_example"];
    let vkey = VerifierKey::parse(str_of(&ex["vkey"])).expect("vkey");
    assert!(Note::open(str_of(&ex["note"]).as_bytes(), &[vkey]).is_ok());

    let lk = &v["log_key"];
    let log = Signer::from_seed(str_of(&lk["name"]), seed(&lk["seed"])).expect("log key");
    assert_eq!(log.verifier().to_string(), str_of(&lk["vkey"]));
    let wk = &v["witness_key"];
    let witness = Cosigner::from_seed(str_of(&wk["name"]), seed(&wk["seed"])).expect("witness key");
    assert_eq!(witness.verifier().to_string(), str_of(&wk["vkey_cosignature"]));
    assert_eq!(
        VerifierKey::parse(str_of(&wk["vkey_cosignature"])),
        Ok(witness.verifier())
    );

    let cp8 = &v["checkpoint_size8"];
    let checkpoint = Checkpoint::new(str_of(&lk["name"]), 8, hex_hash(&merkle["roots"][8]));
    assert_eq!(checkpoint.to_text(), str_of(&cp8["text"]));
    let mut signed = checkpoint.sign(&log);
    assert_eq!(signed.to_bytes(), str_of(&cp8["signed"]).as_bytes());
    signed.push(
        witness
            .sign(&checkpoint.to_text(), u64_of(&wk["timestamp"]))
            .expect("cosign"),
    );
    assert_eq!(signed.to_bytes(), str_of(&cp8["cosigned"]).as_bytes());
    let (opened, note) = Checkpoint::open(
        str_of(&cp8["cosigned"]).as_bytes(),
        &log.verifier(),
        &[witness.verifier()],
    )
    .expect("opens");
    assert_eq!(opened, checkpoint);
    assert_eq!(
        note.verify(&[witness.verifier()]).map(|s| s.len()),
        Ok(1),
        "the cosignature verifies on its own"
    );
    assert_eq!(
        cairn_tlog::cosignature::timestamp(&note.signatures[1].bytes),
        Some(u64_of(&wk["timestamp"]))
    );
    // A checkpoint whose cosignature is for other text must be rejected when the witness is known.
    let mut forged = note.clone();
    forged.text = Checkpoint::new(str_of(&lk["name"]), 9, checkpoint.root).to_text();
    forged.signatures[0] = log.sign(&forged.text);
    assert!(Checkpoint::open(&forged.to_bytes(), &log.verifier(), &[witness.verifier()]).is_err());
    assert!(
        Checkpoint::open(&forged.to_bytes(), &log.verifier(), &[]).is_ok(),
        "unknown signatures are ignored"
    );

    let empty = Checkpoint::new(str_of(&lk["name"]), 0, EMPTY_ROOT);
    assert_eq!(
        empty.sign(&log).to_bytes(),
        str_of(&v["checkpoint_empty"]["signed"]).as_bytes()
    );

    let rejects = v["must_reject"].as_array().expect("must_reject");
    assert!(!rejects.is_empty());
    for case in rejects {
        let vkey = VerifierKey::parse(str_of(&case["vkey"])).expect("vkey");
        let note = str_of(&case["note"]).as_bytes();
        let why = str_of(&case["why"]);
        assert!(
            Checkpoint::open(note, &vkey, &[]).is_err(),
            "checkpoint accepted: {why}"
        );
        if case["checkpoint_only"].as_bool() != Some(true) {
            assert!(Note::open(note, &[vkey]).is_err(), "note accepted: {why}");
        } else {
            assert!(
                Note::open(note, &[vkey]).is_ok(),
                "the note itself is valid: {why}"
            );
        }
    }
}

#[test]
fn tlog_proof_round_trip_and_rejections() {
    let v = load("notes.json");
    let lk = &v["log_key"];
    let log = Signer::from_seed(str_of(&lk["name"]), seed(&lk["seed"])).expect("log key");
    let entries: Vec<Vec<u8>> = (0..1000u32).map(|i| format!("entry {i}").into_bytes()).collect();
    let hashes: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let tiles = build_tiles(&hashes, std::iter::repeat(77));
    let size = entries.len() as u64;
    let checkpoint = Checkpoint::new(log.name(), size, tree_root(&tiles, size).expect("root"));
    let note = checkpoint.sign(&log).to_bytes();
    for index in [0u64, 1, 255, 256, 777, 999] {
        let proof = TlogProof {
            extra: (index % 2 == 1).then(|| b"context".to_vec()),
            index,
            proof: inclusion_proof(&tiles, size, index).expect("proof"),
            checkpoint: note.clone(),
        };
        let bytes = proof.to_bytes();
        let parsed = TlogProof::parse(&bytes).expect("parses");
        assert_eq!(parsed, proof);
        let (cp, _) = parsed
            .verify(&entries[index as usize], &log.verifier(), &[])
            .expect("verifies");
        assert_eq!(cp, checkpoint);
        assert!(parsed.verify(b"another entry", &log.verifier(), &[]).is_err());
        let other = Signer::from_seed(log.name(), [9; 32]).expect("key");
        assert!(
            parsed
                .verify(&entries[index as usize], &other.verifier(), &[])
                .is_err()
        );
        let mut wrong_index = parsed.clone();
        wrong_index.index = (index + 1) % size;
        assert!(
            wrong_index
                .verify(&entries[index as usize], &log.verifier(), &[])
                .is_err()
        );
    }
    let good = String::from_utf8(
        TlogProof {
            extra: None,
            index: 3,
            proof: vec![hashes[0]],
            checkpoint: note.clone(),
        }
        .to_bytes(),
    )
    .expect("utf-8");
    for bad in [
        good.replacen("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
        good.replacen("index 3", "index 03", 1),
        good.replacen("index 3", "index -3", 1),
        good.replacen("index 3\n", "", 1),
        good.replacen("\n\n", "\n", 1),
        good.replacen(&hashes[0].to_base64(), "AAAA", 1),
        good.replacen(&format!("{}\n", str_of(&lk["name"])), "", 1),
    ] {
        assert!(TlogProof::parse(bad.as_bytes()).is_err(), "{bad}");
    }
}
