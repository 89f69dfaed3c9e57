package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// keySet is a deduplicated set of trusted keys, looked up by name and key hash
// as signed-note does.
type keySet struct {
	verifiers []note.Verifier
	vkeys     []string
}

func (k *keySet) add(vkey string, v note.Verifier) {
	for _, old := range k.verifiers {
		if old.Name() == v.Name() && old.KeyHash() == v.KeyHash() {
			return
		}
	}
	k.verifiers = append(k.verifiers, v)
	k.vkeys = append(k.vkeys, vkey)
}

// witnessKeys parses cosignature/v1 verifier keys (c2sp.org/tlog-cosignature,
// Ed25519 type 0x04; a plain Ed25519 vkey of type 0x01 is read as the same key
// used for cosignatures) with transparency-dev/formats.
func witnessKeys(vkeys []string) (*keySet, error) {
	ks := &keySet{}
	for _, vk := range vkeys {
		v, err := fnote.NewVerifierForCosignatureV1(vk)
		if err != nil {
			return nil, fmt.Errorf("witness verifier key %q: %v", vk, err)
		}
		ks.add(vk, v)
	}
	return ks, nil
}

// verifiedBy opens msg with the keys of ks (signatures from other keys are
// ignored) and returns which keys of ks signed it, in the order of ks.
// A signature line that claims a trusted key but does not verify is an error.
func verifiedBy(msg []byte, ks *keySet, extra ...note.Verifier) (*note.Note, []note.Verifier, error) {
	all := append(append([]note.Verifier{}, ks.verifiers...), extra...)
	n, err := note.Open(msg, note.VerifierList(all...))
	var unverified *note.UnverifiedNoteError
	switch {
	case errors.As(err, &unverified):
		// No trusted key signed it: not an error for the caller, just nobody.
		return unverified.Note, nil, nil
	case err != nil:
		return nil, nil, err
	}
	var got []note.Verifier
	for _, v := range all {
		for _, s := range n.Sigs {
			if s.Name == v.Name() && s.Hash == v.KeyHash() {
				got = append(got, v)
				break
			}
		}
	}
	return n, got, nil
}

// witnessPeer is one witness and the latest size it cosigned for our log, as
// far as this client knows.
type witnessPeer struct {
	url    string
	old    int64
	client *http.Client
}

func newWitnessPeer(url string, timeout time.Duration) *witnessPeer {
	return &witnessPeer{
		url:    strings.TrimRight(url, "/"),
		client: &http.Client{Timeout: timeout},
	}
}

// addCheckpointBody is a c2sp.org/tlog-witness add-checkpoint request body.
func addCheckpointBody(old int64, proof tlog.TreeProof, signed []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.Write(signed)
	return b.Bytes()
}

type response struct {
	status      int
	contentType string
	body        []byte
}

func (w *witnessPeer) post(old int64, proof tlog.TreeProof, signed []byte) (*response, error) {
	req, err := http.NewRequest(http.MethodPost, w.url+"/add-checkpoint",
		bytes.NewReader(addCheckpointBody(old, proof, signed)))
	if err != nil {
		return nil, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s/add-checkpoint: %v", w.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("POST %s/add-checkpoint: reading response: %v", w.url, err)
	}
	return &response{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: body}, nil
}

// parseSizeBody reads a 409 response: text/x.tlog.size, "<size>\n".
func parseSizeBody(r *response) (int64, error) {
	ct := strings.TrimSpace(strings.Split(r.contentType, ";")[0])
	if ct != "text/x.tlog.size" {
		return 0, fmt.Errorf("409 response has Content-Type %q, want text/x.tlog.size (body %q)", r.contentType, r.body)
	}
	s, ok := strings.CutSuffix(string(r.body), "\n")
	if !ok {
		return 0, fmt.Errorf("409 response body %q does not end in a newline", r.body)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != s {
		return 0, fmt.Errorf("409 response body %q is not a decimal tree size", r.body)
	}
	return n, nil
}

// checkCosignatureLines checks that a 200 body is one or more note signature
// lines ("— name base64\n"), as c2sp.org/tlog-witness requires.
func checkCosignatureLines(body []byte) error {
	if len(body) == 0 || body[len(body)-1] != '\n' {
		return fmt.Errorf("200 response body %q is not newline-terminated signature lines", body)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		if !strings.HasPrefix(line, "— ") {
			return fmt.Errorf("200 response line %q is not a note signature line", line)
		}
	}
	return nil
}

// submission is the outcome of one add-checkpoint exchange (with at most one
// retry after a 409).
type submission struct {
	URL        string   `json:"url"`
	Old        int64    `json:"old"`
	Status     int      `json:"status"`
	Retried    bool     `json:"retried_after_409,omitempty"`
	Body       string   `json:"body,omitempty"`
	CosignedBy []string `json:"cosigned_by"`
	cosigs     []byte
	verified   []note.Verifier
}

// submit sends the checkpoint of size n of t to w, starting from the size w
// last cosigned; on 409 it rebuilds the proof from the size the witness reports
// and retries once. On 200 it checks the cosignatures against ks and records n
// as the witness's latest size. An error means the exchange broke (network,
// malformed answer, a trusted cosignature that does not verify); refusals are
// reported through Status.
func (w *witnessPeer) submit(t *memTree, n int64, signed []byte, ks *keySet) (*submission, error) {
	sub := &submission{URL: w.url, Old: w.old, CosignedBy: []string{}}
	proof, err := t.prove(n, w.old)
	if err != nil {
		return sub, fmt.Errorf("%s: %v", w.url, err)
	}
	r, err := w.post(w.old, proof, signed)
	if err != nil {
		return sub, err
	}
	if r.status == http.StatusConflict {
		latest, err := parseSizeBody(r)
		if err != nil {
			return sub, fmt.Errorf("%s: %v", w.url, err)
		}
		if latest > n {
			sub.Status = r.status
			sub.Body = string(r.body)
			return sub, fmt.Errorf("%s: witness already cosigned size %d, beyond this checkpoint's size %d "+
				"(use a fresh witness database or another log key; 'log --start %d' continues from there)",
				w.url, latest, n, latest)
		}
		proof, err = t.prove(n, latest)
		if err != nil {
			return sub, fmt.Errorf("%s: %v", w.url, err)
		}
		sub.Old, sub.Retried = latest, true
		if r, err = w.post(latest, proof, signed); err != nil {
			return sub, err
		}
	}
	sub.Status = r.status
	if r.status != http.StatusOK {
		sub.Body = string(r.body)
		return sub, nil
	}
	if err := checkCosignatureLines(r.body); err != nil {
		return sub, fmt.Errorf("%s: %v", w.url, err)
	}
	_, got, err := verifiedBy(append(append([]byte{}, signed...), r.body...), ks)
	if err != nil {
		return sub, fmt.Errorf("%s: cosignatures do not verify: %v (body %q)", w.url, err, r.body)
	}
	sub.cosigs = r.body
	sub.verified = got
	for _, v := range got {
		sub.CosignedBy = append(sub.CosignedBy, v.Name())
	}
	w.old = n
	return sub, nil
}
