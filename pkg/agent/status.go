package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/go-logr/logr"
)

// StatusFile is the sidecar's record of where each token and refreshed
// secret stands, in the token directory: what the startup probe (--check)
// reports. It holds no token and no secret.
const StatusFile = ".status"

// status is the content of the status file.
type status struct {
	Ready    bool     `json:"ready"`
	Problems []string `json:"problems,omitempty"`
	// Failed says why the secrets could not be fetched, when the sidecar
	// fetches them (--fetch-secrets): the status is then ready, so that
	// the task's containers start, and their exec wrapper fails them
	// with this message (exec --status).
	Failed string `json:"failed,omitempty"`
}

// statusBook keeps the state of each thing the sidecar keeps (a token, a
// refreshed secret) and writes it to the status file on every change.
type statusBook struct {
	file string
	log  logr.Logger

	// mu guards the maps and the file: the status is built and renamed
	// into place under it, so that an older state never lands after a
	// newer one.
	mu       sync.Mutex
	order    []string
	problems map[string]string // by name; empty when it is fine
	ready    map[string]bool
	failed   string
}

// newStatusBook starts a book for file; file empty, nothing is written.
func newStatusBook(file string, log logr.Logger) *statusBook {
	return &statusBook{file: file, log: log, problems: map[string]string{}, ready: map[string]bool{}}
}

// add records a thing to keep, with its first state, without writing.
func (b *statusBook) add(name, problem string, ready bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.order = append(b.order, name)
	b.problems[name], b.ready[name] = problem, ready
}

// set records a thing's state and rewrites the file.
func (b *statusBook) set(name, problem string, ready bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems[name], b.ready[name] = problem, ready
	b.writeLocked()
}

// fail records that the secrets could not be fetched, which makes the
// status ready and failed (status.Failed), and rewrites the file.
func (b *statusBook) fail(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failed = msg
	b.writeLocked()
}

// recovered records that the secrets were fetched after all: name is
// ready and the failure gone, in one write.
func (b *statusBook) recovered(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failed, b.problems[name], b.ready[name] = "", "", true
	b.writeLocked()
}

func (b *statusBook) isReady(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ready[name]
}

// write writes the file as it stands.
func (b *statusBook) write() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writeLocked()
}

func (b *statusBook) writeLocked() {
	if b.file == "" {
		return
	}
	st := status{Ready: true, Failed: b.failed}
	for _, n := range b.order {
		if !b.ready[n] && b.failed == "" {
			st.Ready = false
		}
		if p := b.problems[n]; p != "" {
			st.Problems = append(st.Problems, n+": "+p)
		}
	}
	buf, _ := json.Marshal(st)
	if err := writeAtomic(b.file, buf, statusFileMode); err != nil {
		b.log.Error(err, "write status")
	}
}

// statusFileMode: the status is readable by every user of the pod.
const statusFileMode = 0o644

// Check reads the sidecar's status file: ok when every token is written;
// else a line that says why, for the kubelet's events. When ok, the line
// lists renewals and refreshes that are failing, if any.
func Check(file string) (string, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "tokens not written yet: the sidecar is starting", false
	}
	var st status
	if err := json.Unmarshal(b, &st); err != nil {
		return "tokens: unreadable status: " + err.Error(), false
	}
	if st.Failed != "" {
		return "secrets not fetched: " + st.Failed, true // the wrapper fails the task with it
	}
	if st.Ready {
		return strings.Join(st.Problems, "; "), true // problems of renewal, with every token still valid
	}
	return "tokens not written yet: " + strings.Join(st.Problems, "; "), false
}

// FetchFailure reads the sidecar's status file for the exec wrapper: why
// the secrets could not be fetched, or empty when they were (or the file
// says nothing of a fetch).
func FetchFailure(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	var st status
	if err := json.Unmarshal(b, &st); err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	if !st.Ready {
		return "", fmt.Errorf("%s: the secrets are not fetched yet", file)
	}
	return st.Failed, nil
}
