// Package poll runs a check at a fixed interval until it is stopped: the
// watchers of key files and secret files.
package poll

import (
	"sync"
	"time"
)

// Poller calls its check every interval, from one goroutine, until Stop.
type Poller struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start calls check every interval until Stop is called.
func Start(interval time.Duration, check func()) *Poller {
	p := &Poller{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				check()
			}
		}
	}()
	return p
}

// Stop ends the polling and waits for a check in progress to return. It
// may be called more than once.
func (p *Poller) Stop() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}
