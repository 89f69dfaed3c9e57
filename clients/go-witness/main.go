// Command cairn-go-witness is an independent c2sp.org/tlog-witness client for
// Cairn's interoperability tests. It plays a log in front of real witnesses
// (or Cairn's own), built only on published Go packages:
//
//   - golang.org/x/mod/sumdb/note: signed notes, Ed25519 log keys
//   - golang.org/x/mod/sumdb/tlog: RFC 6962 trees and consistency proofs
//   - github.com/transparency-dev/formats/note: cosignature/v1 verifiers (type 0x04)
//
// Subcommands:
//
//	keygen --name NAME
//	    Prints a new Ed25519 signed-note key pair: the private key (skey) on the
//	    first line, the verifier key (vkey) on the second.
//
//	log --skey SKEY --witness URL... --witness-vkey VKEY... [--entries N] [--rounds R]
//	    [--seed S] [--start M] [--note-out FILE] [--timeout D]
//	    Grows an in-memory tree by N entries R times (after M entries added
//	    silently); after each round signs a checkpoint (origin = key name) and
//	    submits it to <URL>/add-checkpoint of every witness, from the size that
//	    witness last cosigned (0 at first; on 409 the proof is rebuilt from the
//	    size in the text/x.tlog.size body and the request retried once). Prints a
//	    JSON line per round. Exits 1 if any round is not cosigned by every
//	    --witness-vkey. --note-out writes the last checkpoint with the log
//	    signature and every cosignature received for it.
//
//	fork --skey SKEY --witness URL --witness-vkey VKEY... --size N [--seed S]
//	    [--extra K] [--timeout D]
//	    Gets the honest checkpoint of size N cosigned (as log does), then submits
//	    a checkpoint of size N+K (default K=1) of a tree whose first entry
//	    differs, signed by the same key, with old=N and a consistency proof from
//	    the forked tree. Prints a JSON line for each phase. Exits 0 only if the
//	    witness refused the fork with 409 (reporting size N) or 422.
//
//	verify --note FILE --log-vkey VKEY [--witness-vkey VKEY...] [--quorum K]
//	    Opens a checkpoint note (FILE "-" is stdin) and exits 0 if the log's
//	    signature verifies and at least K (default: all) of the given witness
//	    keys cosigned it. Signatures from other keys are ignored. Prints a JSON
//	    line saying which keys verified.
//
//	witness-vkey --name NAME --ssh-pubkey FILE
//	    Prints the cosignature/v1 verifier key (type 0x04) of a witness named
//	    NAME whose Ed25519 key is the OpenSSH public key in FILE (as litewitness
//	    takes its key from ssh-agent), computed independently of the witness.
//
// Exit status: 0 success, 1 failure (message on stderr), 2 usage error.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

const usageText = `usage:
  cairn-go-witness keygen --name NAME
  cairn-go-witness log --skey SKEY --witness URL [--witness URL...] --witness-vkey VKEY [--witness-vkey VKEY...]
                       [--entries N] [--rounds R] [--seed S] [--start M] [--note-out FILE] [--timeout 30s]
  cairn-go-witness fork --skey SKEY --witness URL --witness-vkey VKEY [...] --size N [--seed S] [--extra K] [--timeout 30s]
  cairn-go-witness verify --note FILE|- --log-vkey VKEY [--witness-vkey VKEY...] [--quorum K]
  cairn-go-witness witness-vkey --name NAME --ssh-pubkey FILE
`

// usageError is reported with exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usageText)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "keygen":
		err = cmdKeygen(args)
	case "log":
		err = cmdLog(args)
	case "fork":
		err = cmdFork(args)
	case "verify":
		err = cmdVerify(args)
	case "witness-vkey":
		err = cmdWitnessVkey(args)
	case "-h", "--help", "help":
		fmt.Print(usageText)
		return
	default:
		err = usagef("unknown subcommand %q", cmd)
	}
	if err == nil {
		return
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "cairn-go-witness %s: %v\n%s", os.Args[1], err, usageText)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "cairn-go-witness %s: %v\n", os.Args[1], err)
	os.Exit(1)
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func printJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(b))
}

func cmdKeygen(args []string) error {
	fs := newFlagSet("keygen")
	name := fs.String("name", "", "key name (the log origin)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return usagef("--name is required")
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, *name)
	if err != nil {
		return err
	}
	fmt.Println(skey)
	fmt.Println(vkey)
	return nil
}

// roundReport is the JSON line printed per round (or per fork phase).
type roundReport struct {
	Phase      string        `json:"phase,omitempty"`
	Round      int           `json:"round,omitempty"`
	Size       int64         `json:"size"`
	Root       string        `json:"root"`
	Status     int           `json:"status"`
	CosignedBy []string      `json:"cosigned_by"`
	Witnesses  []*submission `json:"witnesses"`
}

// submitAll sends the checkpoint of size n to every witness and reports the
// round. Status is 200 if every witness answered 200, else the first other
// status (0 if a request failed). missing lists the trusted keys that did not
// cosign.
func submitAll(peers []*witnessPeer, t *memTree, n int64, signed []byte, ks *keySet) (*roundReport, []string, []error) {
	root, _ := t.root(n)
	rep := &roundReport{Size: n, Root: rootB64(root), Status: http.StatusOK, CosignedBy: []string{}}
	var errs []error
	seen := map[note.Verifier]bool{}
	for _, p := range peers {
		sub, err := p.submit(t, n, signed, ks)
		rep.Witnesses = append(rep.Witnesses, sub)
		if err != nil {
			errs = append(errs, err)
		}
		if rep.Status == http.StatusOK && sub.Status != http.StatusOK {
			rep.Status = sub.Status
		}
		for _, v := range sub.verified {
			if !seen[v] {
				seen[v] = true
				rep.CosignedBy = append(rep.CosignedBy, v.Name())
			}
		}
	}
	var missing []string
	for i, v := range ks.verifiers {
		if !seen[v] {
			missing = append(missing, ks.vkeys[i])
		}
	}
	return rep, missing, errs
}

func loadSigner(skey string) (note.Signer, error) {
	if skey == "" {
		return nil, usagef("--skey is required")
	}
	s, err := note.NewSigner(strings.TrimSpace(skey))
	if err != nil {
		return nil, fmt.Errorf("log signer key: %v", err)
	}
	return s, nil
}

func cmdLog(args []string) error {
	fs := newFlagSet("log")
	skey := fs.String("skey", "", "log signer key (PRIVATE+KEY+...)")
	var witnesses, vkeys multiFlag
	fs.Var(&witnesses, "witness", "witness submission prefix URL (repeatable)")
	fs.Var(&vkeys, "witness-vkey", "witness cosignature verifier key (repeatable)")
	entries := fs.Int64("entries", 1, "entries added per round")
	rounds := fs.Int("rounds", 1, "rounds")
	seed := fs.String("seed", "cairn", "seed naming the deterministic entries")
	start := fs.Int64("start", 0, "entries in the tree before the first round (not submitted)")
	noteOut := fs.String("note-out", "", "write the last checkpoint with all its cosignatures here")
	timeout := fs.Duration("timeout", 30*time.Second, "HTTP timeout per request")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	signer, err := loadSigner(*skey)
	if err != nil {
		return err
	}
	switch {
	case len(witnesses) == 0:
		return usagef("at least one --witness is required")
	case len(vkeys) == 0:
		return usagef("at least one --witness-vkey is required")
	case *entries < 1 || *rounds < 1 || *start < 0:
		return usagef("--entries and --rounds must be at least 1, --start at least 0")
	}
	ks, err := witnessKeys(vkeys)
	if err != nil {
		return err
	}
	var peers []*witnessPeer
	for _, u := range witnesses {
		peers = append(peers, newWitnessPeer(u, *timeout))
	}

	t := &memTree{}
	var failures []string
	var last []byte
	for r := 1; r <= *rounds; r++ {
		n := *start + int64(r)**entries
		if err := t.growTo(n, *seed, false); err != nil {
			return err
		}
		signed, _, err := signCheckpoint(t, n, signer)
		if err != nil {
			return err
		}
		rep, missing, errs := submitAll(peers, t, n, signed, ks)
		rep.Round = r
		printJSON(rep)
		for _, e := range errs {
			failures = append(failures, fmt.Sprintf("round %d (size %d): %v", r, n, e))
		}
		for _, vk := range missing {
			failures = append(failures, fmt.Sprintf("round %d (size %d): not cosigned by %s (status %d)", r, n, vk, rep.Status))
		}
		last = signed
		for _, w := range rep.Witnesses {
			last = append(last, w.cosigs...)
		}
		if len(errs) > 0 {
			break // the witnesses' state is unknown; later rounds would only add noise
		}
	}
	if *noteOut != "" {
		if err := os.WriteFile(*noteOut, last, 0o644); err != nil {
			return err
		}
	}
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "\n  "))
	}
	return nil
}

func cmdFork(args []string) error {
	fs := newFlagSet("fork")
	skey := fs.String("skey", "", "log signer key (PRIVATE+KEY+...)")
	witness := fs.String("witness", "", "witness submission prefix URL")
	var vkeys multiFlag
	fs.Var(&vkeys, "witness-vkey", "witness cosignature verifier key (repeatable)")
	size := fs.Int64("size", 0, "size of the honest checkpoint")
	seed := fs.String("seed", "cairn", "seed naming the deterministic entries")
	extra := fs.Int64("extra", 1, "the forked checkpoint has size+extra entries (0: same size, other root)")
	timeout := fs.Duration("timeout", 30*time.Second, "HTTP timeout per request")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	signer, err := loadSigner(*skey)
	if err != nil {
		return err
	}
	switch {
	case *witness == "":
		return usagef("--witness is required")
	case len(vkeys) == 0:
		return usagef("at least one --witness-vkey is required")
	case *size < 1 || *extra < 0:
		return usagef("--size must be at least 1 and --extra at least 0")
	}
	ks, err := witnessKeys(vkeys)
	if err != nil {
		return err
	}
	peer := newWitnessPeer(*witness, *timeout)

	// Phase 1: the honest checkpoint of size N, cosigned.
	honest := &memTree{}
	if err := honest.growTo(*size, *seed, false); err != nil {
		return err
	}
	signed, _, err := signCheckpoint(honest, *size, signer)
	if err != nil {
		return err
	}
	rep, missing, errs := submitAll([]*witnessPeer{peer}, honest, *size, signed, ks)
	rep.Phase = "honest"
	printJSON(rep)
	if len(errs) > 0 {
		return fmt.Errorf("honest checkpoint of size %d: %v", *size, errs[0])
	}
	if rep.Status != http.StatusOK || len(missing) > 0 {
		return fmt.Errorf("honest checkpoint of size %d was not cosigned by every witness key (status %d, body %q, missing %v); "+
			"the fork test needs the witness at size %d of this --seed first",
			*size, rep.Status, rep.Witnesses[0].Body, missing, *size)
	}

	// Phase 2: a fork of the same log, signed with the same key: entry 0 differs.
	forked := &memTree{}
	n := *size + *extra
	if err := forked.growTo(n, *seed, true); err != nil {
		return err
	}
	signedFork, forkRoot, err := signCheckpoint(forked, n, signer)
	if err != nil {
		return err
	}
	proof, err := forked.prove(n, *size)
	if err != nil {
		return err
	}
	r, err := peer.post(*size, proof, signedFork)
	if err != nil {
		return err
	}
	out := map[string]any{
		"phase":        "fork",
		"size":         n,
		"old":          *size,
		"root":         rootB64(forkRoot),
		"status":       r.status,
		"content_type": r.contentType,
		"body":         string(r.body),
	}
	printJSON(out)
	switch r.status {
	case http.StatusUnprocessableEntity:
		return nil
	case http.StatusConflict:
		// A refusal only if the witness still stands at the honest size; a
		// different size means it moved on for another reason.
		latest, err := parseSizeBody(r)
		if err != nil {
			return fmt.Errorf("fork answered 409 with a bad body: %v", err)
		}
		if latest != *size {
			return fmt.Errorf("fork answered 409 with size %d, not the honest size %d: no verdict on the fork", latest, *size)
		}
		return nil
	case http.StatusOK:
		return fmt.Errorf("WITNESS COSIGNED A FORK: size %d root %s after cosigning size %d of another tree; cosignatures:\n%s",
			n, rootB64(forkRoot), *size, r.body)
	default:
		return fmt.Errorf("fork answered %d (%q), expected 409 or 422", r.status, r.body)
	}
}

// verifyReport is the JSON line printed by verify.
type verifyReport struct {
	Origin       string   `json:"origin"`
	Size         int64    `json:"size"`
	Root         string   `json:"root"`
	LogSignature bool     `json:"log_signature"`
	CosignedBy   []string `json:"cosigned_by"`
	Verified     int      `json:"verified"`
	Quorum       int      `json:"quorum"`
	OK           bool     `json:"ok"`
}

func cmdVerify(args []string) error {
	fs := newFlagSet("verify")
	notePath := fs.String("note", "", "checkpoint note file ('-' for stdin)")
	logVkey := fs.String("log-vkey", "", "log verifier key")
	var vkeys multiFlag
	fs.Var(&vkeys, "witness-vkey", "witness cosignature verifier key (repeatable)")
	quorum := fs.Int("quorum", -1, "witness cosignatures required (default: all given keys)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *notePath == "":
		return usagef("--note is required")
	case *logVkey == "":
		return usagef("--log-vkey is required")
	}
	var msg []byte
	var err error
	if *notePath == "-" {
		msg, err = io.ReadAll(os.Stdin)
	} else {
		msg, err = os.ReadFile(*notePath)
	}
	if err != nil {
		return err
	}
	logV, err := fnote.NewVerifier(*logVkey)
	if err != nil {
		return fmt.Errorf("log verifier key %q: %v", *logVkey, err)
	}
	ks, err := witnessKeys(vkeys)
	if err != nil {
		return err
	}
	for _, v := range ks.verifiers {
		if v.Name() == logV.Name() && v.KeyHash() == logV.KeyHash() {
			return usagef("--log-vkey is also given as --witness-vkey")
		}
	}
	k := *quorum
	if k < 0 {
		k = len(ks.verifiers)
	}
	if k > len(ks.verifiers) {
		return usagef("--quorum %d is more than the %d distinct witness keys given", k, len(ks.verifiers))
	}

	n, got, err := verifiedBy(msg, ks, logV)
	if err != nil {
		return fmt.Errorf("opening note: %v", err)
	}
	rep := verifyReport{Quorum: k, CosignedBy: []string{}}
	if n != nil {
		if c, err := parseCheckpoint(n.Text); err == nil {
			rep.Origin, rep.Size, rep.Root = c.Origin, c.Size, c.Root
		} else {
			defer fmt.Fprintf(os.Stderr, "cairn-go-witness verify: note text is not a checkpoint: %v\n", err)
		}
	}
	for _, v := range got {
		if v == logV {
			rep.LogSignature = true
		} else {
			rep.CosignedBy = append(rep.CosignedBy, v.Name())
		}
	}
	rep.Verified = len(rep.CosignedBy)
	rep.OK = rep.LogSignature && rep.Verified >= k && rep.Origin != ""
	printJSON(rep)
	switch {
	case !rep.LogSignature:
		return fmt.Errorf("the log signature (%s) does not verify or is missing", *logVkey)
	case rep.Origin == "":
		return fmt.Errorf("the signed text is not a checkpoint")
	case rep.Verified < k:
		return fmt.Errorf("%d of the given witness keys cosigned, quorum is %d", rep.Verified, k)
	}
	return nil
}

// sshEd25519PublicKey reads an OpenSSH "ssh-ed25519 AAAA... comment" line.
func sshEd25519PublicKey(line string) (ed25519.PublicKey, error) {
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "ssh-ed25519" {
		return nil, fmt.Errorf("not an OpenSSH ssh-ed25519 public key line")
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return nil, fmt.Errorf("public key blob: %v", err)
	}
	// RFC 4253 wire format: string "ssh-ed25519", string key (32 bytes).
	readString := func() ([]byte, error) {
		if len(blob) < 4 {
			return nil, fmt.Errorf("truncated public key blob")
		}
		n := binary.BigEndian.Uint32(blob)
		if uint64(len(blob)-4) < uint64(n) {
			return nil, fmt.Errorf("truncated public key blob")
		}
		s := blob[4 : 4+n]
		blob = blob[4+n:]
		return s, nil
	}
	algo, err := readString()
	if err != nil {
		return nil, err
	}
	key, err := readString()
	if err != nil {
		return nil, err
	}
	if string(algo) != "ssh-ed25519" || len(key) != ed25519.PublicKeySize || len(blob) != 0 {
		return nil, fmt.Errorf("malformed ssh-ed25519 public key blob")
	}
	return ed25519.PublicKey(key), nil
}

func cmdWitnessVkey(args []string) error {
	fs := newFlagSet("witness-vkey")
	name := fs.String("name", "", "witness name (litewitness -name)")
	pubPath := fs.String("ssh-pubkey", "", "OpenSSH Ed25519 public key file of the witness")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" || *pubPath == "" {
		return usagef("--name and --ssh-pubkey are required")
	}
	b, err := os.ReadFile(*pubPath)
	if err != nil {
		return err
	}
	pk, err := sshEd25519PublicKey(string(b))
	if err != nil {
		return fmt.Errorf("%s: %v", *pubPath, err)
	}
	plain, err := note.NewEd25519VerifierKey(*name, pk)
	if err != nil {
		return err
	}
	vkey, err := fnote.VKeyToCosignatureV1(plain)
	if err != nil {
		return err
	}
	fmt.Println(vkey)
	return nil
}
