package command

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/moodmnky/caddy-apikey/audit"
)

// addAuditFlag adds --audit-log, the audit log a change is appended to.
func addAuditFlag(c *cobra.Command) {
	c.Flags().String("audit-log", "", "append the change to this audit log")
}

// auditChange appends a change the command made to the --audit-log, when
// one is given, as made by the CLI.
func auditChange(c *cobra.Command, e audit.Entry) error {
	path, _ := c.Flags().GetString("audit-log")
	if path == "" {
		return nil
	}
	e["actor"] = "cli"
	err := audit.Append(path, e)
	if errors.Is(err, audit.ErrHeadNotWritten) {
		fmt.Fprintf(os.Stderr, "Warning: %v\n", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("the change was made, but writing the audit log failed: %w", err)
	}
	return nil
}
