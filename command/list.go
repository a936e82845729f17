package command

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/moodmnky/caddy-apikey/internal/keylist"
	"github.com/moodmnky/caddy-apikey/keystore"
)

func listCommand() *cobra.Command {
	c := leaf("list --keys <file> | --redis <address> [--owner <owner>] [--json]",
		"Lists the keys in a store, without their hashes", cobra.NoArgs,
		func(c *cobra.Command, _ []string) error {
			asJSON, _ := c.Flags().GetBool("json")
			owner, _ := c.Flags().GetString("owner")
			return withStore(c, func(store keystore.Store) error {
				list, err := listKeys(store, owner, time.Now())
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(os.Stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(list)
				}
				return printList(list)
			})
		})
	addStoreFlags(c)
	c.Flags().Bool("json", false, "print JSON")
	c.Flags().String("owner", "", "only this owner's keys")
	return c
}

// listKeys is every key of the store (of one owner, when given), as it is
// at now, in id order.
func listKeys(store keystore.Store, owner string, now time.Time) ([]keylist.Entry, error) {
	list := []keylist.Entry{}
	err := eachRecord(context.Background(), store, owner, func(rec keystore.Record) error {
		k, err := keystore.Compile(rec)
		if err != nil {
			return fmt.Errorf("key %q: %w", rec.ID, err)
		}
		list = append(list, keylist.Of(k, now))
		return nil
	})
	return list, err
}

// printList prints the keys as a table.
func printList(list []keylist.Entry) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tROLE\tSTATUS\tSERVICES\tEXPIRES\tNAME")
	for _, l := range list {
		typ := l.Type
		if typ == "" {
			typ = "(prefix)"
		}
		expires := l.ExpiresAt
		if expires == "" {
			expires = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, typ, l.Role, l.Status, printable(strings.Join(l.Services, ",")), expires, printable(l.Name))
	}
	return tw.Flush()
}

// printable shows text from a record on a terminal: control and invisible
// formatting characters (a name given in a form, a file edited by hand)
// are written as escapes, so they cannot move the cursor, recolour the
// screen or forge a line of the table.
func printable(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\t' }) {
		return s
	}
	q := strconv.QuoteToASCII(s)
	return q[1 : len(q)-1]
}
