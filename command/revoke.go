package command

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
)

func revokeCommand() *cobra.Command {
	c := leaf("revoke --keys <file> | --redis <address> --id <id>",
		"Revokes a key: it is refused from the next request", cobra.NoArgs,
		func(c *cobra.Command, _ []string) error {
			id, _ := c.Flags().GetString("id")
			return withStore(c, func(store keystore.Store) error {
				if err := keystore.Revoke(context.Background(), store, id, nil); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "Revoked key %s in %s.\n", id, store.Describe())
				return auditChange(c, audit.Entry{"event": "key.revoked", "key_id": id, "store": store.Describe()})
			})
		})
	addStoreFlags(c)
	addAuditFlag(c)
	requireID(c)
	return c
}
