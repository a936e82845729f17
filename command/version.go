package command

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/moodmnky/caddy-apikey/internal/version"
)

// modulePath is the plugin's Go module, as xcaddy's --with names it.
const modulePath = "github.com/moodmnky/caddy-apikey"

func versionCommand() *cobra.Command {
	return leaf("version", "Prints the plugin's version", cobra.NoArgs,
		func(*cobra.Command, []string) error {
			fmt.Println(versionText())
			return nil
		})
}

// versionText is the plugin's version and, when the binary was built from
// a module version that says more (xcaddy --with the module at a commit:
// a pseudo-version), that version too.
func versionText() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version.Version
	}
	mod := &info.Main
	for _, dep := range info.Deps {
		if dep.Path == modulePath {
			mod = dep
		}
	}
	if mod.Path != modulePath || mod.Replace != nil || mod.Version == "" || mod.Version == "(devel)" || mod.Version == version.Version {
		return version.Version
	}
	return fmt.Sprintf("%s (module %s %s)", version.Version, modulePath, mod.Version)
}
