package main

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/control"
	"github.com/meridian-vpn/meridian/internal/atomicfile"
	"github.com/meridian-vpn/meridian/ledger"
)

// fileList is a repeatable flag of file names (no splitting at commas).
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, " ") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// runComplianceCheckpoints copies the control server's signed ledger
// checkpoints into a file kept outside the database. An existing file is
// added to, never rewritten: checkpoints it holds stay even when the
// database no longer has them, and one that the server now answers with
// different content is refused (the file is left as it was).
func runComplianceCheckpoints(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance checkpoints")
	out := fs.String("out", "", "file to keep the checkpoints in (created, or added to); default: print them")
	sinceFlag := fs.String("since", "", "only checkpoints signed at or after this time (RFC 3339 with zone)")
	c, _, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	var since time.Time
	if *sinceFlag != "" {
		if since, err = time.Parse(time.RFC3339Nano, *sinceFlag); err != nil {
			return usageError{fmt.Errorf("compliance checkpoints: --since must be an RFC 3339 time with a zone, e.g. 2026-05-01T00:00:00Z")}
		}
	}
	var file api.CheckpointFile
	have := false
	if *out != "" {
		b, err := os.ReadFile(*out)
		switch {
		case err == nil:
			if file, err = api.ParseCheckpointFile(b); err != nil {
				return fmt.Errorf("%s: %w (left as it is)", *out, err)
			}
			have = true
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
	}
	// Ask from the newest checkpoint held on, by id (times may step back
	// with the server's clock; ids only grow, as checkpoints are never
	// deleted): it comes back too, and must be the same.
	var newest int64
	for _, x := range file.Checkpoints {
		newest = max(newest, x.ID)
	}
	from := since
	if newest > 0 {
		from = time.Time{}
	}
	list, err := fetchCheckpoints(ctx, c, from, max(newest-1, 0))
	if err != nil {
		return err
	}
	if newest > 0 && !slices.ContainsFunc(list.Checkpoints, func(x api.Checkpoint) bool { return x.ID == newest }) {
		return fmt.Errorf("the newest checkpoint held in %s (%d) is gone from the server: the database's checkpoints were deleted or replaced; run 'meridian compliance verify --checkpoints %s' (file left as it is)", *out, newest, *out)
	}
	if have && !slices.Equal(file.PublicKey, list.PublicKey) {
		return fmt.Errorf("%s holds checkpoints of the key %s, but the server signs with %s: the signing key was replaced, or this is another server (file left as it is)", *out, file.KeyFingerprint, list.KeyFingerprint)
	}
	if !have {
		file = api.CheckpointFile{Format: api.CheckpointsFormat, PublicKey: list.PublicKey, KeyFingerprint: api.KeyFingerprint(list.PublicKey), Checkpoints: []api.Checkpoint{}}
	}
	byID := map[int64]api.Checkpoint{}
	for _, x := range file.Checkpoints {
		byID[x.ID] = x
	}
	added := 0
	for _, x := range list.Checkpoints {
		if !ledger.FromWire(x).SignedBy(list.PublicKey) {
			return fmt.Errorf("the server's checkpoint %d does not verify under its own key %s (nothing written)", x.ID, list.KeyFingerprint)
		}
		if old, ok := byID[x.ID]; ok {
			if !sameCheckpoint(old, x) {
				return fmt.Errorf("the server's checkpoint %d (signed %s) is not the checkpoint %d held in %s (signed %s): the database's checkpoints were deleted or replaced; run 'meridian compliance verify --checkpoints %s' (file left as it is)",
					x.ID, x.At.Format(time.RFC3339), x.ID, *out, old.At.Format(time.RFC3339), *out)
			}
			continue
		}
		byID[x.ID] = x
		file.Checkpoints = append(file.Checkpoints, x)
		added++
	}
	slices.SortFunc(file.Checkpoints, func(a, b api.Checkpoint) int { return cmp.Compare(a.ID, b.ID) })
	file.ExportedAt = time.Now().UTC()
	if err := file.Check(); err != nil {
		return fmt.Errorf("the checkpoints do not make a valid file: %w (nothing written)", err)
	}
	b, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "" {
		_, err := os.Stdout.Write(b)
		return err
	}
	if err := atomicfile.Write(*out, b, 0o644); err != nil {
		return err
	}
	if cf.json {
		return printJSON(map[string]any{"file": *out, "added": added, "checkpoints": len(file.Checkpoints), "key_fingerprint": file.KeyFingerprint})
	}
	fmt.Printf("%s: %d checkpoint(s), %d new; signing key %s\n", *out, len(file.Checkpoints), added, file.KeyFingerprint)
	return nil
}

// fetchCheckpoints reads every stored checkpoint with an id above after
// that was signed at or after since (zero: any time).
func fetchCheckpoints(ctx context.Context, c *api.Client, since time.Time, after int64) (api.CheckpointList, error) {
	var all api.CheckpointList
	for {
		q := url.Values{"after": {strconv.FormatInt(after, 10)}}
		if !since.IsZero() {
			q.Set("since", since.UTC().Format(time.RFC3339Nano))
		}
		var page api.CheckpointList
		if err := c.Do(ctx, "GET", "/compliance/checkpoints?"+q.Encode(), nil, &page); err != nil {
			return all, err
		}
		if all.PublicKey != nil && !slices.Equal(all.PublicKey, page.PublicKey) {
			return all, errors.New("the server's signing key changed while its checkpoints were read")
		}
		all.PublicKey, all.KeyFingerprint = page.PublicKey, page.KeyFingerprint
		all.Checkpoints = append(all.Checkpoints, page.Checkpoints...)
		if !page.More || len(page.Checkpoints) == 0 {
			break
		}
		after = page.Checkpoints[len(page.Checkpoints)-1].ID
	}
	if len(all.PublicKey) != ed25519.PublicKeySize || all.KeyFingerprint != api.KeyFingerprint(all.PublicKey) {
		return all, errors.New("the server's answer carries no valid public key")
	}
	return all, nil
}

func sameCheckpoint(a, b api.Checkpoint) bool {
	return a.ID == b.ID && a.At.Equal(b.At) && slices.Equal(a.Signature, b.Signature) &&
		a.Records.Seq == b.Records.Seq && slices.Equal(a.Records.Hash, b.Records.Hash) &&
		a.Access.Seq == b.Access.Seq && slices.Equal(a.Access.Hash, b.Access.Hash)
}

// readCheckpointFiles reads and checks held checkpoint files, naming the
// file that is wrong.
func readCheckpointFiles(names []string) ([]api.CheckpointFile, error) {
	var files []api.CheckpointFile
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		f, err := api.ParseCheckpointFile(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		files = append(files, f)
	}
	return files, nil
}

func runComplianceVerify(ctx context.Context, args []string) error {
	fs, cf := adminCmd("compliance verify")
	var held fileList
	fs.Var(&held, "checkpoints", "a checkpoint file kept outside the database ('compliance checkpoints --out'); repeatable")
	dbFile := fs.String("db", "", "verify a copy of the control server's database file instead of asking the server (read-only; no token needed)")
	pubKey := fs.String("pubkey", "", "with --db: the checkpoint signing key, base64 (default: the key of the --checkpoints files)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	files, err := readCheckpointFiles(held)
	if err != nil {
		return err
	}
	var rep api.VerifyReport
	if *dbFile != "" {
		var pub []byte
		switch {
		case *pubKey != "":
			if pub, err = base64.StdEncoding.DecodeString(strings.TrimSpace(*pubKey)); err != nil || len(pub) != ed25519.PublicKeySize {
				return usageError{errors.New("compliance verify: --pubkey must be a base64 ed25519 public key (public_key of a checkpoint file)")}
			}
		case len(files) > 0:
			pub = files[0].PublicKey
		default:
			return usageError{errors.New("compliance verify: --db needs --pubkey KEY or --checkpoints FILE to know the signing key")}
		}
		if rep, err = control.VerifyDatabase(ctx, *dbFile, pub, files); err != nil {
			return err
		}
	} else {
		c, err := cf.client()
		if err != nil {
			return err
		}
		if len(files) == 0 {
			err = c.Do(ctx, "GET", "/compliance/verify", nil, &rep)
		} else {
			err = c.Do(ctx, "POST", "/compliance/verify", api.VerifyRequest{Held: files}, &rep)
		}
		if err != nil {
			return err
		}
	}
	if cf.json {
		if err := printJSON(rep); err != nil {
			return err
		}
	} else {
		printVerifyReport(os.Stdout, rep, held)
	}
	if !rep.OK {
		return fmt.Errorf("the ledger does not verify: %d problem(s)", len(rep.Problems)+rep.Omitted)
	}
	return nil
}

// printVerifyReport says what verify found: the chains, each held file's
// checkpoints (matched, or what is wrong), where a chain parts from its
// checkpoints, and every problem with its position.
func printVerifyReport(w io.Writer, rep api.VerifyReport, names []string) {
	for _, c := range rep.Chains {
		fmt.Fprintf(w, "chain %-8s %d entries (%d purged), head entry %d\n", c.Chain, c.Entries, c.Purged, c.Head.Seq)
	}
	fmt.Fprintf(w, "checkpoints checked: %d (signing key %s)\n", rep.Checkpoints, rep.KeyFingerprint)
	for i, n := range names {
		var matched []api.HeldCheckpoint
		var bad []api.HeldCheckpoint
		for _, h := range rep.Held {
			switch {
			case h.File != i:
			case h.Matched:
				matched = append(matched, h)
			default:
				bad = append(bad, h)
			}
		}
		fmt.Fprintf(w, "held %s: %d matched, %d did not\n", n, len(matched), len(bad))
		if len(matched) > 0 {
			fmt.Fprintf(w, "  matched: checkpoints %s\n", idRanges(matched))
		}
		for _, h := range bad {
			fmt.Fprintf(w, "  checkpoint %d of %s: %s\n", h.ID, h.At.Format(time.RFC3339), h.What)
		}
	}
	for _, d := range rep.Divergence {
		fmt.Fprintf(w, "DIVERGES: %s\n", d.What)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem: %s\n", p.Message)
	}
	if rep.Omitted > 0 {
		fmt.Fprintf(w, "... and %d more problem(s) (see --json)\n", rep.Omitted)
	}
	if rep.OK {
		fmt.Fprintln(w, "the ledger verifies")
	}
}

// idRanges writes the ids of checkpoints as runs: 1-5, 7, 9-10.
func idRanges(hs []api.HeldCheckpoint) string {
	ids := make([]int64, len(hs))
	for i, h := range hs {
		ids[i] = h.ID
	}
	slices.Sort(ids)
	var parts []string
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.FormatInt(ids[i], 10))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ids[i], ids[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
