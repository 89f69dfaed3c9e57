//! Writes a complete tiled log to a directory, as the publisher would, for tests and read benchmarks:
//! `<root>/logs/<id>/{checkpoint,tile/...}` and `<root>/shards.json`.

use std::path::Path;

use cairn_tlog::{BundleBuilder, Checkpoint, Hash, Signer, TileBuilder, leaf_hash};

/// A signing key for test shard `id`, origin `test.cairn.dev/shard-<id>`.
pub fn signer(id: u32) -> Signer {
    let mut seed = [9u8; 32];
    seed[..4].copy_from_slice(&id.to_be_bytes());
    Signer::from_seed(&format!("test.cairn.dev/shard-{id}"), seed).unwrap_or_else(|e| panic!("test key: {e}"))
}

fn write(root: &Path, rel: &str, data: &[u8]) -> std::io::Result<()> {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, data)
}

/// Writes shard `id` with `entries`, publishing a checkpoint after each batch (as a publisher does, so
/// the partial tiles of every intermediate size exist too). Returns the checkpoints written, in order.
pub fn write_log(
    root: &Path,
    id: u32,
    entries: &[Vec<u8>],
    batches: &[usize],
) -> std::io::Result<Vec<Checkpoint>> {
    let signer = signer(id);
    let dir = root.join(format!("logs/{id}"));
    let mut tiles = TileBuilder::new();
    let mut bundles = BundleBuilder::new();
    let mut checkpoints = Vec::new();
    let mut start = 0;
    let mut sizes = batches
        .iter()
        .copied()
        .chain(std::iter::repeat(entries.len().max(1)));
    loop {
        let end = (start + sizes.next().unwrap_or(1)).min(entries.len());
        let leaves: Vec<Hash> = entries[start..end].iter().map(|e| leaf_hash(e)).collect();
        for t in tiles.extend(&leaves) {
            write(&dir, &t.id.path(), &t.data)?;
        }
        let new = bundles
            .extend(&entries[start..end])
            .map_err(std::io::Error::other)?;
        for b in new {
            write(&dir, &b.id.path(), &b.data)?;
        }
        let cp = Checkpoint::new(signer.name(), end as u64, tiles.root());
        write(&dir, "checkpoint", &cp.sign(&signer).to_bytes())?;
        checkpoints.push(cp);
        start = end;
        if start == entries.len() {
            return Ok(checkpoints);
        }
    }
}

/// Writes `<root>/shards.json` for test shards `ids`, all active.
pub fn write_shards_json(root: &Path, ids: &[u32]) -> std::io::Result<()> {
    let list: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            let s = signer(*id);
            serde_json::json!({"id": id, "origin": s.name(), "vkey": s.verifier().to_string(), "state": "active", "prefix": format!("/logs/{id}")})
        })
        .collect();
    write(
        root,
        "shards.json",
        serde_json::json!({ "shards": list }).to_string().as_bytes(),
    )
}
