package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/secctx/secctx/pkg/agentapi"
)

// runExec is the exec wrapper: secctx-agent exec [--status=FILE]
// --from-file=NAME=PATH ... -- command args... It sets each NAME to the
// contents of its PATH, then replaces itself with the command
// (syscall.Exec): the task keeps the PID, gets every signal and its exit
// code is the container's. Nothing else in argv or the environment
// changes. With --status, the sidecar fetched the secrets (docs/performance.md):
// when it could not, the wrapper fails the container with its reason, as
// the fetch init container would have failed the pod.
func runExec(args []string, stderr io.Writer) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "secctx-agent exec: "+format+"\n", a...)
		return 127 // what a shell says when it cannot run a command
	}
	statusFile, set, argv, err := parseExecArgs(args)
	if err != nil {
		return fail("%v", err)
	}
	if statusFile != "" {
		// The sidecar's hook held this container until the status was
		// ready; a sidecar the kubelet started again since then begins
		// anew, and is waited for.
		why, err := FetchFailure(statusFile)
		for deadline := time.Now().Add(statusWait); err != nil && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			why, err = FetchFailure(statusFile)
		}
		if err != nil {
			return fail("the sidecar's status: %v", err)
		}
		if why != "" {
			msg := "secctx-agent exec: the secrets could not be fetched, so the task does not start: " + why
			fmt.Fprintln(stderr, msg)
			writeTerminationMessage(msg)
			return 1
		}
	}
	env := os.Environ()
	for _, s := range set {
		b, err := os.ReadFile(s[1])
		if err != nil {
			// The sidecar's startup probe holds the task until every token
			// is written, so this is a token that expired unrenewed.
			return fail("set %s: %v", s[0], err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if err := checkEnv(s[0], v); err != nil {
			return fail("set %s from %s: %v", s[0], s[1], err)
		}
		env = setEnv(env, s[0], v)
	}
	path, err := exec.LookPath(argv[0]) // as the runtime would, in the image's PATH
	if err != nil {
		return fail("%v", err)
	}
	err = syscall.Exec(path, argv, env)
	return fail("exec %s: %v", argv[0], err)
}

// statusWait is how long the wrapper waits for the sidecar's status to be
// ready; a var for the tests.
var statusWait = 5 * time.Minute

// checkEnv refuses what execve would: a NAME=value longer than the
// kernel's bound on one environment string fails it with E2BIG ("argument
// list too long", naming nothing), and a NUL byte would end the value
// there without a word.
func checkEnv(name, value string) error {
	if n := len(name) + 1 + len(value) + 1; n > agentapi.MaxEnvBytes {
		return fmt.Errorf("%d bytes as NAME=value, more than the %d the kernel allows one env var", n, agentapi.MaxEnvBytes)
	}
	if i := strings.IndexByte(value, 0); i >= 0 {
		return fmt.Errorf("a NUL byte at offset %d, which an env var cannot hold", i)
	}
	return nil
}

// parseExecArgs splits exec's arguments into the sidecar's status file
// (--status, first if given), the env vars to set from files (name, path)
// and the command line after "--".
func parseExecArgs(args []string) (status string, set [][2]string, argv []string, err error) {
	i := 0
	if len(args) > 0 {
		if f, ok := strings.CutPrefix(args[0], "--status="); ok {
			if f == "" {
				return "", nil, nil, errors.New("--status=: want the sidecar's status file")
			}
			status, i = f, 1
		}
	}
	for ; i < len(args) && args[i] != "--"; i++ {
		v, ok := strings.CutPrefix(args[i], "--from-file=")
		name, file, ok2 := strings.Cut(v, "=")
		if !ok || !ok2 || name == "" || file == "" {
			return "", nil, nil, fmt.Errorf("%q: want --from-file=NAME=PATH before -- and the command", args[i])
		}
		set = append(set, [2]string{name, file})
	}
	if i+1 >= len(args) {
		return "", nil, nil, errors.New("no command after --")
	}
	return status, set, args[i+1:], nil
}

// setEnv sets name in env, replacing every entry of that name.
func setEnv(env []string, name, value string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != name {
			out = append(out, kv)
		}
	}
	return append(out, name+"="+value)
}
