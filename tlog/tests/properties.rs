//! Property tests against a naive reference: the recursive definitions of RFC 6962 §2.1, written as
//! plainly as the RFC states them, over every size up to a few thousand.

use cairn_tlog::proof::{TileMap, consistency_proof, inclusion_proof, leaf_hash_at, tree_root};
use cairn_tlog::{
    EMPTY_ROOT, Hash, TileBuilder, TreeEdge, leaf_hash, node_hash, verify_consistency, verify_inclusion,
};
use proptest::prelude::*;

const MAX: usize = 3000;

fn k_of(n: usize) -> usize {
    1 << (n - 1).ilog2()
}

/// MTH(D[n]).
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => node_hash(&mth(&d[..k_of(n)]), &mth(&d[k_of(n)..])),
    }
}

/// PATH(m, D[n]).
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = k_of(n);
    let (mut p, sibling) = if m < k {
        (path(m, &d[..k]), mth(&d[k..]))
    } else {
        (path(m - k, &d[k..]), mth(&d[..k]))
    };
    p.push(sibling);
    p
}

/// SUBPROOF(m, D[n], b).
fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    let (mut p, h) = if m <= k {
        (subproof(m, &d[..k], b), mth(&d[k..]))
    } else {
        (subproof(m - k, &d[k..], false), mth(&d[..k]))
    };
    p.push(h);
    p
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| leaf_hash(&i.to_le_bytes())).collect()
}

/// All tiles of the tree of `leaves.len()` (a full tile replaces its earlier partial versions).
fn tiles(leaves: &[Hash], batch: usize) -> TileMap {
    let mut b = TileBuilder::new();
    let mut out = TileMap::new();
    for chunk in leaves.chunks(batch.max(1)) {
        for t in b.extend(chunk) {
            out.insert((t.id.level, t.id.index), t.data);
        }
    }
    out
}

#[test]
fn roots_for_every_size() {
    let all = leaves(MAX);
    let src = tiles(&all, MAX);
    let mut edge = TreeEdge::new();
    let mut builder = TileBuilder::new();
    for n in 0..=MAX {
        let want = mth(&all[..n]);
        assert_eq!(edge.root(), want, "edge, size {n}");
        assert_eq!(builder.root(), want, "tile builder, size {n}");
        assert_eq!(tree_root(&src, n as u64), Ok(want), "from tiles, size {n}");
        if n < MAX {
            edge.append(all[n]);
            builder.extend(&all[n..n + 1]);
            assert_eq!(leaf_hash_at(&src, MAX as u64, n as u64), Ok(all[n]));
        }
    }
}

#[test]
fn every_proof_in_small_trees() {
    let all = leaves(70);
    let src = tiles(&all, 5);
    for n in 1..=all.len() {
        let root = mth(&all[..n]);
        for m in 0..n {
            let p = inclusion_proof(&src, n as u64, m as u64).expect("proof");
            assert_eq!(p, path(m, &all[..n]), "inclusion {m} in {n}");
            assert_eq!(verify_inclusion(&all[m], m as u64, n as u64, &p, &root), Ok(()));
        }
        for m in 1..=n {
            let p = consistency_proof(&src, m as u64, n as u64).expect("proof");
            assert_eq!(p, subproof(m, &all[..n], true), "consistency {m} -> {n}");
            assert_eq!(
                verify_consistency(m as u64, n as u64, &p, &mth(&all[..m]), &root),
                Ok(())
            );
        }
    }
}

fn shared_tree() -> &'static (Vec<Hash>, TileMap) {
    static TREE: std::sync::OnceLock<(Vec<Hash>, TileMap)> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        let all = leaves(MAX);
        let src = tiles(&all, 97);
        (all, src)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn inclusion_matches_reference(size in 1usize..=MAX, index_seed in any::<u64>(), flip in any::<(usize, u8)>()) {
        let (all, src) = shared_tree();
        let index = (index_seed % size as u64) as usize;
        let p = inclusion_proof(src, size as u64, index as u64).expect("proof");
        prop_assert_eq!(&p, &path(index, &all[..size]));
        let root = mth(&all[..size]);
        prop_assert_eq!(verify_inclusion(&all[index], index as u64, size as u64, &p, &root), Ok(()));
        // Any single flipped bit in the proof must make it fail.
        if !p.is_empty() {
            let mut bad = p.clone();
            let i = flip.0 % bad.len();
            bad[i].0[(flip.1 % 32) as usize] ^= 1;
            prop_assert!(verify_inclusion(&all[index], index as u64, size as u64, &bad, &root).is_err());
        }
        // The proof never verifies at another index.
        if size > 1 {
            let other = (index + 1) % size;
            prop_assert!(verify_inclusion(&all[index], other as u64, size as u64, &p, &root).is_err());
        }
    }

    #[test]
    fn consistency_matches_reference(a in 1usize..=MAX, b in 1usize..=MAX, flip in any::<(usize, u8)>()) {
        let (all, src) = shared_tree();
        let (s1, s2) = (a.min(b), a.max(b));
        let p = consistency_proof(src, s1 as u64, s2 as u64).expect("proof");
        prop_assert_eq!(&p, &subproof(s1, &all[..s2], true));
        let (r1, r2) = (mth(&all[..s1]), mth(&all[..s2]));
        prop_assert_eq!(verify_consistency(s1 as u64, s2 as u64, &p, &r1, &r2), Ok(()));
        if !p.is_empty() {
            let mut bad = p.clone();
            let i = flip.0 % bad.len();
            bad[i].0[(flip.1 % 32) as usize] ^= 1;
            prop_assert!(verify_consistency(s1 as u64, s2 as u64, &bad, &r1, &r2).is_err());
        }
        if s1 != s2 {
            // An old root that is not a prefix of the new tree must be rejected.
            let wrong = mth(&all[1..s1 + 1]);
            prop_assert!(verify_consistency(s1 as u64, s2 as u64, &p, &wrong, &r2).is_err());
        }
    }

    #[test]
    fn incremental_tiles_equal_building_from_scratch(
        size in 0usize..=MAX,
        batches in proptest::collection::vec(1usize..700, 1..40),
        resume_at in any::<usize>(),
    ) {
        let all = &shared_tree().0[..size];
        let scratch = tiles(all, size.max(1));
        // Build in random batches, and at one point throw the builder away and resume from the partial
        // tiles written so far, as a new leader would.
        let mut b = TileBuilder::new();
        let mut got = TileMap::new();
        let mut start = 0;
        let resume_batch = resume_at % batches.len();
        for (i, batch) in batches.iter().cycle().enumerate() {
            if start >= size {
                break;
            }
            if i == resume_batch {
                let partials = b.partial_tiles();
                b = TileBuilder::from_partial_tiles(b.size(), partials.iter().map(|t| (t.id, t.data.as_slice())))
                    .expect("resume");
            }
            let end = (start + batch).min(size);
            for t in b.extend(&all[start..end]) {
                got.insert((t.id.level, t.id.index), t.data);
            }
            start = end;
        }
        prop_assert_eq!(got, scratch);
        prop_assert_eq!(b.root(), mth(all));
    }
}
