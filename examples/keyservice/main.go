// Command keyservice is a minimal key service for `keys http`: it answers
// the gateway's lookups from a key file. It shows the protocol; a real one
// would answer from a database.
//
//	go run ./examples/keyservice -keys examples/keys.json -listen 127.0.0.1:8090 -token s3cret
package main

import (
	"crypto/subtle"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
)

func main() {
	keysPath := flag.String("keys", "keys.json", "key file to answer from")
	listen := flag.String("listen", "127.0.0.1:8090", "address to listen on")
	token := flag.String("token", "", "bearer token the gateway must send (empty: none)")
	flag.Parse()
	h, err := newHandler(*keysPath, *token)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("key service on http://%s/lookup", *listen)
	log.Fatal(http.ListenAndServe(*listen, h))
}

// newHandler serves POST /lookup {"hash": "sha256:<hex>"}: 200 with the
// record that answers to the hash (as its current or a previous hash), 404
// when none does.
func newHandler(keysPath, token string) (http.Handler, error) {
	data, err := os.ReadFile(keysPath)
	if err != nil {
		return nil, err
	}
	var file struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, err
	}
	byHash := map[string]json.RawMessage{}
	for _, raw := range file.Keys {
		var rec struct {
			Hash           string `json:"hash"`
			PreviousHashes []struct {
				Hash string `json:"hash"`
			} `json:"previous_hashes"`
		}
		if err := json.Unmarshal(raw, &rec); err != nil {
			return nil, err
		}
		byHash[rec.Hash] = raw
		for _, p := range rec.PreviousHashes {
			byHash[p.Hash] = raw
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /lookup", func(w http.ResponseWriter, r *http.Request) {
		if token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var req struct {
			Hash string `json:"hash"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		rec, ok := byHash[req.Hash]
		if !ok {
			http.Error(w, "unknown key", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(rec)
	})
	return mux, nil
}
