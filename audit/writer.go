package audit

import (
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// queueSize bounds the entries waiting to be written; past it entries are
// counted as dropped rather than slowing requests down.
const queueSize = 4096

// Writer appends entries from a running server without blocking it: Log
// queues, one goroutine writes in batches.
type Writer struct {
	path    string
	queue   chan Entry
	dropped atomic.Int64
	logger  func() *zap.Logger
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// NewWriter starts a writer for the log at path. logger gives the logger to
// report write failures to.
func NewWriter(path string, logger func() *zap.Logger) *Writer {
	w := &Writer{path: path, queue: make(chan Entry, queueSize), logger: logger,
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// Path is the log's path.
func (w *Writer) Path() string { return w.path }

// Log queues an entry; it never blocks.
func (w *Writer) Log(e Entry) {
	select {
	case w.queue <- e:
	default:
		w.dropped.Add(1)
	}
}

// LogNow writes an entry before returning, for management changes whose
// caller should know it was recorded.
func (w *Writer) LogNow(e Entry) error {
	return Append(w.path, e)
}

func (w *Writer) run() {
	defer close(w.done)
	for {
		select {
		case e := <-w.queue:
			w.flush(e)
		case <-w.stop:
			for {
				select {
				case e := <-w.queue:
					w.flush(e)
				default:
					return
				}
			}
		}
	}
}

// flush writes e and whatever else is waiting, in one locked append.
func (w *Writer) flush(first Entry) {
	batch := []Entry{first}
	for len(batch) < 256 {
		select {
		case e := <-w.queue:
			batch = append(batch, e)
			continue
		default:
		}
		break
	}
	if n := w.dropped.Swap(0); n > 0 {
		batch = append(batch, Entry{"event": "audit.dropped", "count": n})
	}
	if err := Append(w.path, batch...); err != nil {
		w.logger().Error("writing the audit log failed", zap.String("file", w.path), zap.Int("entries", len(batch)), zap.Error(err))
	}
}

// Close writes what is queued and stops the writer.
func (w *Writer) Close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}
