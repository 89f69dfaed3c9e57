//! Benchmarks of the pure core: appends, tile building, proofs, checkpoints.
//! Run with `cargo bench -p cairn-tlog`.

use std::hint::black_box;

use std::borrow::Cow;

use cairn_tlog::proof::{ExpandedTile, ProofError, TileMap, consistency_proof, inclusion_proof};
use cairn_tlog::{
    Checkpoint, Hash, Signer, TileBuilder, TileId, TileSource, TreeEdge, leaf_hash, verify_inclusion,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const TREE: u64 = 1 << 20;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
}

fn tiles(leaves: &[Hash]) -> TileMap {
    let mut b = TileBuilder::new();
    b.extend(leaves)
        .into_iter()
        .map(|t| ((t.id.level, t.id.index), t.data))
        .collect()
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    let batch = leaves(65_536);
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("tree_edge/65536_leaf_hashes", |b| {
        b.iter_batched(
            TreeEdge::new,
            |mut e| {
                e.extend(batch.iter().copied());
                black_box(e.root())
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("tile_builder/65536_leaf_hashes", |b| {
        b.iter_batched(
            TileBuilder::new,
            |mut t| black_box(t.extend(&batch).len()),
            BatchSize::SmallInput,
        )
    });
    let entries: Vec<Vec<u8>> = (0..65_536u32)
        .map(|i| {
            let mut e = vec![0u8; 256];
            e[..4].copy_from_slice(&i.to_be_bytes());
            e
        })
        .collect();
    g.bench_function("hash_and_append/65536_entries_of_256_bytes", |b| {
        b.iter_batched(
            TreeEdge::new,
            |mut e| {
                e.extend(entries.iter().map(|x| leaf_hash(x)));
                black_box(e.root())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn proofs(c: &mut Criterion) {
    let all = leaves(TREE);
    let src = tiles(&all);
    let size = TREE - 12_345;
    let root = cairn_tlog::tree_root(&src, size).expect("root");
    let mut g = c.benchmark_group("proofs");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("inclusion_generate/1M_tree", |b| {
        b.iter(|| {
            i = (i + 7919) % size;
            black_box(inclusion_proof(&src, size, i).expect("proof"))
        })
    });
    let expanded = Expanded(src.iter().map(|(k, v)| (*k, ExpandedTile::new(v))).collect());
    g.bench_function("inclusion_generate_expanded_tiles/1M_tree", |b| {
        b.iter(|| {
            i = (i + 7919) % size;
            black_box(inclusion_proof(&expanded, size, i).expect("proof"))
        })
    });
    let index = 777_777;
    let proof = inclusion_proof(&src, size, index).expect("proof");
    g.bench_function("inclusion_verify/1M_tree", |b| {
        b.iter(|| {
            verify_inclusion(black_box(&all[index as usize]), index, size, &proof, &root).expect("verifies")
        })
    });
    g.bench_function("consistency_generate/1M_tree", |b| {
        b.iter(|| black_box(consistency_proof(&src, 500_001, size).expect("proof")))
    });
    g.finish();
}

/// Tiles kept with their interior nodes, as a serving cache would keep them.
struct Expanded(std::collections::HashMap<(u8, u64), ExpandedTile>);

impl TileSource for Expanded {
    fn tile(&self, tile: TileId) -> Result<Cow<'_, [u8]>, ProofError> {
        Err(ProofError::TileUnavailable {
            tile,
            reason: "expanded tiles only".into(),
        })
    }

    fn subtree(&self, tile: TileId, offset: usize, height: u32) -> Result<Hash, ProofError> {
        self.0
            .get(&(tile.level, tile.index))
            .and_then(|t| t.subtree(offset, height))
            .ok_or(ProofError::TileUnavailable {
                tile,
                reason: "missing".into(),
            })
    }
}

fn checkpoints(c: &mut Criterion) {
    let signer = Signer::from_seed("example.com/log", [7; 32]).expect("key");
    let vkey = signer.verifier();
    let cp = Checkpoint::new("example.com/log", 123_456_789, leaf_hash(b"root"));
    let signed = cp.sign(&signer).to_bytes();
    let mut g = c.benchmark_group("checkpoint");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| b.iter(|| black_box(cp.sign(&signer).to_bytes())));
    g.bench_function("open_and_verify", |b| {
        b.iter(|| Checkpoint::open(black_box(&signed), &vkey, &[]).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, append, proofs, checkpoints);
criterion_main!(benches);
