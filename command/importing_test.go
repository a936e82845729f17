package command_test

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/capped"
)

// TestCLIImportOfAnEndlessFile: import /dev/zero ends with an error naming
// the file and the cap, having held no more than the cap.
func TestCLIImportOfAnEndlessFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, builtCaddy(t), "apikey", "import", "/dev/zero", "--redis", "127.0.0.1:1")
	var errOut strings.Builder
	cmd.Stderr = &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatal("import /dev/zero did not end within 2 minutes")
	}
	if err == nil {
		t.Fatal("import /dev/zero: exit 0")
	}
	if !strings.Contains(errOut.String(), "/dev/zero") || !strings.Contains(errOut.String(), capped.Size(capped.KeyFile)) {
		t.Errorf("import /dev/zero: the message does not name the file and the cap: %q", errOut.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		t.Logf("peak RSS %d MiB", ru.Maxrss>>10)
		if ru.Maxrss > 1<<20 { // KiB: 1 GiB
			t.Errorf("import /dev/zero held %d MiB", ru.Maxrss>>10)
		}
	}
}
