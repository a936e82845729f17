package apikey

import (
	"net/http"
	"runtime"
	"testing"
)

// TestShardsSpread: requests allocated one after another land on every
// shard, about evenly.
func TestShardsSpread(t *testing.T) {
	counts := make([]int, metricShards)
	keep := make([]*http.Request, 0, 16000)
	for i := 0; i < 16000; i++ {
		r := &http.Request{}
		keep = append(keep, r)
		counts[shardOf(r)]++
	}
	for s, n := range counts {
		if n < 500 || n > 1500 {
			t.Errorf("shard %d got %d of 16000 requests: %v", s, n, counts)
			break
		}
	}
	runtime.KeepAlive(keep) // the requests' addresses stay distinct while counted
}
