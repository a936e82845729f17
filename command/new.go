package command

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
)

func newCommand() *cobra.Command {
	c := leaf("new --keys <file> | --redis <address> --type dev|prod --role reader|writer|admin|custom [flags]",
		"Makes a key, prints it once and adds its hashed record to the store", cobra.NoArgs, runNew)
	c.PreRunE = refuseKeyAsID
	addStoreFlags(c)
	addAuditFlag(c)
	f := c.Flags()
	f.String("type", "", "dev or prod (required)")
	f.String("role", "", "reader, writer, admin or custom (required)")
	f.String("id", "", "the key id (default: generated)")
	f.String("name", "", "a description")
	f.String("owner", "", "who the key belongs to")
	f.String("services", "", `comma-separated services the key may reach, or "*"`)
	f.StringArray("permission", nil, `"METHOD /path" the key may use (repeatable; required for custom)`)
	f.StringArray("allowed-ip", nil, "CIDR or address the key may be used from (repeatable)")
	f.String("expires", "", "RFC 3339 time, or a duration from now such as 90d or 12h")
	f.Int64("quota-per-day", 0, "the key's own daily quota (default: the route's quota)")
	f.String("rate", "", "the key's own burst rate, e.g. 20/s (default: the route's rate)")
	_ = c.MarkFlagRequired("type")
	_ = c.MarkFlagRequired("role")
	return c
}

func runNew(c *cobra.Command, _ []string) error {
	rec, typ, err := newRecord(c)
	if err != nil {
		return err
	}
	key, err := keystore.Generate(typ)
	if err != nil {
		return err
	}
	rec.Hash = keystore.Sum(key).Encode()
	check := rec
	if check.ID == "" {
		check.ID = "k_new"
	}
	if _, err := keystore.Compile(check); err != nil {
		return fmt.Errorf("the new record is invalid: %w", err)
	}
	return withStore(c, func(store keystore.Store) error {
		ctx := context.Background()
		if rec.ID != "" {
			err = store.Create(ctx, rec)
		} else {
			// A made-up id that is taken (1 in 32^10) gets another.
			for tries := 0; tries < 5; tries++ {
				rec.ID = keystore.NewID()
				if err = store.Create(ctx, rec); !errors.Is(err, keystore.ErrIDTaken) {
					break
				}
			}
		}
		if err != nil {
			return err
		}
		fmt.Println(key)
		fmt.Fprintf(os.Stderr, "Added key %s (%s, %s) to %s.\nThe key above is shown once and not stored anywhere: only its hash is kept. Give it to its owner now.\n",
			rec.ID, rec.Type, rec.Role, store.Describe())
		return auditChange(c, audit.Entry{"event": "key.created", "key_id": rec.ID, "type": rec.Type, "role": rec.Role, "store": store.Describe()})
	})
}

// newRecord is the record new's flags describe, without its hash.
func newRecord(c *cobra.Command) (keystore.Record, keystore.Type, error) {
	f := c.Flags()
	typeName, _ := f.GetString("type")
	typ, err := keystore.ParseType(typeName)
	if err != nil {
		return keystore.Record{}, typ, err
	}
	rec := keystore.Record{Type: typeName, CreatedAt: time.Now().UTC().Format(time.RFC3339)}
	rec.Role, _ = f.GetString("role")
	rec.ID, _ = f.GetString("id")
	rec.Name, _ = f.GetString("name")
	rec.Owner, _ = f.GetString("owner")
	if s, _ := f.GetString("services"); s != "" {
		for _, svc := range strings.Split(s, ",") {
			rec.Services = append(rec.Services, strings.TrimSpace(svc))
		}
	}
	rec.Permissions, _ = f.GetStringArray("permission")
	rec.AllowedIPs, _ = f.GetStringArray("allowed-ip")
	if s, _ := f.GetString("expires"); s != "" {
		at, err := parseWhen(s, time.Now())
		if err != nil {
			return keystore.Record{}, typ, fmt.Errorf("--expires: %w", err)
		}
		rec.ExpiresAt = at.Format(time.RFC3339)
	}
	if f.Changed("quota-per-day") {
		n, _ := f.GetInt64("quota-per-day")
		if n < 0 {
			return keystore.Record{}, typ, errors.New("--quota-per-day must not be negative")
		}
		rec.QuotaPerDay = &n
	}
	rec.Rate, _ = f.GetString("rate")
	return rec, typ, nil
}

// parseWhen reads an RFC 3339 time or a duration from now ("90d", "12h").
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a positive duration such as 90d", s)
	}
	return now.Add(d).UTC().Truncate(time.Second), nil
}
