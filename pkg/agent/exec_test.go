package agent

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secctx/secctx/pkg/agentapi"
)

// TestMain lets the test binary be the agent (SECCTX_TEST_AGENT=1) or a
// task that reports what it got (SECCTX_TEST_TASK=1), so that the wrapper
// really execs a process.
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("SECCTX_TEST_AGENT") == "1":
		os.Unsetenv("SECCTX_TEST_AGENT")
		if d, err := time.ParseDuration(os.Getenv("SECCTX_TEST_STATUS_WAIT")); err == nil {
			statusWait = d
			os.Unsetenv("SECCTX_TEST_STATUS_WAIT")
		}
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	case os.Getenv("SECCTX_TEST_TASK") == "1":
		task()
	}
	os.Exit(m.Run())
}

// task prints its pid, argv and environment, says ready, and exits with
// 42 on SIGTERM.
func task() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	fmt.Printf("pid %d\n", os.Getpid())
	fmt.Printf("argv %q\n", os.Args[1:])
	env := os.Environ()
	slices.Sort(env)
	fmt.Printf("env %q\n", env)
	fmt.Println("ready")
	if os.Getenv("SECCTX_TEST_EXIT_NOW") == "1" {
		os.Exit(42)
	}
	<-sig
	os.Exit(42)
}

// TestExecWrapper: the wrapped task has the wrapper's PID, its own argv,
// the environment plus the token, receives SIGTERM, and its exit code is
// the wrapper's.
func TestExecWrapper(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "api")
	if err := os.WriteFile(tokenFile, []byte("eyJ-token-value\r\n"), 0o644); err != nil { // a line end is not the token's
		t.Fatal(err)
	}
	taskArgs := []string{"--input", "a b", "$(NOT_EXPANDED)", ""}
	cmd := exec.Command(self, append([]string{"exec", "--from-file=API_TOKEN=" + tokenFile, "--", self}, taskArgs...)...)
	base := []string{"PATH=" + os.Getenv("PATH"), "SECCTX_TEST_TASK=1", "KEEP=me", "API_TOKEN=stale"}
	cmd.Env = append(slices.Clone(base), "SECCTX_TEST_AGENT=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := map[string]string{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		lines[k] = v
		if k == "ready" {
			break
		}
	}
	if got := lines["pid"]; got != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("task pid %s, wrapper pid %d: the wrapper must exec, not start a child", got, cmd.Process.Pid)
	}
	if want := fmt.Sprintf("%q", taskArgs); lines["argv"] != want {
		t.Errorf("task argv %s, want %s", lines["argv"], want)
	}
	wantEnv := []string{"API_TOKEN=eyJ-token-value", "KEEP=me", "PATH=" + os.Getenv("PATH"), "SECCTX_TEST_TASK=1"}
	slices.Sort(wantEnv)
	if want := fmt.Sprintf("%q", wantEnv); lines["env"] != want {
		t.Errorf("task env %s\nwant %s", lines["env"], want)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the task did not end on SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 42 {
		t.Errorf("exit code %d (%v), want the task's 42", code, err)
	}
}

func TestExecWrapperRefuses(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", []string{"exec", "--"}, "no command after --"},
		{"bad flag", []string{"exec", "--env=X", "--", "true"}, `"--env=X": want --from-file=NAME=PATH`},
		{"missing file", []string{"exec", "--from-file=X=/nonexistent", "--", "true"}, "set X: open /nonexistent"},
		{"unknown command", []string{"exec", "--", "no-such-command-here"}, "executable file not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(self, tt.args...)
			cmd.Env = []string{"SECCTX_TEST_AGENT=1", "PATH=" + os.Getenv("PATH")}
			b, err := cmd.CombinedOutput()
			if cmd.ProcessState.ExitCode() != 127 || !strings.Contains(string(b), tt.want) {
				t.Errorf("exit %d (%v), output %q; want 127 and %q", cmd.ProcessState.ExitCode(), err, b, tt.want)
			}
		})
	}
}

// TestExecWrapperEnvBounds: a value that the kernel would refuse (over
// MAX_ARG_STRLEN as NAME=value, E2BIG) or cut (a NUL byte) fails the
// wrapper with a message naming the env var, its file and the limit; one
// that just fits is set.
func TestExecWrapperEnvBounds(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const name = "BIG_TOKEN"
	fits := strings.Repeat("v", agentapi.MaxEnvBytes-len(name)-2) // NAME=value and its NUL: 131072 bytes
	for _, tc := range []struct {
		name, value, want string
	}{
		{"fits", fits, ""},
		{"one byte over", fits + "v", fmt.Sprintf("set %s from %s: 131073 bytes as NAME=value, more than the 131072 the kernel allows one env var", name, filepath.Join(dir, "one byte over"))},
		{"2 MB", strings.Repeat("v", 2<<20), "more than the 131072 the kernel allows one env var"},
		{"NUL", "before\x00after", fmt.Sprintf("set %s from %s: a NUL byte at offset 6, which an env var cannot hold", name, filepath.Join(dir, "NUL"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, tc.name)
			if err := os.WriteFile(file, []byte(tc.value), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(self, "exec", "--from-file="+name+"="+file, "--", "true")
			cmd.Env = []string{"SECCTX_TEST_AGENT=1", "PATH=" + os.Getenv("PATH")}
			b, err := cmd.CombinedOutput()
			if tc.want == "" {
				if err != nil {
					t.Errorf("a value that fits: %v, %s", err, b)
				}
				return
			}
			if cmd.ProcessState.ExitCode() != 127 || !strings.Contains(string(b), tc.want) || strings.Contains(string(b), "argument list too long") {
				t.Errorf("exit %d, output %q; want 127 and %q", cmd.ProcessState.ExitCode(), b, tc.want)
			}
		})
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	if err := Install(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, BinaryName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", fi.Mode().Perm())
	}
	self, _ := os.Executable()
	want, _ := os.Stat(self)
	if fi.Size() != want.Size() {
		t.Errorf("size %d, want %d", fi.Size(), want.Size())
	}
}

// FuzzExecArgs: whatever the arguments, parsing does not panic, and what it
// accepts is exactly what the webhook writes: the pairs, "--", the command.
func FuzzExecArgs(f *testing.F) {
	f.Add("--from-file=A_TOKEN=/etc/flyte/tokens/a\x00--\x00python\x00-c\x00x")
	f.Add("--\x00/task")
	f.Add("--from-file==x\x00--\x00a")
	f.Add("--from-file=A=\x00--")
	f.Add("--status=/var/run/secctx/bin/.status\x00--\x00/task")
	f.Add("--status=\x00--\x00/task")
	f.Add("")
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		status, set, argv, err := parseExecArgs(args)
		if err != nil {
			return
		}
		var back []string
		if status != "" {
			back = append(back, "--status="+status)
		}
		for _, s := range set {
			if s[0] == "" || s[1] == "" || strings.Contains(s[0], "=") {
				t.Fatalf("accepted %q", s)
			}
			back = append(back, "--from-file="+s[0]+"="+s[1])
		}
		back = append(append(back, "--"), argv...)
		if !slices.Equal(back, args) || len(argv) == 0 {
			t.Fatalf("%q parsed as %q, %q", args, set, argv)
		}
	})
}

// TestExecWrapperFetchStatus: with --status the wrapper starts the task
// only when the sidecar fetched the secrets; when it could not, the
// container fails with the sidecar's reason, as the fetch init container
// would have failed the pod.
func TestExecWrapperFetchStatus(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		status   string
		wantCode int
		want     string
	}{
		"fetched":     {`{"ready":true}`, 42, ""},
		"not fetched": {`{"ready":true,"failed":"secrets[0] (aws arn:...:secret:db): AccessDeniedException"}`, 1, "secctx-agent exec: the secrets could not be fetched, so the task does not start: secrets[0] (aws arn:...:secret:db): AccessDeniedException"},
		"not ready":   {`{"ready":false}`, 127, "the secrets are not fetched yet"},
		"no status":   {"", 127, "the sidecar's status: open"},
		"with env":    {`{"ready":true}`, 42, ""},
	} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			if tc.status != "" {
				if err := os.WriteFile(file, []byte(tc.status), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"exec", "--status=" + file}
			if name == "with env" {
				env := filepath.Join(dir, "env")
				os.WriteFile(env, []byte("v"), 0o644)
				args = append(args, "--from-file=A="+env)
			}
			cmd := exec.Command(self, append(args, "--", self)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SECCTX_TEST_TASK=1", "SECCTX_TEST_AGENT=1", "SECCTX_TEST_EXIT_NOW=1", "SECCTX_TEST_STATUS_WAIT=300ms"}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			_ = cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != tc.wantCode {
				t.Errorf("exit code %d, want %d; stderr %q", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.want)
			}
		})
	}
}
