package main

// The two views of the load benchmark: cores shared, and Caddy pinned to a
// core of its own.

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// view is how the processes share the cores during a run.
type view struct {
	name, title string
	// pinned: Caddy runs on caddyCPU alone; this process (the load
	// generator and the upstream) and redis-server on loadCPU.
	pinned            bool
	caddyCPU, loadCPU int
}

func parseView(name string, caddyCPU, loadCPU int) (view, error) {
	switch name {
	case "shared":
		return view{name: "shared", title: "Cores shared"}, nil
	case "pinned":
		if caddyCPU == loadCPU {
			return view{}, fmt.Errorf("-caddy-cpu and -load-cpu are both %d", caddyCPU)
		}
		if _, err := exec.LookPath("taskset"); err != nil {
			return view{}, fmt.Errorf("the pinned view needs taskset (util-linux): %w", err)
		}
		return view{name: "pinned", title: "Pinned: Caddy on one core", pinned: true, caddyCPU: caddyCPU, loadCPU: loadCPU}, nil
	}
	return view{}, fmt.Errorf("-views: %q is not shared or pinned", name)
}

// describe says where each process ran, for the results.
func (v view) describe() string {
	if !v.pinned {
		return fmt.Sprintf("Caddy, the load generator, the upstream and redis-server share the machine's %d cores", runtime.NumCPU())
	}
	return fmt.Sprintf("Caddy runs on core %d alone (`taskset -c %d`, so GOMAXPROCS 1); the load generator, the upstream (this process, GOMAXPROCS 1) and redis-server run on core %d, so requests/s measures Caddy alone",
		v.caddyCPU, v.caddyCPU, v.loadCPU)
}

// caddyCommand is the command that starts Caddy with args in this view.
func (v view) caddyCommand(bin string, args ...string) []string {
	if !v.pinned {
		return append([]string{bin}, args...)
	}
	// taskset execs Caddy, which keeps its pid and starts with one core,
	// so its runtime takes GOMAXPROCS 1.
	return append([]string{"taskset", "-c", strconv.Itoa(v.caddyCPU), bin}, args...)
}

// enter moves this process and redis-server to the load core, for the
// pinned view; leave gives them every core again.
func (v view) enter(e *environment) {
	if !v.pinned {
		return
	}
	cpu := strconv.Itoa(v.loadCPU)
	pinAll(os.Getpid(), cpu)
	runtime.GOMAXPROCS(1)
	if e.redisPID != 0 {
		pinAll(e.redisPID, cpu)
	}
}

func (v view) leave(e *environment) {
	if !v.pinned {
		return
	}
	pinAll(os.Getpid(), startCPUs)
	runtime.SetDefaultGOMAXPROCS()
	if e.redisPID != 0 {
		pinAll(e.redisPID, startCPUs)
	}
}

// startCPUs is the cores this process (and so redis-server, which it
// starts) could run on when it started, which leave gives back.
var startCPUs = func() string {
	if cpus := allowedCPUs(os.Getpid()); cpus != "" {
		return cpus
	}
	return fmt.Sprintf("0-%d", runtime.NumCPU()-1)
}()

// allowedCPUs is Cpus_allowed_list of process pid's main thread, or "".
func allowedCPUs(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// pinAll sets the CPU affinity of every thread of process pid to cpus (a
// taskset list) and checks that each took it; a thread started meanwhile
// inherits the affinity of the one that started it, and is caught by the
// check and a second pass otherwise.
func pinAll(pid int, cpus string) {
	for try := 0; ; try++ {
		out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput()
		if err != nil {
			log.Fatalf("taskset -a -p -c %s %d: %v\n%s", cpus, pid, err, out)
		}
		if allPinned(pid, cpus) {
			return
		}
		if try == 5 {
			log.Fatalf("process %d: some threads are not on cores %s", pid, cpus)
		}
	}
}

// allPinned reports whether every thread of pid may run on cpus exactly,
// from Cpus_allowed_list in /proc.
func allPinned(pid int, cpus string) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return true // no /proc: trust taskset
	}
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok && strings.TrimSpace(v) != cpus {
				return false
			}
		}
	}
	return true
}
