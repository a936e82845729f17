package command

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/moodmnky/caddy-apikey/audit"
)

func auditCommand() *cobra.Command {
	return group(&cobra.Command{Use: "audit", Short: "Works with the audit log"},
		auditVerifyCommand(), auditHeadCommand(), auditRotateCommand())
}

func auditVerifyCommand() *cobra.Command {
	c := leaf("verify [--head <lines>:<sha256>]... <path>",
		"Checks the audit log's chain and head, and names the first bad line", cobra.ExactArgs(1), runAuditVerify)
	c.Long = `
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
`
	c.Flags().StringArray("head", nil, "a head recorded earlier, <lines>:<sha256> or <sha256>, that must be in the log (repeatable)")
	return c
}

func runAuditVerify(c *cobra.Command, args []string) error {
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

func auditHeadCommand() *cobra.Command {
	c := leaf("head <path>", "Prints the head of the audit log: <lines>:<sha256 of the last line>", cobra.ExactArgs(1),
		func(c *cobra.Command, args []string) error {
			// A mistyped path must not print the empty log's head, which
			// would pass for a record of a log that is not there.
			if _, err := os.Stat(args[0]); err != nil {
				return fmt.Errorf("audit log: %w", err)
			}
			h, err := audit.ReportHead(args[0])
			if err != nil {
				return err
			}
			if asJSON, _ := c.Flags().GetBool("json"); asJSON {
				return json.NewEncoder(os.Stdout).Encode(h)
			}
			fmt.Println(h.Head)
			if !h.Recorded {
				fmt.Fprintf(os.Stderr, "No head file beside %s yet: worked out from the log itself.\n", args[0])
			}
			return nil
		})
	c.Long = `
Prints the head its writers recorded beside the audit log (<path>.head), or,
when there is none yet, the head worked out from the log itself. Record it
somewhere the log's writers cannot change, and check the log against it
later with caddy apikey audit verify --head <lines>:<sha256>.
`
	c.Flags().Bool("json", false, "print JSON")
	return c
}

func auditRotateCommand() *cobra.Command {
	c := leaf("rotate <path>", "Moves the audit log and its head aside, together; the next line starts a new log", cobra.ExactArgs(1),
		func(_ *cobra.Command, args []string) error {
			aside, h, err := audit.Rotate(args[0], time.Now())
			if err != nil {
				return err
			}
			fmt.Println(h)
			fmt.Fprintf(os.Stderr, "Moved %s to %s (head %s above); the next line starts a new log.\n", args[0], aside, h)
			return nil
		})
	c.Long = `
Renames the audit log to <path>.<UTC time> and its head file with it, under
the lock its writers take, so that no line is written in between; a running
Caddy starts a new log with its next line. Moving the log alone (or emptying
it) looks like a cut to the next writer, which records an audit.truncated
entry that fails verification. Prints the new name and the old log's head.
`
	return c
}
