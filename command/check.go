package command

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/moodmnky/caddy-apikey/keystore"
)

func checkCommand() *cobra.Command {
	return leaf("check", "Reads a key from stdin and says whether its format and checksum are right", noKeyArgs,
		func(*cobra.Command, []string) error {
			_, typ, err := readValidKey()
			if err != nil {
				return err
			}
			fmt.Printf("valid %s key: format and checksum are right\n", typ)
			return nil
		})
}

func hashCommand() *cobra.Command {
	return leaf("hash", `Reads a key from stdin and prints its "sha256:" hash, as records hold it`, noKeyArgs,
		func(*cobra.Command, []string) error {
			key, _, err := readValidKey()
			if err != nil {
				return err
			}
			fmt.Println(keystore.Sum(key).Encode())
			return nil
		})
}

// noKeyArgs refuses arguments without repeating them: they may be a key.
func noKeyArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s reads the key from stdin, never from the command line (where shell history keeps it); run it without arguments and paste the key", c.Name())
	}
	return nil
}

// readValidKey reads a key from stdin (see readKey) and checks its format
// and checksum.
func readValidKey() (string, keystore.Type, error) {
	key, err := readKey()
	if err != nil {
		return "", 0, err
	}
	typ, err := keystore.Diagnose(key)
	if err != nil {
		return "", 0, fmt.Errorf("invalid key: %w", err)
	}
	return key, typ, nil
}

// maxKeyLine is the most of stdin read for a key: a key is 44 or 45
// characters, and a line of more than this is not one (stdin may be a file
// or a device that never ends).
const maxKeyLine = 4 << 10

// readKey reads a key from stdin: a prompt without echo on a terminal, the
// first line otherwise, of at most maxKeyLine bytes.
func readKey() (string, error) {
	if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
		fmt.Fprint(os.Stderr, "Key: ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		return strings.TrimSpace(string(b)), err
	}
	line, err := bufio.NewReaderSize(io.LimitReader(os.Stdin, maxKeyLine+1), maxKeyLine+1).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if len(line) > maxKeyLine {
		return "", fmt.Errorf("the first line on stdin is longer than %d bytes: a key is one line of 44 or 45 characters", maxKeyLine)
	}
	return strings.TrimSpace(line), nil
}
