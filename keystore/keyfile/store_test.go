package keyfile

import (
	"path/filepath"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/storetest"
)

func TestStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return NewStore(filepath.Join(t.TempDir(), "keys.json"))
	})
}
