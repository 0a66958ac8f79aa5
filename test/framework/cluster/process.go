package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one component, known by its PID; its output goes to
// <Dir>/logs/<name>.log and its PID to <Dir>/pids/<name>.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// spawner starts every component from one goroutine locked to its OS thread
// that never exits: Pdeathsig fires when the thread that started a process
// dies, so this is what makes "the test binary died" kill the cluster too,
// instead of leaving an API server running after a panic or a timeout.
var spawner = func() chan func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range ch {
			f()
		}
	}()
	return ch
}()

func (c *Cluster) start(name, bin string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(filepath.Join(c.dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	errc := make(chan error, 1)
	spawner <- func() { errc <- cmd.Start() }
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := os.WriteFile(filepath.Join(c.dir, "pids", name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// exited reports how a process ended if it did, for errors that say which
// component died instead of timing out.
func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v (see logs/%s.log)", p.name, p.err, p.name)
	default:
		return nil
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILL.
func (p *process) stop(grace time.Duration) {
	if p.exited() != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// killStale stops the processes a previous run recorded in pids/ and did not
// stop (it crashed or was killed). A PID is only signalled if it still runs
// the binary that was recorded, so a reused PID is left alone.
func killStale(dir string, binDir string) {
	entries, _ := os.ReadDir(filepath.Join(dir, "pids"))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "pids", e.Name()))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		if !strings.HasPrefix(exe, binDir+"/") && filepath.Base(exe) != "containerd" {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 50 && processExists(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
