//! The explorer's modules under Node's test runner (`tile-server/explorer/test/unit.test.mjs`):
//! tile paths, tile hashes, roots and inclusion proofs against `../shared/testvectors`, checkpoint
//! signatures, and tampering caught by the in-browser verification. Needs Node.js 20 or newer
//! (`CAIRN_NODE`, default `node` on PATH).

use std::path::Path;

#[test]
fn explorer_modules_pass_their_unit_tests() {
    let node = std::env::var_os("CAIRN_NODE").unwrap_or_else(|| "node".into());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("explorer/test");
    let out = std::process::Command::new(&node)
        .args(["--test", "unit.test.mjs"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("running {node:?} (Node.js 20 or newer is needed): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
    println!(
        "{}",
        stdout
            .lines()
            .filter(|l| l.starts_with("# "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
