// Package pgtest runs a real PostgreSQL server (Debian's, which make tools
// installs) for the tests of Vault's database engine: the unit tests of
// pkg/agent and the cluster suite. It is linked into no binary.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ForTest starts a server on 127.0.0.1 (Vault, on this machine, is its
// only client in the tests) for t: the test fails if it cannot start, the
// server stops when the test ends, and its logs are in a failed test's
// output.
func ForTest(ctx context.Context, t testing.TB) *Server {
	t.Helper()
	pg, err := Start(ctx, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres logs:\n%s", pg.Logs())
		}
		pg.Stop()
	})
	return pg
}

// Server is a running PostgreSQL with a superuser postgres.
type Server struct {
	// Host and Port are where it listens; Password is postgres's.
	Host     string
	Port     int
	Password string
	dir      string
	cmd      *exec.Cmd
	mu       sync.Mutex
	logs     bytes.Buffer
}

// Start initialises a database in a new temporary directory and runs
// PostgreSQL on a free port of host until Stop. As root it runs as the
// postgres user, which Debian's package makes: PostgreSQL refuses root.
func Start(ctx context.Context, host string) (*Server, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		return nil, errors.New("PostgreSQL: /usr/lib/postgresql/*/bin/postgres not found; make tools installs it (apt postgresql)")
	}
	slices.Sort(bins)
	bin := filepath.Dir(bins[len(bins)-1])
	dir, err := os.MkdirTemp("", "secctx-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Host: host, Password: "pg-" + strconv.Itoa(os.Getpid()), dir: dir}
	fail := func(err error) (*Server, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fail(fmt.Errorf("PostgreSQL as root needs the postgres user (apt postgresql makes it): %w", err))
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chmod(dir, 0o755); err != nil {
			return fail(err)
		}
	}
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(s.Password+"\n"), 0o644); err != nil {
		return fail(err)
	}
	for _, d := range []string{"data", "sock"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return fail(err)
		}
		if cred != nil {
			if err := os.Chown(filepath.Join(dir, d), int(cred.Uid), int(cred.Gid)); err != nil {
				return fail(err)
			}
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return cmd
	}
	if out, err := run("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=scram-sha-256", "--pwfile="+pwfile, "-E", "UTF8").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w\n%s", err, out))
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return fail(err)
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.cmd = run("postgres", "-D", filepath.Join(dir, "data"), "-p", strconv.Itoa(s.Port), "-k", filepath.Join(dir, "sock"),
		"-c", "listen_addresses="+host, "-c", "fsync=off")
	s.cmd.Stdout, s.cmd.Stderr = s, s
	if err := s.cmd.Start(); err != nil {
		return fail(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := s.Query("postgres", s.Password, "select 1"); err == nil {
			return s, nil
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			s.Stop()
			return nil, fmt.Errorf("PostgreSQL on %s:%d: %w\n%s", host, s.Port, err, s.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Server) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.Write(p)
}

// Logs is what the server printed.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// Stop shuts the server down (fast shutdown) and removes its files.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		_ = s.cmd.Wait()
	}
	os.RemoveAll(s.dir)
}

// Query runs one query as user with Debian's psql, the real client, and
// returns its output, unaligned, without headers.
func (s *Server) Query(user, password, query string) (string, error) {
	cmd := exec.Command("psql", "-h", s.Host, "-p", strconv.Itoa(s.Port), "-U", user, "-d", "postgres", "-tAc", query)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PGPASSWORD=" + password, "PGCONNECT_TIMEOUT=5"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql as %s: %w: %s", user, err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}
