package command_test

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// TestCLIPageHasEveryCommandAndFlag keeps docs/cli.md current: every
// command and subcommand of caddy apikey, as cobra builds them, is named
// there as "caddy apikey <command>", and each of its flags as "--<flag>".
// Adding a command or a flag without its documentation fails here.
func TestCLIPageHasEveryCommandAndFlag(t *testing.T) {
	page, err := os.ReadFile("../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(page)
	reg, ok := caddycmd.Commands()["apikey"]
	if !ok {
		t.Fatal("caddy apikey is not registered")
	}
	root := &cobra.Command{Use: "apikey"}
	reg.CobraFunc(root)
	var walk func(c *cobra.Command, path string)
	walk = func(c *cobra.Command, path string) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			name := strings.TrimSpace(path + " " + sub.Name())
			if !strings.Contains(text, "caddy apikey "+name) {
				t.Errorf("docs/cli.md does not name `caddy apikey %s`", name)
			}
			sub.Flags().VisitAll(func(f *pflag.Flag) {
				if f.Hidden || f.Name == "help" {
					return
				}
				if !strings.Contains(text, "--"+f.Name) {
					t.Errorf("docs/cli.md does not name --%s of caddy apikey %s", f.Name, name)
				}
			})
			walk(sub, name)
		}
	}
	walk(root, "")
}
