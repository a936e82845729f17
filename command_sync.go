package apikey

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// exportCommand writes a store's records as a key file: a backup of Redis,
// or a copy to review in git.
func exportCommand() *cobra.Command {
	c := &cobra.Command{
		Use:          "export --redis <address> | --keys <file> [--out <file>]",
		Short:        "Writes every record of a store as a key file (hashes, never keys)",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			store, closeStore, err := openStore(c)
			if err != nil {
				return err
			}
			defer closeStore()
			var records []keystore.Record
			if err := eachRecord(context.Background(), store, "", func(rec keystore.Record) error {
				records = append(records, rec)
				return nil
			}); err != nil {
				return err
			}
			data, err := encodeKeyFile(records)
			if err != nil {
				return err
			}
			out, _ := c.Flags().GetString("out")
			if out == "" {
				_, err = os.Stdout.Write(data)
				return err
			}
			if err := atomicfile.WriteFile(out, data, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "Wrote %d keys from %s to %s.\n", len(records), store.Describe(), out)
			return nil
		},
	}
	addStoreFlags(c)
	c.Flags().String("out", "", "the key file to write (default: stdout); replaced atomically, mode 0600")
	return c
}

// encodeKeyFile writes records as a key file, one record a line, in id
// order, so that two exports of the same keys are the same bytes.
func encodeKeyFile(records []keystore.Record) ([]byte, error) {
	sort.Slice(records, func(i, j int) bool { return records[i].ID < records[j].ID })
	var b bytes.Buffer
	b.WriteString("{\n  \"keys\": [")
	for i, rec := range records {
		line, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n    ")
		b.Write(line)
	}
	if len(records) > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("]\n}\n")
	if _, err := keystore.ParseAndValidate(b.Bytes()); err != nil {
		return nil, fmt.Errorf("the store's records do not make a valid key file: %w", err)
	}
	return b.Bytes(), nil
}

// importCommand loads a key file into Redis: new ids are created, changed
// ones updated to the file's version, the rest left alone; keys in Redis
// that the file lacks stay. Idempotent: a second run changes nothing.
func importCommand() *cobra.Command {
	c := &cobra.Command{
		Use:          "import <key file> --redis <address> [--dry-run]",
		Short:        "Loads a key file into Redis; --dry-run shows what would change",
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(c *cobra.Command, args []string) error {
			data, err := keyfile.ReadFile(args[0]) // up to the key file's cap
			if err != nil {
				return fmt.Errorf("%w (nothing was imported)", err)
			}
			set, err := keystore.ParseAndValidate(data)
			if err != nil {
				return fmt.Errorf("key file %s: %w (nothing was imported)", args[0], err)
			}
			_ = set
			records, _ := keystore.ParseRecords(data)
			if redis, _ := c.Flags().GetString("redis"); redis == "" {
				return errors.New("import needs --redis <address>")
			}
			store, closeStore, err := openStore(c)
			if err != nil {
				return err
			}
			defer closeStore()
			ctx := context.Background()
			plan, err := planImport(ctx, store, records)
			if err != nil {
				return fmt.Errorf("%w (nothing was imported)", err)
			}
			dry, _ := c.Flags().GetBool("dry-run")
			for _, step := range plan.steps {
				fmt.Fprintln(os.Stdout, step.describe())
			}
			if dry {
				fmt.Fprintf(stderr, "Dry run: %s; nothing was written to %s.\n", plan.summary(), store.Describe())
				return nil
			}
			for i, step := range plan.steps {
				var err error
				switch step.action {
				case "create":
					err = store.Create(ctx, step.rec)
				case "update":
					_, err = store.Update(ctx, step.rec.ID, func(r *keystore.Record) error {
						*r = step.rec
						return nil
					})
				}
				if err != nil {
					return fmt.Errorf("%s %s: %w (%d of %d changes were made; run the import again to finish)",
						step.action, step.rec.ID, err, i, len(plan.steps))
				}
			}
			fmt.Fprintf(stderr, "Imported %s into %s.\n", plan.summary(), store.Describe())
			return nil
		},
	}
	addStoreFlags(c)
	c.Flags().Bool("dry-run", false, "show what would change, and change nothing")
	return c
}

type importStep struct {
	action  string // create or update
	rec     keystore.Record
	changed []string // for an update: the fields that differ, by name
}

// describe says what a step does, naming fields, never their values (one
// may be a hash).
func (s importStep) describe() string {
	if s.action == "create" {
		return "+ " + s.rec.ID
	}
	return "~ " + s.rec.ID + " (" + strings.Join(s.changed, ", ") + ")"
}

type importPlan struct {
	steps     []importStep
	unchanged int
}

func (p importPlan) summary() string {
	var created, updated int
	for _, s := range p.steps {
		if s.action == "create" {
			created++
		} else {
			updated++
		}
	}
	return fmt.Sprintf("%d created, %d updated, %d unchanged", created, updated, p.unchanged)
}

// planImport works out the changes, and checks that the store would be
// valid after them (no hash answering to two keys), before any is made.
func planImport(ctx context.Context, store keystore.Store, records []keystore.Record) (importPlan, error) {
	current := map[string]keystore.Record{}
	if err := eachRecord(ctx, store, "", func(rec keystore.Record) error {
		current[rec.ID] = rec
		return nil
	}); err != nil {
		return importPlan{}, err
	}
	before := maps.Clone(current)
	var plan importPlan
	for _, rec := range records {
		old, ok := current[rec.ID]
		switch {
		case !ok:
			plan.steps = append(plan.steps, importStep{action: "create", rec: rec})
		case reflect.DeepEqual(normalized(old), normalized(rec)):
			plan.unchanged++
		default:
			plan.steps = append(plan.steps, importStep{action: "update", rec: rec, changed: changedFields(old, rec)})
		}
		current[rec.ID] = rec
	}
	after := make([]keystore.Record, 0, len(current))
	for _, rec := range current {
		after = append(after, rec)
	}
	if _, err := keystore.NewSet(after); err != nil {
		return importPlan{}, fmt.Errorf("the store would not be valid after the import: %w", err)
	}
	if err := checkOrder(before, plan.steps); err != nil {
		return importPlan{}, err
	}
	return plan, nil
}

// checkOrder plays the steps one by one against the hashes the store
// holds, as the store will apply them: a step that gives a key a hash
// another key holds at that moment (two keys swapping hashes) would fail
// halfway through, so the import is refused before anything is written.
func checkOrder(current map[string]keystore.Record, steps []importStep) error {
	owner := map[string]string{}
	for id, rec := range current {
		for _, h := range recordHashes(rec) {
			owner[h] = id
		}
	}
	for _, step := range steps {
		if old, ok := current[step.rec.ID]; ok {
			for _, h := range recordHashes(old) {
				delete(owner, h)
			}
		}
		for _, h := range recordHashes(step.rec) {
			if other, taken := owner[h]; taken && other != step.rec.ID {
				return fmt.Errorf("key %s would take a hash key %s holds until a later step (keys swapping secrets); import it in two steps", step.rec.ID, other)
			}
			owner[h] = step.rec.ID
		}
		current[step.rec.ID] = step.rec
	}
	return nil
}

func recordHashes(rec keystore.Record) []string {
	out := []string{rec.Hash}
	for _, p := range rec.PreviousHashes {
		out = append(out, p.Hash)
	}
	return out
}

// normalized is a record as JSON would write it, for comparing.
func normalized(rec keystore.Record) map[string]any {
	data, _ := json.Marshal(rec)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	return m
}

func changedFields(old, rec keystore.Record) []string {
	a, b := normalized(old), normalized(rec)
	var out []string
	for name := range a {
		if !reflect.DeepEqual(a[name], b[name]) {
			out = append(out, name)
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
