package audit

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// queueSize bounds the entries waiting to be written; past it entries are
// counted as dropped rather than slowing requests down.
const queueSize = 4096

// batchSize bounds the entries written in one append.
const batchSize = 256

// retryEvery is how long the writer waits before trying a failed batch
// again; logEvery is how often, at most, it logs that writing fails.
var (
	retryEvery = time.Second
	logEvery   = 10 * time.Second
)

// Writer appends entries from a running server without blocking it: Log
// queues, one goroutine writes in batches.
//
// A batch that cannot be written (a full disk, a folder gone) is kept and
// tried again every second, in order, while new entries wait in the queue
// (and, once it is full, are counted as dropped, then recorded as an
// audit.dropped entry). Each failure counts in
// caddy_apikey_audit_write_errors_total; the error is logged at most once
// every 10 seconds, with the number of failures not logged since, and once
// more when writing works again.
type Writer struct {
	path    string
	queue   chan Entry
	dropped atomic.Int64
	roll    atomic.Pointer[Roll]
	logger  func() *zap.Logger
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	mu       sync.Mutex // failure reporting, from the writer and LogNow
	lastLog  time.Time
	unlogged int64 // failures since the last logged one
	failing  bool
	failures int64 // since writing last worked
}

// NewWriter starts a writer for the log at path. logger gives the logger to
// report write failures to.
func NewWriter(path string, logger func() *zap.Logger) *Writer {
	w := &Writer{path: path, queue: make(chan Entry, queueSize), logger: logger,
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// SetRoll sets how the writer rolls the log by size (see Roll); the zero
// Roll never rolls.
func (w *Writer) SetRoll(r Roll) { w.roll.Store(&r) }

func (w *Writer) rolling() Roll {
	if r := w.roll.Load(); r != nil {
		return *r
	}
	return Roll{}
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
// caller should know it was recorded. A failure is counted, and returned.
func (w *Writer) LogNow(e Entry) error {
	err := AppendRolling(w.path, w.rolling(), e)
	w.report(err, 1)
	return err
}

func (w *Writer) run() {
	defer close(w.done)
	var pending []Entry // a batch that failed, to try again
	retry := time.NewTimer(retryEvery)
	retry.Stop()
	for {
		queue := w.queue
		if pending != nil {
			queue = nil // the failed batch goes first
		}
		select {
		case e := <-queue:
			pending = w.write(w.batch(e))
		case <-retry.C:
			pending = w.write(pending)
		case <-w.stop:
			if pending != nil {
				pending = w.write(pending)
			}
			for pending == nil {
				select {
				case e := <-w.queue:
					pending = w.write(w.batch(e))
					continue
				default:
				}
				break
			}
			if pending != nil {
				w.lose(int64(len(pending) + len(w.queue)))
			}
			return
		}
		if pending != nil {
			retry.Reset(retryEvery)
		}
	}
}

// batch is first and whatever else is waiting, with a count of the
// entries dropped since the last batch.
func (w *Writer) batch(first Entry) []Entry {
	batch := []Entry{first}
	for len(batch) < batchSize {
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
	return batch
}

// write appends a batch in one locked append, and returns it when it has
// to be tried again.
func (w *Writer) write(batch []Entry) []Entry {
	err := AppendRolling(w.path, w.rolling(), batch...)
	w.report(err, len(batch))
	if err != nil && !errors.Is(err, ErrHeadNotWritten) {
		return batch
	}
	return nil
}

// report counts and logs a failure (at most once per logEvery), or logs
// that writing works again.
func (w *Writer) report(err error, entries int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		if w.failing {
			w.logger().Info("writing the audit log works again", zap.String("file", w.path),
				zap.Int64("failures", w.failures))
			w.failing, w.failures, w.unlogged = false, 0, 0
		}
		return
	}
	writeErrors.Add(1)
	w.failing = true
	w.failures++
	now := time.Now()
	if !w.lastLog.IsZero() && now.Sub(w.lastLog) < logEvery {
		w.unlogged++
		return
	}
	w.logger().Error("writing the audit log failed; retrying", zap.String("file", w.path),
		zap.Int("entries", entries), zap.Int64("failures_not_logged", w.unlogged), zap.Error(err))
	w.lastLog, w.unlogged = now, 0
}

func (w *Writer) lose(n int64) {
	w.logger().Error("audit entries lost: the log could not be written before the writer stopped",
		zap.String("file", w.path), zap.Int64("entries", n))
}

// Close writes what is queued (one more try for a failed batch) and stops
// the writer.
func (w *Writer) Close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}
