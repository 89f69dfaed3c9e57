package main

import (
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// memTree is an RFC 6962 Merkle tree held in memory: the stored hashes of
// golang.org/x/mod/sumdb/tlog, in storage order, served by ReadHashes.
type memTree struct {
	hashes []tlog.Hash
	n      int64
}

// ReadHashes implements tlog.HashReader.
func (t *memTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(t.hashes)) {
			return nil, fmt.Errorf("hash index %d not stored (tree has %d entries)", x, t.n)
		}
		out[i] = t.hashes[x]
	}
	return out, nil
}

// appendEntry adds one record (leaf data) to the tree.
func (t *memTree) appendEntry(data []byte) error {
	hs, err := tlog.StoredHashes(t.n, data, t)
	if err != nil {
		return err
	}
	t.hashes = append(t.hashes, hs...)
	t.n++
	return nil
}

// root is the RFC 6962 root hash of the first n entries (n <= t.n).
func (t *memTree) root(n int64) (tlog.Hash, error) {
	if n < 0 || n > t.n {
		return tlog.Hash{}, fmt.Errorf("tree of size %d has no prefix of size %d", t.n, n)
	}
	return tlog.TreeHash(n, t)
}

// prove is the consistency proof from size old to size n (empty when old is 0,
// as c2sp.org/tlog-witness requires).
func (t *memTree) prove(n, old int64) (tlog.TreeProof, error) {
	switch {
	case old < 0 || old > n:
		return nil, fmt.Errorf("no consistency proof from size %d to size %d", old, n)
	case old == 0:
		return tlog.TreeProof{}, nil
	}
	return tlog.ProveTree(n, old, t)
}

// entryData is the deterministic content of entry i of the tree named by seed.
// Two runs with the same seed build trees where one is a prefix of the other.
// forked changes entry 0 only, so a forked tree shares no prefix with the honest one.
func entryData(seed string, i int64, forked bool) []byte {
	if forked && i == 0 {
		return []byte(fmt.Sprintf("cairn-go-witness/v1 seed=%s entry=%d FORKED\n", seed, i))
	}
	return []byte(fmt.Sprintf("cairn-go-witness/v1 seed=%s entry=%d\n", seed, i))
}

// growTo appends deterministic entries until the tree has n entries.
func (t *memTree) growTo(n int64, seed string, forked bool) error {
	for t.n < n {
		if err := t.appendEntry(entryData(seed, t.n, forked)); err != nil {
			return err
		}
	}
	return nil
}

func rootB64(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

// checkpointText is a c2sp.org/tlog-checkpoint body: origin, size, base64 root.
func checkpointText(origin string, n int64, root tlog.Hash) string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin, n, rootB64(root))
}

// signCheckpoint builds and signs (signed-note, Ed25519) the checkpoint of the
// first n entries of t. The origin is the signer's key name.
func signCheckpoint(t *memTree, n int64, signer note.Signer) ([]byte, tlog.Hash, error) {
	root, err := t.root(n)
	if err != nil {
		return nil, tlog.Hash{}, err
	}
	signed, err := note.Sign(&note.Note{Text: checkpointText(signer.Name(), n, root)}, signer)
	if err != nil {
		return nil, tlog.Hash{}, fmt.Errorf("signing checkpoint: %v", err)
	}
	return signed, root, nil
}

// parsedCheckpoint is the first three lines of a checkpoint body.
type parsedCheckpoint struct {
	Origin string
	Size   int64
	Root   string
}

func parseCheckpoint(text string) (parsedCheckpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return parsedCheckpoint{}, fmt.Errorf("checkpoint has fewer than 3 lines")
	}
	var c parsedCheckpoint
	c.Origin = lines[0]
	if c.Origin == "" {
		return c, fmt.Errorf("checkpoint has an empty origin line")
	}
	if _, err := fmt.Sscanf(lines[1], "%d", &c.Size); err != nil || fmt.Sprint(c.Size) != lines[1] || c.Size < 0 {
		return c, fmt.Errorf("checkpoint size line %q is not a decimal size", lines[1])
	}
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return c, fmt.Errorf("checkpoint root line %q is not a base64 SHA-256 hash", lines[2])
	}
	c.Root = lines[2]
	return c, nil
}
