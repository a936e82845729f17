package command

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
)

func rotateCommand() *cobra.Command {
	c := leaf("rotate --keys <file> | --redis <address> --id <id> [--grace 24h]",
		"Gives a key a new secret; the old one works until the grace period ends", cobra.NoArgs,
		func(c *cobra.Command, _ []string) error {
			id, _ := c.Flags().GetString("id")
			graceText, _ := c.Flags().GetString("grace")
			grace, err := caddy.ParseDuration(graceText)
			if err != nil || grace < 0 {
				return fmt.Errorf("--grace: %q is not a duration", graceText)
			}
			return withStore(c, func(store keystore.Store) error {
				// Old secrets whose grace is over are dropped.
				key, until, err := keystore.Rotate(context.Background(), store, id, grace, nil)
				if err != nil {
					return err
				}
				fmt.Println(key)
				fmt.Fprintf(os.Stderr, "Rotated key %s in %s. The old secret works until %s.\nThe new key above is shown once and not stored anywhere: give it to its owner now.\n",
					id, store.Describe(), until.Format(time.RFC3339))
				return auditChange(c, audit.Entry{"event": "key.rotated", "key_id": id, "old_valid_until": until.Format(time.RFC3339), "store": store.Describe()})
			})
		})
	addStoreFlags(c)
	addAuditFlag(c)
	requireID(c)
	c.Flags().String("grace", "24h", "how long the old secret keeps working")
	return c
}
