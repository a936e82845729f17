package command

import (
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

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// importCommand loads a key file into Redis: new ids are created, changed
// ones updated to the file's version, the rest left alone; keys in Redis
// that the file lacks stay. Idempotent: a second run changes nothing.
//
// Each write is a compare and set against the record the plan read: a
// record that changed in Redis while the import ran is never overwritten
// with the plan. A revocation made meanwhile is kept, and the rest of the
// plan applied over it; any other change leaves the record as it now is,
// and the import ends with an error naming it. A record revoked in Redis
// stays revoked whatever the file says, unless --unrevoke is given (and
// then only a revocation the plan showed is undone).
func importCommand() *cobra.Command {
	c := leaf("import <key file> --redis <address> [--dry-run] [--unrevoke]",
		"Loads a key file into Redis; --dry-run shows what would change", cobra.ExactArgs(1), runImport)
	addStoreFlags(c)
	c.Flags().Bool("dry-run", false, "show what would change, and change nothing")
	c.Flags().Bool("unrevoke", false, "un-revoke the keys revoked in Redis that the file has unrevoked (as the plan shows them); without it they stay revoked")
	return c
}

func runImport(c *cobra.Command, args []string) error {
	data, err := keyfile.ReadFile(args[0]) // up to the key file's cap
	if err != nil {
		return fmt.Errorf("%w (nothing was imported)", err)
	}
	if _, err := keystore.ParseAndValidate(data); err != nil {
		return fmt.Errorf("key file %s: %w (nothing was imported)", args[0], err)
	}
	records, _ := keystore.ParseRecords(data)
	if redis, _ := c.Flags().GetString("redis"); redis == "" {
		return errors.New("import needs --redis <address>")
	}
	unrevoke, _ := c.Flags().GetBool("unrevoke")
	dry, _ := c.Flags().GetBool("dry-run")
	return withStore(c, func(store keystore.Store) error {
		ctx := context.Background()
		plan, err := planImport(ctx, store, records, unrevoke)
		if err != nil {
			return fmt.Errorf("%w (nothing was imported)", err)
		}
		for _, step := range plan.steps {
			fmt.Fprintln(os.Stdout, step.describe())
		}
		for _, id := range plan.keptRevoked {
			fmt.Fprintf(os.Stdout, "! %s stays revoked: revoked in %s, not in the file (--unrevoke undoes that)\n", id, store.Describe())
		}
		if dry {
			fmt.Fprintf(os.Stderr, "Dry run: %s; nothing was written to %s.\n", plan.summary(), store.Describe())
			return nil
		}
		return applyImport(ctx, store, plan)
	})
}

// applyImport makes the plan's steps, one by one, saying which records
// changed in the store since the plan (and were left as they now are).
func applyImport(ctx context.Context, store keystore.Store, plan importPlan) error {
	var left []string
	for i, step := range plan.steps {
		outcome, err := applyImportStep(ctx, store, step)
		switch {
		case err != nil:
			return fmt.Errorf("%s %s: %w (%d of %d changes were made; run the import again to finish)",
				step.action, step.rec.ID, err, i, len(plan.steps))
		case outcome == stepKeptRevoked:
			fmt.Fprintf(os.Stdout, "! %s was revoked while the import ran: kept revoked, the rest of its change made\n", step.rec.ID)
		case outcome == stepLeft:
			fmt.Fprintf(os.Stdout, "! %s changed in %s while the import ran: left as it now is\n", step.rec.ID, store.Describe())
			left = append(left, step.rec.ID)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("%d record(s) changed in %s while the import ran and were left as they now are, not overwritten: %s; the other changes were made; run the import again to re-plan them",
			len(left), store.Describe(), strings.Join(left, ", "))
	}
	fmt.Fprintf(os.Stderr, "Imported %s into %s.\n", plan.summary(), store.Describe())
	return nil
}

// What became of an import step.
const (
	stepDone        = iota // written as planned
	stepKeptRevoked        // revoked since the plan: written as planned, but revoked
	stepLeft               // changed since the plan otherwise: left as it is
)

// errChangedSincePlan stops an update whose record changed since the plan.
var errChangedSincePlan = errors.New("changed since the plan")

// applyImportStep makes one step, as a compare and set against the record
// the plan read (step.old): the store hands the change the record as it
// is at the moment of writing.
func applyImportStep(ctx context.Context, store keystore.Store, step importStep) (int, error) {
	if step.action == "create" {
		err := store.Create(ctx, step.rec)
		if errors.Is(err, keystore.ErrIDTaken) {
			return stepLeft, nil // made by someone else since the plan
		}
		return stepDone, err
	}
	if step.unrevoke {
		ctx = keystore.AllowUnrevoke(ctx)
	}
	outcome := stepDone
	_, err := store.Update(ctx, step.rec.ID, func(r *keystore.Record) error {
		outcome = stepDone
		if keystore.Same(*r, step.old) {
			*r = step.rec
			return nil
		}
		// Revoked since the plan, and nothing else: the plan is made over
		// it, and the revocation stays.
		unrevoked := *r
		unrevoked.Revoked = step.old.Revoked
		if r.Revoked && !step.old.Revoked && keystore.Same(unrevoked, step.old) {
			*r = step.rec
			r.Revoked = true
			outcome = stepKeptRevoked
			return nil
		}
		return errChangedSincePlan
	})
	switch {
	case errors.Is(err, errChangedSincePlan), errors.Is(err, keystore.ErrUnknownID):
		return stepLeft, nil
	case err != nil:
		return stepDone, err
	}
	return outcome, nil
}

type importStep struct {
	action string          // create or update
	rec    keystore.Record // the record to write
	// old is the record as the plan read it, for an update.
	old keystore.Record
	// unrevoke: the update un-revokes the record (--unrevoke).
	unrevoke bool
	changed  []string // for an update: the fields that differ, by name
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
	// keptRevoked are the ids revoked in the store that the file has
	// unrevoked, left revoked (no --unrevoke).
	keptRevoked []string
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
// valid after them (no hash answering to two keys), before any is made. A
// record revoked in the store stays revoked unless unrevoke.
func planImport(ctx context.Context, store keystore.Store, records []keystore.Record, unrevoke bool) (importPlan, error) {
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
		if ok && old.Revoked && !rec.Revoked && !unrevoke {
			rec.Revoked = true
			plan.keptRevoked = append(plan.keptRevoked, rec.ID)
		}
		switch {
		case !ok:
			plan.steps = append(plan.steps, importStep{action: "create", rec: rec})
		case reflect.DeepEqual(normalized(old), normalized(rec)):
			plan.unchanged++
		default:
			plan.steps = append(plan.steps, importStep{action: "update", rec: rec, old: old,
				unrevoke: old.Revoked && !rec.Revoked, changed: changedFields(old, rec)})
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
