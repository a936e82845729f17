package apikey

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/internal/keylist"
	"github.com/moodmnky/caddy-apikey/keystore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "apikey",
		Usage: "new|rotate|revoke|list|export|import|check|hash|audit verify|head|rotate ...",
		Short: "Issues, rotates, revokes and checks API keys",
		Long: `
Manages the key file of the apikey handler. Every change locks the file, is
written atomically (a temporary file in the same folder, synced, renamed
over the old one), keeps the records and fields it does not touch and the
file's mode, and is refused with exit status 1, leaving the file as it was,
when the id is unknown or taken or the file is invalid. A running Caddy
picks the change up within a second.

A key is printed once, alone on stdout, when it is made; only its hash is
kept. check and hash read the key from stdin, never from the command line,
so it stays out of shell history.

With --audit-log, changes are also appended to that audit log (use the
path of the Caddyfile's audit_log).
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(newCommand(), rotateCommand(), revokeCommand(), listCommand(),
				exportCommand(), importCommand(), checkCommand(), hashCommand(), auditCommand())
		},
	})
}

// stderr and stdin are variables so that tests could swap them; the
// commands are tested as the built binary.
var (
	stdin  io.Reader = os.Stdin
	stderr io.Writer = os.Stderr
)

func addAuditFlag(c *cobra.Command) {
	c.Flags().String("audit-log", "", "append the change to this audit log")
}

func auditChange(c *cobra.Command, e audit.Entry) error {
	path, _ := c.Flags().GetString("audit-log")
	if path == "" {
		return nil
	}
	e["actor"] = "cli"
	err := audit.Append(path, e)
	if errors.Is(err, audit.ErrHeadNotWritten) {
		fmt.Fprintf(stderr, "Warning: %v\n", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("the change was made, but writing the audit log failed: %w", err)
	}
	return nil
}

func newCommand() *cobra.Command {
	c := &cobra.Command{
		Use:          "new --keys <file> | --redis <address> --type dev|prod --role reader|writer|admin|custom [flags]",
		Short:        "Makes a key, prints it once and adds its hashed record to the store",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE:         runNew,
	}
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
	f.Int64("quota-per-day", -1, "the key's own daily quota")
	f.String("rate", "", "the key's own burst rate, e.g. 20/s")
	_ = c.MarkFlagRequired("type")
	_ = c.MarkFlagRequired("role")
	return c
}

func runNew(c *cobra.Command, _ []string) error {
	if err := refuseKeyAsID(c); err != nil {
		return err
	}
	f := c.Flags()
	typeName, _ := f.GetString("type")
	typ, err := keystore.ParseType(typeName)
	if err != nil {
		return err
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
			return fmt.Errorf("--expires: %w", err)
		}
		rec.ExpiresAt = at.Format(time.RFC3339)
	}
	if n, _ := f.GetInt64("quota-per-day"); n >= 0 && f.Changed("quota-per-day") {
		rec.QuotaPerDay = &n
	} else if f.Changed("quota-per-day") {
		return errors.New("--quota-per-day must not be negative")
	}
	rec.Rate, _ = f.GetString("rate")

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

	store, closeStore, err := openStore(c)
	if err != nil {
		return err
	}
	defer closeStore()
	ctx := context.Background()
	if rec.ID != "" {
		err = store.Create(ctx, rec)
	} else {
		// A made-up id that is taken (1 in 32^10) gets another.
		for tries := 0; tries < 5; tries++ {
			rec.ID = newID()
			if err = store.Create(ctx, rec); !errors.Is(err, keystore.ErrIDTaken) {
				break
			}
		}
	}
	if err != nil {
		return err
	}
	fmt.Println(key)
	fmt.Fprintf(stderr, "Added key %s (%s, %s) to %s.\nThe key above is shown once and not stored anywhere: only its hash is kept. Give it to its owner now.\n",
		rec.ID, typeName, rec.Role, store.Describe())
	return auditChange(c, audit.Entry{"event": "key.created", "key_id": rec.ID, "type": typeName, "role": rec.Role, "store": store.Describe()})
}

// newID makes an id such as k_7fq2xk9m3a.
func newID() string { return keystore.NewID() }

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

func rotateCommand() *cobra.Command {
	c := &cobra.Command{
		Use:          "rotate --keys <file> | --redis <address> --id <id> [--grace 24h]",
		Short:        "Gives a key a new secret; the old one works until the grace period ends",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := refuseKeyAsID(c); err != nil {
				return err
			}
			id, _ := c.Flags().GetString("id")
			graceText, _ := c.Flags().GetString("grace")
			grace, err := caddy.ParseDuration(graceText)
			if err != nil || grace < 0 {
				return fmt.Errorf("--grace: %q is not a duration", graceText)
			}
			store, closeStore, err := openStore(c)
			if err != nil {
				return err
			}
			defer closeStore()
			key, until, err := RotateKey(context.Background(), store, id, grace)
			if err != nil {
				return err
			}
			fmt.Println(key)
			fmt.Fprintf(stderr, "Rotated key %s in %s. The old secret works until %s.\nThe new key above is shown once and not stored anywhere: give it to its owner now.\n",
				id, store.Describe(), until.Format(time.RFC3339))
			return auditChange(c, audit.Entry{"event": "key.rotated", "key_id": id, "old_valid_until": until.Format(time.RFC3339), "store": store.Describe()})
		},
	}
	addStoreFlags(c)
	addAuditFlag(c)
	c.Flags().String("id", "", "the key id (required)")
	c.Flags().String("grace", "24h", "how long the old secret keeps working")
	_ = c.MarkFlagRequired("id")
	return c
}

// RotateKey gives the key a new secret, returned once; its old secret works
// until grace from now, and old secrets whose grace is over are dropped.
func RotateKey(ctx context.Context, store keystore.Store, id string, grace time.Duration) (key string, until time.Time, err error) {
	return keystore.Rotate(ctx, store, id, grace, nil)
}

func revokeCommand() *cobra.Command {
	c := &cobra.Command{
		Use:          "revoke --keys <file> | --redis <address> --id <id>",
		Short:        "Revokes a key: it is refused from the next request",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := refuseKeyAsID(c); err != nil {
				return err
			}
			id, _ := c.Flags().GetString("id")
			store, closeStore, err := openStore(c)
			if err != nil {
				return err
			}
			defer closeStore()
			if err := RevokeKey(context.Background(), store, id); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "Revoked key %s in %s.\n", id, store.Describe())
			return auditChange(c, audit.Entry{"event": "key.revoked", "key_id": id, "store": store.Describe()})
		},
	}
	addStoreFlags(c)
	addAuditFlag(c)
	c.Flags().String("id", "", "the key id (required)")
	_ = c.MarkFlagRequired("id")
	return c
}

// RevokeKey marks a key revoked in a store.
func RevokeKey(ctx context.Context, store keystore.Store, id string) error {
	return keystore.Revoke(ctx, store, id, nil)
}

func listCommand() *cobra.Command {
	c := &cobra.Command{
		Use:          "list --keys <file> | --redis <address> [--owner <owner>] [--json]",
		Short:        "Lists the keys in a store, without their hashes",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			asJSON, _ := c.Flags().GetBool("json")
			owner, _ := c.Flags().GetString("owner")
			store, closeStore, err := openStore(c)
			if err != nil {
				return err
			}
			defer closeStore()
			now := time.Now()
			list := []keylist.Entry{}
			err = eachRecord(context.Background(), store, owner, func(rec keystore.Record) error {
				k, err := keystore.Compile(rec)
				if err != nil {
					return fmt.Errorf("key %q: %w", rec.ID, err)
				}
				list = append(list, keylist.Of(k, now))
				return nil
			})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
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
		},
	}
	addStoreFlags(c)
	c.Flags().Bool("json", false, "print JSON")
	c.Flags().String("owner", "", "only this owner's keys")
	return c
}

// eachRecord calls fn for every record of the store (of one owner, when
// given), in id order, a page at a time.
func eachRecord(ctx context.Context, store keystore.Store, owner string, fn func(keystore.Record) error) error {
	q := keystore.ListQuery{Owner: owner, Limit: keystore.MaxListLimit}
	for {
		page, err := store.List(ctx, q)
		if err != nil {
			return err
		}
		for _, rec := range page.Records {
			if err := fn(rec); err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		q.After = page.Next
	}
}

// maxKeyLine is the most of stdin read for a key: a key is 44 or 45
// characters, and a line of more than this is not one (stdin may be a file
// or a device that never ends).
const maxKeyLine = 4 << 10

// readKey reads a key from stdin: a prompt without echo on a terminal, the
// first line otherwise, of at most maxKeyLine bytes.
func readKey() (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Key: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		return strings.TrimSpace(string(b)), err
	}
	line, err := bufio.NewReaderSize(io.LimitReader(stdin, maxKeyLine+1), maxKeyLine+1).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if len(line) > maxKeyLine {
		return "", fmt.Errorf("the first line on stdin is longer than %d bytes: a key is one line of 44 or 45 characters", maxKeyLine)
	}
	return strings.TrimSpace(line), nil
}

// noKeyArgs refuses arguments without repeating them: they may be a key.
func noKeyArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s reads the key from stdin, never from the command line (where shell history keeps it); run it without arguments and paste the key", c.Name())
	}
	return nil
}

func checkCommand() *cobra.Command {
	return &cobra.Command{
		Use:          "check",
		Short:        "Reads a key from stdin and says whether its format and checksum are right",
		Args:         noKeyArgs,
		SilenceUsage: true,
		RunE: func(*cobra.Command, []string) error {
			key, err := readKey()
			if err != nil {
				return err
			}
			typ, err := keystore.Diagnose(key)
			if err != nil {
				return fmt.Errorf("invalid key: %w", err)
			}
			fmt.Printf("valid %s key: format and checksum are right\n", typ)
			return nil
		},
	}
}

func hashCommand() *cobra.Command {
	return &cobra.Command{
		Use:          "hash",
		Short:        `Reads a key from stdin and prints its "sha256:" hash, as records hold it`,
		Args:         noKeyArgs,
		SilenceUsage: true,
		RunE: func(*cobra.Command, []string) error {
			key, err := readKey()
			if err != nil {
				return err
			}
			if _, err := keystore.Diagnose(key); err != nil {
				return fmt.Errorf("invalid key: %w", err)
			}
			fmt.Println(keystore.Sum(key).Encode())
			return nil
		},
	}
}

func auditCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Works with the audit log",
	}
	verify := &cobra.Command{
		Use:   "verify [--head <lines>:<sha256>]... <path>",
		Short: "Checks the audit log's chain and head, and names the first bad line",
		Long: `
Checks that every line of the audit log carries the hash of the line before
it. A torn line (a write cut short by a full disk or a crash) that a writer
closed off is accepted when the audit.recovered entry after it names it.

The head the log's writers record beside it (<path>.head) must still be in
the log, at its line; so must every --head given (as caddy apikey audit head
printed it: <lines>:<sha256>, or a bare <sha256>). A head that is not there
means lines were cut from the end, or the log was emptied or rewritten.

A log rolled by size (roll_size) is checked with the files rolled from it
(<path>.<UTC time>): each must continue the one before it exactly, from the
oldest kept, and a --head may be in any of them.
`,
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(c *cobra.Command, args []string) error {
			path := args[0]
			var heads []audit.Head
			for _, s := range givenHeads(c) {
				h, err := audit.ParseHead(s)
				if err != nil {
					return fmt.Errorf("--head: %w", err)
				}
				heads = append(heads, h)
			}
			given := heads
			if _, err := os.Stat(path); err != nil {
				return err
			}
			chain, err := audit.CheckFiles(path, heads...)
			if err != nil {
				return err
			}
			if chain.Gone != "" {
				fmt.Printf("the oldest file kept continues %s, which is no longer there (deleted past roll_keep?): checked from there\n", chain.Gone)
			}
			for i, f := range chain.Files {
				if i < len(chain.Files)-1 {
					fmt.Printf("%s: %d lines, chain intact; head %s (rolled)\n", f.Path, f.Head.Lines, f.Head)
				} else {
					fmt.Printf("%s: %d lines, chain intact; head %s\n", path, f.Head.Lines, f.Head)
				}
				if f.TornLines > 0 {
					fmt.Printf("%d torn line(s) closed off by a writer and kept outside the chain (a write cut short), first at line(s) %v\n", f.TornLines, f.Torn)
				}
			}
			if last := chain.Files[len(chain.Files)-1]; last.Recorded != nil {
				fmt.Printf("the head recorded in %s (%s) is in the log\n", audit.HeadPath(path), *last.Recorded)
			}
			for _, h := range given { // as parsed: never the text given, which may hold line breaks
				if h.Lines == audit.AnyLine {
					fmt.Printf("the head %s is in the log\n", h.SHA256)
				} else {
					fmt.Printf("the head %s is in the log\n", h)
				}
			}
			return nil
		},
	}
	verify.Flags().StringArray("head", nil, "a head recorded earlier, <lines>:<sha256> or <sha256>, that must be in the log (repeatable)")
	head := &cobra.Command{
		Use:   "head <path>",
		Short: "Prints the head of the audit log: <lines>:<sha256 of the last line>",
		Long: `
Prints the head its writers recorded beside the audit log (<path>.head), or,
when there is none yet, the head worked out from the log itself. Record it
somewhere the log's writers cannot change, and check the log against it
later with caddy apikey audit verify --head <lines>:<sha256>.
`,
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(c *cobra.Command, args []string) error {
			// A mistyped path must not print the empty log's head, which
			// would pass for a record of a log that is not there.
			if _, err := os.Stat(args[0]); err != nil {
				return fmt.Errorf("audit log: %w", err)
			}
			h, recorded, err := audit.ReadHead(args[0])
			if err != nil {
				return err
			}
			if asJSON, _ := c.Flags().GetBool("json"); asJSON {
				return json.NewEncoder(os.Stdout).Encode(auditHead{Path: args[0], Lines: h.Lines, SHA256: h.SHA256, Head: h.String(), Recorded: recorded})
			}
			fmt.Println(h)
			if !recorded {
				fmt.Fprintf(stderr, "No head file beside %s yet: worked out from the log itself.\n", args[0])
			}
			return nil
		},
	}
	head.Flags().Bool("json", false, "print JSON")
	rotate := &cobra.Command{
		Use:   "rotate <path>",
		Short: "Moves the audit log and its head aside, together; the next line starts a new log",
		Long: `
Renames the audit log to <path>.<UTC time> and its head file with it, under
the lock its writers take, so that no line is written in between; a running
Caddy starts a new log with its next line. Moving the log alone (or emptying
it) looks like a cut to the next writer, which records an audit.truncated
entry that fails verification. Prints the new name and the old log's head.
`,
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(_ *cobra.Command, args []string) error {
			aside, h, err := audit.Rotate(args[0], time.Now())
			if err != nil {
				return err
			}
			fmt.Println(h)
			fmt.Fprintf(stderr, "Moved %s to %s (head %s above); the next line starts a new log.\n", args[0], aside, h)
			return nil
		},
	}
	c.AddCommand(verify, head, rotate)
	return c
}

// auditHead is an audit log's head as audit head --json and the admin API
// show it.
type auditHead struct {
	Path   string `json:"path"`
	Lines  int64  `json:"lines"`
	SHA256 string `json:"sha256"`
	// Head is "<lines>:<sha256>", for audit verify --head.
	Head string `json:"head"`
	// Recorded is false when no writer has recorded the head beside the
	// log yet, and it was worked out from the log.
	Recorded bool `json:"recorded"`
}

// givenHeads is every --head of audit verify as given, an empty one too
// (which GetStringArray drops, so that verify --head "$(tail -1 missing)"
// would pass without checking any head).
func givenHeads(c *cobra.Command) []string {
	if v, ok := c.Flags().Lookup("head").Value.(interface{ GetSlice() []string }); ok {
		return v.GetSlice()
	}
	given, _ := c.Flags().GetStringArray("head")
	return given
}

// refuseKeyAsID refuses an --id that looks like a key or a key's hash (a
// key pasted in the wrong place: keystore.LooksLikeSecret), before anything
// else, so that no message repeats it: ids are printed, logged and audited.
func refuseKeyAsID(c *cobra.Command) error {
	id, _ := c.Flags().GetString("id")
	if keystore.LooksLikeSecret(id) {
		return errors.New("--id: that looks like a key or a key's hash, not a key id; it is not repeated here, and nothing was changed (caddy apikey list shows the ids)")
	}
	if id != "" {
		// Ids are matched exactly: one with a character that does not show
		// is no key's, and is never trimmed into one.
		if err := keystore.CheckID(id); err != nil {
			return fmt.Errorf("--id %s: %v; nothing was changed", strconv.QuoteToASCII(id), err)
		}
	}
	return nil
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
