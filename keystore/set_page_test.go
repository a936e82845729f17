package keystore

import (
	"fmt"
	"testing"
)

func TestSetPage(t *testing.T) {
	var records []Record
	for i := 24; i >= 0; i-- { // out of order, as a file may be
		key, _ := Generate(Dev)
		owner := "alice"
		if i%5 == 0 {
			owner = "bob"
		}
		records = append(records, Record{ID: fmt.Sprintf("k_%02d", i), Hash: Sum(key).Encode(), Role: "reader", Owner: owner})
	}
	set, err := NewSet(records)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	q := ListQuery{Limit: 10}
	for {
		keys, next := set.Page(q)
		for _, k := range keys {
			ids = append(ids, k.ID)
		}
		if next == "" {
			break
		}
		q.After = next
	}
	if len(ids) != 25 || ids[0] != "k_00" || ids[24] != "k_24" {
		t.Fatalf("listed %v", ids)
	}
	bob, next := set.Page(ListQuery{Owner: "bob"})
	if len(bob) != 5 || next != "" {
		t.Errorf("bob's keys: %d, next %q", len(bob), next)
	}
}
