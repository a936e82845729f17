package command

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/spf13/cobra"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// exportCommand writes a store's records as a key file: a backup of Redis,
// or a copy to review in git.
func exportCommand() *cobra.Command {
	c := leaf("export --redis <address> | --keys <file> [--out <file>]",
		"Writes every record of a store as a key file (hashes, never keys)", cobra.NoArgs,
		func(c *cobra.Command, _ []string) error {
			out, _ := c.Flags().GetString("out")
			return withStore(c, func(store keystore.Store) error {
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
				if out == "" {
					_, err = os.Stdout.Write(data)
					return err
				}
				if err := atomicfile.WriteFile(out, data, 0o600); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "Wrote %d keys from %s to %s.\n", len(records), store.Describe(), out)
				return nil
			})
		})
	addStoreFlags(c)
	c.Flags().String("out", "", "the key file to write (default: stdout); replaced atomically, mode 0600")
	return c
}

// encodeKeyFile writes records as a key file, one record a line, in id
// order, so that two exports of the same keys are the same bytes.
func encodeKeyFile(records []keystore.Record) ([]byte, error) {
	sort.Slice(records, func(i, j int) bool { return records[i].ID < records[j].ID })
	var b bytes.Buffer
	fmt.Fprintf(&b, "{\n  \"version\": %d,\n  \"keys\": [", keystore.FileVersion)
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
