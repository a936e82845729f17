package keyfile

import (
	"crypto/sha256"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/poll"
	"github.com/moodmnky/caddy-apikey/keystore"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
)

// filePool shares one loaded copy and one watcher per key file among every
// route and config that names it, across config reloads.
var filePool = caddy.NewUsagePool()

// pollInterval is how often a watched key file is checked. A stat poll
// rather than inotify: it follows renames, symlink swaps (as Kubernetes does
// with mounted secrets) and network filesystems alike.
var pollInterval = 500 * time.Millisecond

// hashEvery is how often the file's content is hashed and compared even
// when its stat (size, modification and change times, identity) says
// nothing changed: for a system or filesystem without a change time, where
// an edit in place that keeps the size and puts the modification time back
// shows in nothing else. It costs one streamed SHA-256 of the file (at most
// the key file cap, 256 MiB) a minute.
var hashEvery = time.Minute

// useChangeTime turns the change time's comparison off, for the test of
// the slow content check.
var useChangeTime = true

// watchedFile is a key file's current good version and the goroutine that
// watches for the next.
type watchedFile struct {
	name string // as configured, for messages
	path string // absolute
	set  atomic.Pointer[keystore.Set]

	mu    sync.Mutex // one check at a time: the watcher's, or an admin's
	sums  []uint64   // fingerprints of the records of set, or nil (see loaded)
	stamp fileStamp  // of the version last read, good or bad
	sum   [sha256.Size]byte
	// since is when stamp and sum were last found changed, on this
	// process's monotonic clock: the file has been unchanged since.
	since time.Time
	// hashed is when the content was last hashed (see hashEvery).
	hashed time.Time
	reads  int // times the file was read, for tests

	listenMu  sync.Mutex
	listeners map[string]*listener
	poller    *poll.Poller
}

// fileStamp tells versions of a file apart without reading it: its size,
// modification time, identity and change time (ctime, where the system
// has one; zero otherwise). A program can put the modification time back
// after an edit (touch -d, os.Chtimes); the change time it cannot.
type fileStamp struct {
	info       os.FileInfo
	size       int64
	modTime    time.Time
	changeTime time.Time
}

func stampOf(path string) (fileStamp, error) {
	info, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{info: info, size: info.Size(), modTime: info.ModTime()}
	if useChangeTime {
		s.changeTime = changeTime(info)
	}
	return s, nil
}

func (s fileStamp) same(o fileStamp) bool {
	if s.info == nil || o.info == nil {
		return s.info == nil && o.info == nil
	}
	return s.size == o.size && s.modTime.Equal(o.modTime) && s.changeTime.Equal(o.changeTime) && os.SameFile(s.info, o.info)
}

func fileLogger() *zap.Logger {
	// The current default logger: a pooled watcher outlives the config that
	// started it.
	return caddy.Log().Named("http.apikey.sources.file")
}

// watchFile loads the file and starts watching it. A file that does not
// load fails here, so a bad file at startup fails the config load.
func watchFile(name, path string) (*watchedFile, error) {
	stamp, _ := stampOf(path)
	l, sum, err := loadKeyFile(name, path, nil, true)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	w := &watchedFile{name: name, path: path, sums: l.sums, stamp: stamp, sum: sum, since: now, hashed: now}
	w.set.Store(l.set)
	releaseMemory(stamp.size)
	w.poller = poll.Start(pollInterval, w.check)
	return w, nil
}

// check reloads the file if it changed since it was last read. A version
// that does not load is logged once and the last good keys stay.
func (w *watchedFile) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	stamp, err := stampOf(w.path)
	if err != nil {
		if w.stamp.info != nil {
			fileLogger().Error("key file cannot be read; keeping the last good keys",
				zap.String("file", w.name), zap.Error(err))
		}
		w.stamp, w.since = fileStamp{}, time.Now()
		return
	}
	if stamp.same(w.stamp) && w.settled() && time.Since(w.hashed) < hashEvery {
		return
	}
	w.reads++
	// Hashed as a stream, not read whole: right after a change the file is
	// hashed on every poll until it settles.
	sum, err := hashFile(w.path)
	if err != nil {
		return // gone between the stat and the read: the next poll sees it
	}
	w.hashed = time.Now()
	if sum == w.sum {
		// The content read last (a chmod, a rename of the same bytes over
		// it): nothing to load.
		if !stamp.same(w.stamp) {
			w.stamp, w.since = stamp, time.Now()
		}
		return
	}
	// The version in force lends the new one the keys of the records it
	// left as they were.
	l, sum, err := loadKeyFile(w.name, w.path, &loaded{set: w.set.Load(), sums: w.sums}, true)
	if sum == ([sha256.Size]byte{}) {
		return // not read (gone since the hash): the next poll sees it
	}
	w.stamp, w.sum, w.since, w.hashed = stamp, sum, time.Now(), time.Now() // of the version read, good or bad
	if err != nil {
		keystore.ObserveSourceError("file")
		fileLogger().Error("key file rejected; keeping the last good keys", zap.Error(err))
		return
	}
	set := l.set
	w.sums = l.sums
	old := w.set.Swap(set)
	defer releaseMemory(stamp.size) // once the listeners have the changes
	fileLogger().Info("key file reloaded", zap.String("file", w.name), zap.Int("keys", set.Len()))
	if changes := keystore.Diff(old, set); len(changes) > 0 {
		w.listenMu.Lock()
		for _, l := range w.listeners {
			l.fn(changes)
		}
		w.listenMu.Unlock()
	}
}

// listener hears the changes of every new version of the file.
type listener struct {
	fn   func([]keystore.Change)
	refs int
}

// onChange registers fn under name (the first registration of a name
// wins; later ones only count), and returns the function that lets go.
func (w *watchedFile) onChange(name string, fn func([]keystore.Change)) func() {
	w.listenMu.Lock()
	defer w.listenMu.Unlock()
	if w.listeners == nil {
		w.listeners = map[string]*listener{}
	}
	l := w.listeners[name]
	if l == nil {
		l = &listener{fn: fn}
		w.listeners[name] = l
	}
	l.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			w.listenMu.Lock()
			defer w.listenMu.Unlock()
			if l.refs--; l.refs == 0 {
				delete(w.listeners, name)
			}
		})
	}
}

// settleTime is how long after its last modification a file's content is
// compared, not just its size and time.
const settleTime = 2 * time.Second

// settled reports whether the file's stamp (size, time and identity) alone
// now tells its next change apart. Right after a write, a second write
// within one tick of the filesystem's clock, at the same size, leaves the
// stamp as it was: until then the content is compared too. The file is
// settled once its modification time is settleTime in the past, or once
// this watcher has seen it unchanged for settleTime on its own monotonic
// clock: a file whose modification time is in the future (a skewed clock,
// touch -d) is settled too, rather than read and hashed on every poll.
func (w *watchedFile) settled() bool {
	return time.Since(w.stamp.modTime) > settleTime || time.Since(w.since) > settleTime
}

// Destruct stops the watcher.
func (w *watchedFile) Destruct() error {
	w.poller.Stop()
	return nil
}

// FilePoolReferences reports how many sources share the copy of a key file
// (by absolute path); for tests and diagnostics.
func FilePoolReferences(path string) (int, bool) { return filePool.References(path) }
