// Package command is the caddy apikey command: it makes, rotates, revokes,
// lists, exports and imports the keys of a key file or of Redis, checks and
// hashes keys read from stdin, finds keys leaked into files and git history,
// and verifies and rotates the audit log.
package command

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/moodmnky/caddy-apikey/keystore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "apikey",
		Usage: "<command> [flags]",
		Short: "Issues, rotates, revokes and checks API keys",
		Long: `
Manages the keys of the apikey handler, in a key file (--keys <file>) or on
Redis (--redis <address>). Every change is refused with exit status 1,
leaving the keys as they were, when the id is unknown or taken or the keys
would not be valid after it. A change to a key file locks the file, is
written atomically (a temporary file in the same folder, synced, renamed
over the old one) and keeps the records and fields it does not touch and
the file's mode; a running Caddy picks it up within a second. A change on
Redis is published to every running Caddy at once.

A key is printed once, alone on stdout, when it is made; only its hash is
kept. check and hash read the key from stdin, never from the command line,
so it stays out of shell history.

With --audit-log, changes are also appended to that audit log (use the
path of the Caddyfile's audit_log).
`,
		CobraFunc: func(cmd *cobra.Command) {
			// Caddy's help ends with a link to Caddy's documentation,
			// which says nothing of these commands.
			cmd.SetHelpTemplate((&cobra.Command{}).HelpTemplate())
			group(cmd, newCommand(), rotateCommand(), revokeCommand(), listCommand(),
				exportCommand(), importCommand(), checkCommand(), hashCommand(), scanCommand(), auditCommand(), versionCommand())
		},
	})
}

// leaf makes a command without subcommands: args checks its arguments,
// and an error is printed without the usage (which would hide it).
func leaf(use, short string, args cobra.PositionalArgs, run func(*cobra.Command, []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: args, SilenceUsage: true, RunE: run}
}

// group adds subcommands to c. Run alone or as "c help [subcommand]", c
// prints the help; run with a word that names none of its subcommands (a
// typo), it fails, suggesting those the word is close to. Cobra does that
// only for the root command: below it, it prints the help and exits 0.
func group(c *cobra.Command, subcommands ...*cobra.Command) *cobra.Command {
	c.AddCommand(subcommands...)
	c.SilenceUsage = true
	c.SuggestionsMinimumDistance = 2
	c.Args = func(c *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return nil
		case args[0] != "help":
			return unknownCommand(c, args[0])
		case len(args) > 2:
			return fmt.Errorf("%s help takes one command at the most", c.CommandPath())
		case len(args) == 2 && !hasSubcommand(c, args[1]):
			return unknownCommand(c, args[1])
		}
		return nil
	}
	// A typo followed by the flags of the command meant (caddy apikey
	// lsit --keys keys.json) fails on the flags, which c does not have:
	// the typo is the error to show. (Subcommands inherit this function:
	// theirs is the flag's error.)
	c.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		if args := c.Flags().Args(); c.HasSubCommands() && len(args) > 0 && args[0] != "help" {
			return unknownCommand(c, args[0])
		}
		return err
	})
	c.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 2 {
			sub, _, _ := c.Find(args[1:])
			sub.InitDefaultHelpFlag()
			return sub.Help()
		}
		return c.Help()
	}
	return c
}

func hasSubcommand(c *cobra.Command, name string) bool {
	for _, sub := range c.Commands() {
		if sub.Name() == name || sub.HasAlias(name) {
			return true
		}
	}
	return false
}

// unknownCommand says that word is none of c's subcommands, and which it
// may have meant. The word is repeated only when it cannot be a key
// pasted in the wrong place.
func unknownCommand(c *cobra.Command, word string) error {
	if keystore.LooksLikeSecret(word) {
		return fmt.Errorf("unknown command for %q: that looks like a key, not a command, and is not repeated here", c.CommandPath())
	}
	msg := fmt.Sprintf("unknown command %q for %q", word, c.CommandPath())
	if suggestions := c.SuggestionsFor(word); len(suggestions) > 0 {
		return fmt.Errorf("%s; did you mean %s?", msg, strings.Join(suggestions, " or "))
	}
	var names []string
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	return fmt.Errorf("%s; the commands are %s (%s --help says more)", msg, strings.Join(names, ", "), c.CommandPath())
}

// requireID adds the --id flag a command cannot go without, checked by
// refuseKeyAsID before the command runs.
func requireID(c *cobra.Command) {
	c.Flags().String("id", "", "the key id (required)")
	_ = c.MarkFlagRequired("id")
	c.PreRunE = refuseKeyAsID
}

// refuseKeyAsID refuses an --id that looks like a key or a key's hash (a
// key pasted in the wrong place: keystore.LooksLikeSecret), before anything
// else, so that no message repeats it: ids are printed, logged and audited.
// It is the PreRunE of the commands that take an --id.
func refuseKeyAsID(c *cobra.Command, _ []string) error {
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
